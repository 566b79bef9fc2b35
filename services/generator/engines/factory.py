"""The factory that picks a backend by configuration.

Apart from the protocol so that the backends, which import the protocol, are never imported by it.
"""

from __future__ import annotations

from services.generator.config import EngineKind, GeneratorSettings
from services.generator.engines.protocol import TextEngine
from services.generator.model_store import ResolvedModel


def build_engine(settings: GeneratorSettings, model: ResolvedModel, kind: EngineKind) -> TextEngine:
    """Construct (not start) a backend of `kind`. Imports are lazy: only the chosen one loads."""
    if kind == "vllm":
        from services.generator.engines.vllm import VLLMEngine

        return VLLMEngine(settings, model)
    if kind == "llamacpp":
        from services.generator.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(settings, model)
    if kind == "hf":
        from services.generator.engines.hf import HFEngine

        return HFEngine(settings, model)
    from services.generator.engines.openai import OpenAIEngine

    return OpenAIEngine(settings, model)
