"""The factory that picks a backend by configuration.

Apart from the protocol so that the backends, which import the protocol, are never imported by it.
"""

from __future__ import annotations

from services.generator.config import GeneratorSettings
from services.generator.engines.protocol import TextEngine
from services.generator.model_store import ResolvedModel


def build_engine(settings: GeneratorSettings, model: ResolvedModel) -> TextEngine:
    """Construct (not start) the configured backend. Imports are lazy: only the chosen one loads."""
    if settings.generator_engine == "vllm":
        from services.generator.engines.vllm import VLLMEngine

        return VLLMEngine(settings, model)
    if settings.generator_engine == "hf":
        from services.generator.engines.hf import HFEngine

        return HFEngine(settings, model)
    from services.generator.engines.openai import OpenAIEngine

    return OpenAIEngine(settings, model)
