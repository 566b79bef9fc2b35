"""Which engine serves a teacher when `generator_engine` is auto: chosen by hardware, by the rule
the measurements in docs/results/cpu-engines.json support (bench/cpu_engines.py).

- A CUDA GPU is visible: vLLM (continuous batching, paged attention, CUDA kernels).
- CPU only: llama.cpp on the model's GGUF, where llama-cpp-python is installed and the teacher
  ships as a GGUF (the default teacher does). Its quantized kernels run several times faster on a
  CPU than vLLM's CPU backend, which on an AVX2 host without AVX-512 fell back to plain torch
  matmuls (docs/platform.md, "Engines: which runs where", has the table).
- Otherwise vLLM, and the transformers engine where vLLM is not installed either.
"""

from __future__ import annotations

import importlib.util
import logging

from services.generator.config import OPENAI_UPSTREAM, EngineKind, GeneratorSettings
from services.generator.model_store import has_gguf
from shared.hardware import cpu_has_native_bf16, cpu_simd, cuda_available

logger = logging.getLogger(__name__)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def remote(settings: GeneratorSettings, name: str) -> bool:
    """The teacher is a remote OpenAI-compatible server (its own source, or the openai engine)."""
    source = settings.generator_models.get(name, "")
    return source.startswith(OPENAI_UPSTREAM) or settings.generator_engine == "openai"


def engine_for(settings: GeneratorSettings, name: str) -> EngineKind:
    """The engine of the allow-listed teacher `name` (the configured one, or auto's pick, logged)."""
    if remote(settings, name):
        return "openai"
    source = settings.generator_models.get(name, "")
    if settings.generator_engine != "auto":
        return settings.generator_engine
    kind, why = auto_engine(source)
    logger.info("generator_engine auto -> %s for %r: %s", kind, name, why)
    return kind


def auto_engine(source: str) -> tuple[EngineKind, str]:
    """auto's pick for a local model source, with the reason in words."""
    if cuda_available():
        return "vllm", "a CUDA GPU is visible"
    hardware = f"CPU only ({cpu_simd()}, native bf16: {cpu_has_native_bf16()})"
    if installed("llama_cpp") and has_gguf(source):
        return "llamacpp", f"{hardware} and the model ships as a GGUF"
    if installed("vllm"):
        missing = "llama-cpp-python is not installed" if has_gguf(source) else "the model has no GGUF"
        return "vllm", f"{hardware}, but {missing}"
    return "hf", f"{hardware}, and neither llama-cpp-python (with a GGUF) nor vLLM is installed"
