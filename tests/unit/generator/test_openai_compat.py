"""What a stream is charged, read from the usage vLLM puts on its events (continuous usage stats:
per choice, its prompt's tokens and that choice's completion tokens so far)."""

from __future__ import annotations

from typing import Any

from services.generator.openai_compat import StreamUsage


def chunk(index: int, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return {"choices": [{"index": index, "text": "x"}], "usage": usage}


def test_a_cut_stream_counts_each_prompt_once_and_every_choice() -> None:
    usage = StreamUsage(n=2)  # two prompts (7 and 4 tokens), two choices each: indexes 0-1, 2-3
    for event in [chunk(0, 7, 1), chunk(1, 7, 1), chunk(0, 7, 2), chunk(2, 4, 1), chunk(1, 7, 3)]:
        usage.add(event)
    assert (usage.prompt_tokens, usage.completion_tokens) == (7 + 4, 2 + 3 + 1)
    usage.add({"choices": [{"index": 3, "text": "x"}]})  # no usage on it: nothing learnt
    assert usage.completion_tokens == 6


def test_the_final_usage_event_gives_the_totals() -> None:
    usage = StreamUsage(n=1)
    usage.add(chunk(0, 5, 2))
    usage.add({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 3)
