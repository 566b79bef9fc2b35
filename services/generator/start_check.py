"""A teacher's first generation, checked before it serves: a greedy answer to a two-line few-shot
probe must be text, not nothing, one word over and over or bytes. Each trap this catches was met
with a model that loaded without complaint: a tokenizer that lost its BOS (Gemma then copies its
last example or writes nothing), a wrong chat template, a GGUF whose weights do not fit the
architecture it names (docs/teachers.md). The BOS rule itself is checked where the model loads
(model_store.check_bos, llamacpp.check_bos_gguf); this is the end-to-end check behind it."""

from __future__ import annotations

import logging
import time

from services.generator.engines.protocol import Sampling, TextEngine
from services.generator.model_store import ModelError

logger = logging.getLogger(__name__)

# Raw continuation works for base and instruct models alike; an answer is expected on the last line.
PROBE = (
    "Question: What is the capital city of France?\nAnswer: Paris\n"
    "Question: How many legs does a spider have?\nAnswer: Eight\n"
    "Question: What colour is the sky on a clear day?\nAnswer:"
)
PROBE_SAMPLING = Sampling(n=1, temperature=0.0, max_tokens=16, seed=0, stop=("\nQuestion",))


def degenerate(text: str) -> str | None:
    """Why a probe's answer is not usable text, or None when it is."""
    stripped = text.strip()
    if not stripped:
        return "it wrote nothing"
    if sum(c.isprintable() or c.isspace() for c in stripped) < 0.8 * len(stripped):
        return "it wrote mostly unprintable characters"
    words = stripped.split()
    if len(words) >= 4 and len(set(words)) == 1:
        return f"it wrote one word over and over ({words[0]!r})"
    if len(stripped) >= 8 and len(set(stripped.replace(" ", ""))) <= 2:
        return "it wrote one character over and over"
    return None


async def check_generation(engine: TextEngine) -> None:
    """Raise ModelError (the engine is then not served) when the probe's answer is degenerate."""
    started = time.perf_counter()
    (result,) = await engine.generate([PROBE], [PROBE_SAMPLING])
    text = result.completions[0].text if result.completions else ""
    reason = degenerate(text)
    model = engine.info.model
    if reason is not None:
        raise ModelError(
            f"{model.model_id} ({model.name}) failed its start check: asked a few-shot question, {reason} "
            f"({text[:80]!r}). The model loads but does not generate text: check its tokenizer's BOS "
            "handling and prompt format (docs/teachers.md)"
        )
    logger.info(
        "start check of %r passed in %.1f s: %r", model.name, time.perf_counter() - started, text.strip()[:40]
    )
