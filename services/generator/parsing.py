"""Reading generated samples back: field markers, filters, task checks and duplicate removal.

Every completion either becomes a sample or a rejection with a reason; nothing is dropped silently.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.generator.prompts import STOP, PlannedPrompt, generation_order, titles
from shared.spec import TaskSpec

# Input fields whose text an extractive answer must be copied from.
CONTEXT_FIELDS = ("context", "passage", "paragraph", "document", "article")


def normalise(text: str) -> str:
    """Case, accents of width, punctuation and spacing do not make a sample new."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def text_hash(task: TaskSpec, fields: dict[str, str]) -> str:
    """Stable duplicate key of a sample: sha256 of its normalised input fields (not the label, so
    the same text with two labels is one duplicate, not two samples that contradict each other)."""
    key = "\x1f".join(f"{name}={normalise(fields.get(name, ''))}" for name in sorted(task.input_fields))
    return hashlib.sha256(key.encode()).hexdigest()


def extractive_context(task: TaskSpec) -> str | None:
    """The context field an extractive answer must occur in, when the task looks extractive."""
    if task.type != "seq2seq" or "answer" not in task.output_field.lower():
        return None
    return next((f for f in task.input_fields if f.lower() in CONTEXT_FIELDS), None)


@dataclass
class Limits:
    min_chars: int = 10
    max_chars: int = 400
    near_duplicate: float = 0.85


@dataclass
class Candidate:
    fields: dict[str, str]
    label: str | None
    prompt: PlannedPrompt
    hash: str = ""
    words: list[str] = field(default_factory=list)


@dataclass
class Rejection:
    reason: str
    text: str


def parse_completion(
    task: TaskSpec, prompt: PlannedPrompt, text: str, finish_reason: str | None, limits: Limits
) -> Candidate | Rejection:
    """Turn one completion of `prompt` into a candidate sample, or say why it is unusable."""
    raw = text
    for stop in STOP:  # engines without stop strings (or a model that ignores them)
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    names = titles(task)
    by_title = {title.casefold(): name for name, title in names.items()}
    marker = re.compile(r"^\s*([^:\n]{1,64}):(.*)$")

    values: dict[str, str] = {}
    lines = text.split("\n")
    values[prompt.first_field] = lines[0].strip()
    for line in lines[1:]:
        match = marker.match(line)
        name = by_title.get(match.group(1).strip().casefold()) if match else None
        if name is None:
            continue  # a field is one line: other lines are not part of the sample
        if name in prompt.given or name in values:
            break  # a field seen already: the model started another example without a header
        values[name] = match.group(2).strip()  # type: ignore[union-attr]

    order = generation_order(task)
    missing = [f for f in order if f not in prompt.given and not values.get(f)]
    if missing:
        return Rejection("missing_field", raw)
    if finish_reason == "length":
        return Rejection("truncated", raw)
    for name in task.input_fields:
        if len(values[name]) < limits.min_chars:
            return Rejection("too_short", raw)
        if len(values[name]) > limits.max_chars:
            return Rejection("too_long", raw)
    fields = {f: values.get(f, prompt.given.get(f, "")) for f in [*task.input_fields, task.output_field]}
    label: str | None = None
    if task.type == "classification":
        label = fields[task.output_field]
        if label not in (task.labels or []):
            return Rejection("label_not_in_label_set", raw)
    elif len(fields[task.output_field]) > limits.max_chars:
        return Rejection("too_long", raw)
    context = extractive_context(task)
    if context and normalise(fields[task.output_field]) not in normalise(fields[context]):
        return Rejection("answer_not_in_context", raw)
    return Candidate(
        fields=fields,
        label=label,
        prompt=prompt,
        hash=text_hash(task, fields),
        words=normalise(" ".join(fields[f] for f in task.input_fields)).split(),
    )


def _similar(a: list[str], b: list[str], threshold: float) -> bool:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return (
        matcher.real_quick_ratio() >= threshold
        and matcher.quick_ratio() >= threshold
        and matcher.ratio() >= threshold
    )


def deduplicate(
    task: TaskSpec,
    candidates: Sequence[Candidate],
    shown: Iterable[dict[str, str]],
    exclude_hashes: Iterable[str],
    threshold: float,
) -> tuple[list[Candidate], list[tuple[str, Candidate]]]:
    """Keep the first of each group of duplicates; compare against the examples shown in the
    prompts (exact and near), earlier samples (exact, by hash) and the request's own samples."""
    shown_list = [dict(s) for s in shown]
    shown_hashes = {text_hash(task, s) for s in shown_list}
    shown_words = [normalise(" ".join(s.get(f, "") for f in task.input_fields)).split() for s in shown_list]
    excluded = set(exclude_hashes)
    kept: list[Candidate] = []
    seen: set[str] = set()
    dropped: list[tuple[str, Candidate]] = []
    for candidate in candidates:
        if candidate.hash in shown_hashes:
            dropped.append(("duplicate_of_example", candidate))
        elif candidate.hash in excluded:
            dropped.append(("duplicate_of_earlier_sample", candidate))
        elif candidate.hash in seen:
            dropped.append(("duplicate_in_request", candidate))
        elif any(_similar(candidate.words, w, threshold) for w in shown_words):
            dropped.append(("near_duplicate_of_example", candidate))
        elif any(_similar(candidate.words, k.words, threshold) for k in kept):
            dropped.append(("near_duplicate_in_request", candidate))
        else:
            kept.append(candidate)
            seen.add(candidate.hash)
    return kept, dropped
