"""How a generative student's answer is decoded: the one definition the trainer's evaluation and
the scorer's POST /v1/predict both call, so an answer the scorer returns is the answer the run's
metrics counted. The inputs it decodes from are encoded by shared/student_encoding.py.

Greedy (one beam, no sampling), at most `max_new_tokens` new tokens, special tokens dropped.
seq2seq: the decoder's whole output, stripped.
causal:  the batch holds LEFT-padded prompts (every row ends where its answer begins); the answer
         is what follows the prompt, up to the end token or the end of its first line
         (shared/student_format.py: an answer is one line).

It works on the objects the caller built (a transformers model and tokenizer, a batch of tensors on
the model's device) and imports neither torch nor transformers: shared/ stays free of them. The
caller decides the autocast and inference mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

ANSWER_END = "\n"  # a causal answer is one line: decoding stops at the first newline


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, list[list[int]]]:
    """input_ids and attention_mask of token rows padded on the LEFT to the longest: every row ends
    at the same position, where a causal student continues (decoding) or its answer ends (energy)."""
    width = max(len(r) for r in rows)
    return {
        "input_ids": [[pad_id] * (width - len(r)) + list(r) for r in rows],
        "attention_mask": [[0] * (width - len(r)) + [1] * len(r) for r in rows],
    }


def greedy_answers(
    kind: Literal["seq2seq", "causal"],
    model: Any,
    tokenizer: Any,
    batch: Mapping[str, Any],
    max_new_tokens: int,
) -> list[str]:
    """The answers of a seq2seq or causal student to a batch of encoded inputs, in batch order."""
    if kind == "seq2seq":
        out = model.generate(**batch, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
        return [text.strip() for text in tokenizer.batch_decode(out, skip_special_tokens=True)]
    out = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        num_beams=1,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        stop_strings=[ANSWER_END],
        tokenizer=tokenizer,
    )
    prompt_width = batch["input_ids"].shape[1]
    texts = tokenizer.batch_decode(out[:, prompt_width:], skip_special_tokens=True)
    return [text.split(ANSWER_END, 1)[0].strip() for text in texts]
