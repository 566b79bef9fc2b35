"""How a student's input text (shared/student_format.py) becomes token ids: the one encoding the
trainer (training, evaluation) and the scorer (energies, POST /v1/predict) both call, so the scorer
computes on the very tokens the student was trained on.

classifier: segment A, or the pair (A, B), with the tokenizer's special tokens and token types;
            a pair too long loses tokens from its longer segment first (the tokenizer's
            "longest_first").
seq2seq:    the source with the tokenizer's special tokens, cut at max_length from the right.
causal:     the prompt cut at max_length from the LEFT: a long prompt loses its beginning, never
            the question and the answer cue at its end. Behind an optional prefix (the seed examples
            of the few-shot baseline) that is never cut and adds the special tokens itself.
Rows come back unpadded: the caller pads for its use (right for the trainer's batches and the
classifier and seq2seq scorers, left for causal decoding and energies: shared/student_decoding.py).

Like the decoding, it works on the caller's tokenizer and imports no transformers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.student_format import StudentFormat, StudentKind

# What a tokenizer returns that a model takes as input (BERT-style encoders have token types).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

EncodedRow = dict[str, list[int]]


def encode_inputs(
    kind: StudentKind,
    tokenizer: Any,
    fmt: StudentFormat,
    rows: Sequence[Mapping[str, str]],
    max_length: int,
    prefix: str = "",
) -> list[EncodedRow]:
    """Each row's input fields as a student of `kind` reads them, at most max_length tokens (the
    prefix, causal only, comes on top)."""
    if kind == "causal":
        return _causal_inputs(tokenizer, [fmt.causal_prompt(r) for r in rows], max_length, prefix)
    if prefix:
        raise ValueError(f"a {kind} student takes no prefix")
    if kind == "classifier":
        pairs = [fmt.classifier_text(r) for r in rows]
        second = [b for _, b in pairs] if pairs and pairs[0][1] is not None else None
        enc = tokenizer([a for a, _ in pairs], second, truncation=True, max_length=max_length)
    else:
        enc = tokenizer([fmt.seq2seq_source(r) for r in rows], truncation=True, max_length=max_length)
    keys = [k for k in MODEL_INPUTS if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(rows))]


def _causal_inputs(tokenizer: Any, prompts: list[str], max_length: int, prefix: str) -> list[EncodedRow]:
    # The tokenizer cuts on its truncation_side (no call argument sets it); set here, where the rule
    # lives, rather than trusted to whoever loaded the tokenizer.
    tokenizer.truncation_side = "left"
    ids = tokenizer(prompts, truncation=True, max_length=max_length, add_special_tokens=not prefix)[
        "input_ids"
    ]
    # Tokenised apart: the tokens at the prefix's end are those of a solved example's end, whatever
    # the input.
    head = tokenizer(prefix)["input_ids"] if prefix else []
    return [{"input_ids": head + row, "attention_mask": [1] * (len(head) + len(row))} for row in ids]


def seq2seq_target_ids(tokenizer: Any, targets: Sequence[str], max_tokens: int) -> list[list[int]]:
    """A seq2seq student's target texts as tokens (with the end token), at most max_tokens each:
    what the trainer's loss covers and the scorer's energy averages over."""
    ids: list[list[int]] = tokenizer(text_target=list(targets), truncation=True, max_length=max_tokens)[
        "input_ids"
    ]
    return ids


def causal_answer_ids(tokenizer: Any, answers: Sequence[str], max_tokens: int) -> list[list[int]]:
    """A causal student's answers as tokens: each answer's tokens and the end token, at most
    `max_tokens` in all. What the trainer's loss covers and the scorer's energy sums over."""
    rows = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
    return [row[: max_tokens - 1] + [tokenizer.eos_token_id] for row in rows]
