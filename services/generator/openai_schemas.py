"""The OpenAI-compatible wire contract: the parameters of OpenAI's completions, chat completions,
models and vLLM's tokenize/detokenize that this generator honours.

Every optional parameter defaults to None (= not sent), so what reaches vLLM's own serving code is
exactly what the client set and vLLM's defaults apply, as on `vllm serve`. A parameter not listed
here is refused with OpenAI's error shape naming it (never silently ignored).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from shared.schemas.base import InputModel, OutputModel

Text = Annotated[str, StringConstraints(max_length=200_000)]
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
StopString = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# vLLM's default --max-logprobs
MAX_LOGPROBS = 20


class StreamOptions(InputModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # vLLM's extension: usage in every chunk


class TextFormat(InputModel):
    type: Literal["text"]


class JsonObjectFormat(InputModel):
    type: Literal["json_object"]


class JsonSchema(InputModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(max_length=64)
    description: str | None = Field(default=None, max_length=10_000)
    # "schema" would shadow BaseModel.schema
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JsonSchemaFormat(InputModel):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class SamplingFields(InputModel):
    """Parameters shared by completions and chat completions."""

    model: str = Field(max_length=200)
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=100000)  # vLLM's extension, via extra_body
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: StopString | list[StopString] | None = Field(default=None, max_length=8)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[Annotated[str, StringConstraints(max_length=12)], float] | None = Field(
        default=None, max_length=300
    )
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=200)

    def wire(self) -> dict[str, Any]:
        """The parameters the client set, in OpenAI's names."""
        return self.model_dump(exclude_none=True, by_alias=True)


class CompletionRequest(SamplingFields):
    # Text, several texts, token ids (lm-evaluation-harness sends these) or several lists of them.
    prompt: Text | list[Text] | list[TokenId] | list[list[TokenId]] = Field(min_length=1)
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)


class TextPart(InputModel):
    type: Literal["text"]
    text: Text


class ChatMessage(InputModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: str | None = Field(default=None, max_length=64)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)  # as vLLM joins them


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)


class TokenizeCompletionRequest(InputModel):
    model: str | None = Field(default=None, max_length=200)
    prompt: Text
    add_special_tokens: bool | None = None
    return_token_strs: bool | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class TokenizeChatRequest(InputModel):
    model: str | None = Field(default=None, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    add_generation_prompt: bool | None = None
    return_token_strs: bool | None = None

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


TokenizeRequest = TokenizeCompletionRequest | TokenizeChatRequest


class DetokenizeRequest(InputModel):
    model: str | None = Field(default=None, max_length=200)
    tokens: list[TokenId] = Field(max_length=200_000)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# -- responses (documentation of what the routes return; the serving code builds them) ----------


class CompletionUsage(OutputModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(OutputModel):
    text_offset: list[int]
    token_logprobs: list[float | None]
    tokens: list[str]
    top_logprobs: list[dict[str, float] | None]


class CompletionChoice(OutputModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(OutputModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class TopLogprob(OutputModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(OutputModel):
    content: list[TokenLogprob] | None


class ChatChoiceMessage(OutputModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(OutputModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str | None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(OutputModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class TokenizeResponse(OutputModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(OutputModel):
    prompt: str


class ModelCard(OutputModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gold"


class ModelList(OutputModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
