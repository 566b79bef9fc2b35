"""Contract of the generator's `POST /v1/generate`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from shared.schemas.base import InputModel, OutputModel
from shared.spec import StructuredChoice, TaskSpec

Example = dict[str, Annotated[str, StringConstraints(max_length=4000)]]


# The teacher a request is for: a name the generator's GET /v1/models lists; None = its default.
TeacherName = Annotated[str, StringConstraints(min_length=1, max_length=200)] | None

# How a teacher's generation prompts are written: "raw" few-shot continuation (a base model) or
# the same text in the model's chat template (an instruct model); services/generator/prompts.py.
PromptFormat = Literal["raw", "chat"]

# What a generation request is for: training samples, or out-of-distribution probes (OOD prompts).
GenerateMode = Literal["train", "ood"]


# The header the loop's generator client sends ("batch"): a generator serves requests without it
# (interactive ones, another team's) first when both wait for its engine.
PRIORITY_HEADER = "X-Gold-Priority"


class SamplingSettings(InputModel):
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=50, ge=-1, le=1000)
    max_tokens: int = Field(default=96, ge=1, le=1024)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


class GenerateRequest(InputModel):
    task: TaskSpec
    model: TeacherName = None
    # In-context examples (default: the task's seed examples) and feedback examples (OOD picks).
    examples: list[Example] | None = Field(default=None, max_length=32)
    feedback: list[Example] = Field(default_factory=list, max_length=32)
    # Feedback examples shown per prompt, drawn anew for each prompt (all of them in every prompt
    # get copied).
    feedback_per_prompt: int = Field(default=2, ge=1, le=32)
    # Classification: a prompt shows only feedback whose label is the one it asks for.
    feedback_same_label: bool = False
    n: int = Field(default=16, ge=1, le=512)
    mode: GenerateMode = "train"
    # Labels to request, one per sample (classification); default: balanced over the label set.
    labels: list[str] | None = Field(default=None, max_length=512)
    sampling: SamplingSettings = SamplingSettings()
    # Hashes (GeneratedSample.text_hash) of earlier samples that must not be produced again.
    exclude_hashes: list[Annotated[str, StringConstraints(max_length=64)]] = Field(
        default_factory=list, max_length=100000
    )
    structured: StructuredChoice = False
    # OOD mode: attributes (topics, settings, kinds of writer; see /v1/attributes), one drawn per
    # prompt and written into the new example's header, so each prompt steers somewhere else.
    attributes: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=256
    )


class PromptExamples(OutputModel):
    examples: list[int] = []  # indices into the request's examples
    feedback: list[int] = []  # indices into the request's feedback
    attribute: str | None = None  # the attribute the prompt was steered with (OOD mode)


class GeneratedSample(OutputModel):
    fields: dict[str, str]  # input fields + output field
    label: str | None = None
    prompt: PromptExamples
    text_hash: str


class Rejected(OutputModel):
    reason: str
    text: str


class ParseStats(OutputModel):
    requested: int
    completions: int
    accepted: int
    rejected: dict[str, int] = {}


class Usage(OutputModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class GenerationSettingsUsed(OutputModel):
    model: str
    revision: str | None = None
    engine: str
    engine_version: str | None = None
    # How the generation prompts were written: "raw" continuation or the model's "chat" template.
    prompt_format: PromptFormat = "raw"
    seed: int | None = None
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    structured: bool = False  # whether completions were decoded under the field format


class GenerateResponse(OutputModel):
    samples: list[GeneratedSample]
    stats: ParseStats
    rejections: list[Rejected] = []
    usage: Usage
    settings: GenerationSettingsUsed


class ClassifyRequest(InputModel):
    """The teacher answers classification inputs few-shot (label with the highest likelihood)."""

    task: TaskSpec
    model: TeacherName = None
    # In-context examples (default: the task's seed examples).
    examples: list[Example] | None = Field(default=None, max_length=32)
    inputs: list[Example] = Field(min_length=1, max_length=4096)
    # Divide by the label distribution the prompt gives a content-free input (contextual
    # calibration): on SST-2 it lifts gemma-3-270m from 0.62 to 0.83 accuracy.
    calibrate: bool = True


class ClassPrediction(OutputModel):
    label: str
    probabilities: dict[str, float]  # normalised over the task's labels


class ClassifyResponse(OutputModel):
    predictions: list[ClassPrediction]
    model: str
    engine: str
    parameters: int | None = None  # the teacher's parameter count, for cost comparisons


class AnswerRequest(InputModel):
    """The teacher answers inputs few-shot (greedy decoding of the output field): its own answers
    on real data, the baseline a distilled seq2seq student is measured against."""

    task: TaskSpec
    model: TeacherName = None
    # In-context examples (default: the task's seed examples).
    examples: list[Example] | None = Field(default=None, max_length=32)
    inputs: list[Example] = Field(min_length=1, max_length=4096)
    max_tokens: int = Field(default=64, ge=1, le=1024)


class AnswerResponse(OutputModel):
    answers: list[str]  # one per input, in input order
    finish_reasons: list[str | None]  # "length": the answer was cut at max_tokens
    usage: Usage
    model: str
    engine: str
    parameters: int | None = None  # the teacher's parameter count, for cost comparisons


class AttributesRequest(InputModel):
    """The teacher lists what data for the task could be about (subjects, settings, kinds of
    writer): varied directions for out-of-distribution prompts, listed once per run."""

    task: TaskSpec
    model: TeacherName = None
    n: int = Field(default=24, ge=1, le=256)
    sampling: SamplingSettings = SamplingSettings(temperature=0.9, max_tokens=96)


class AttributesResponse(OutputModel):
    attributes: list[str]  # distinct, in the order the teacher listed them (at most n)
    usage: Usage
    settings: GenerationSettingsUsed


class ServedModel(OutputModel):
    id: str


class ServedModels(OutputModel):
    """The generator's GET /v1/models (OpenAI's model list), as far as other services read it."""

    data: list[ServedModel]
