"""Load a run spec's real labelled rows: the `evaluation` data, the supervised reference's, and the
seed examples of `task.seed_source`.

The one place they are read, from either source the spec names (shared/spec.py DataSource): a
local JSONL file (`path`) or one split of a Hugging Face dataset (`dataset`, `split`), loaded with
the `datasets` library (its cache, HF_HOME, makes a second load local and works offline).

`input_map` maps each task input field to a column (a field not named maps to the column of the
same name); `label_field` is a column or a dotted path (e.g. `answers.text`), whose value may be a
list of acceptable answers, and a dataset's class-label column reads as its class names (SST-2's
label 1 is "positive"); `limit` keeps the first N usable rows (file or split order, so runs
compare). Rows missing an input or a reference are skipped and counted, never silently."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shared.spec import DataSource, EvaluationSpec, FileSource, HubSource, SeedSourceSpec, TaskSpec


class EvaluationDataError(Exception):
    """The rows a spec names cannot be read: the message names the spec field and the source
    (never a traceback of the library underneath)."""


@dataclass(frozen=True)
class EvalExample:
    fields: dict[str, str]  # the task's input fields
    references: tuple[str, ...]  # acceptable outputs (one label for classification)


@dataclass
class EvaluationData:
    source: DataSource
    examples: list[EvalExample]
    skipped: Counter[str] = field(default_factory=Counter)


def _lookup(row: dict[str, Any], dotted: str) -> Any:
    value: Any = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _as_references(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    out = [str(v).strip() for v in items if v is not None and not isinstance(v, dict | list)]
    return tuple(dict.fromkeys(v for v in out if v))  # de-duplicated, order kept


def _file_rows(source: FileSource, skipped: Counter[str]) -> Iterator[dict[str, Any]]:
    path = Path(source.path).expanduser()
    if not path.is_file():
        raise EvaluationDataError(f"{source}: the file does not exist (looked for {path.resolve()})")
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                skipped["bad_json"] += 1
                continue
            yield row if isinstance(row, dict) else {}


def _hub_rows(source: HubSource) -> Iterator[dict[str, Any]]:
    # Imported here: only a spec with a dataset pays for the import (pyarrow, pandas).
    import datasets

    datasets.disable_progress_bars()  # a bar per load floods a service's log
    try:
        data = datasets.load_dataset(source.dataset, source.config, split=source.split)
    except Exception as exc:  # noqa: BLE001 - any failure of the hub or the cache, named below
        # The library's errors are long and nested (offline mode, a missing repo, a config or split
        # it does not have): the user gets its last line and the source it was about.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise EvaluationDataError(
            f"{source} could not be loaded ({type(exc).__name__}: {reason}). It needs the Hugging "
            "Face hub (HF_HUB_OFFLINE unset or 0) or an earlier load in the cache (HF_HOME)"
        ) from exc
    if not isinstance(data, datasets.Dataset):  # a split always gives one Dataset
        raise EvaluationDataError(f"{source}: expected one split, got {type(data).__name__}")
    # Class-label columns (ints) read as their class names, so label_field matches task.labels.
    class_names = {
        name: feature.names
        for name, feature in data.features.items()
        if isinstance(feature, datasets.ClassLabel)
    }
    for row in data:
        assert isinstance(row, dict)
        for name, names in class_names.items():
            value = row.get(name)
            if isinstance(value, int) and 0 <= value < len(names):
                row[name] = names[value]
        yield row


class ColumnMap(Protocol):
    """How a spec's rows map to the task's fields: EvaluationSpec and SeedSourceSpec."""

    input_map: dict[str, str]
    label_field: str


def usable_examples(
    source: DataSource, columns: ColumnMap, task: TaskSpec, skipped: Counter[str]
) -> Iterator[EvalExample]:
    """The usable rows of `source` in order, read lazily with the columns `columns` maps; the others
    counted in `skipped` by reason. Raises EvaluationDataError when the source cannot be read."""
    fields_of = {name: columns.input_map.get(name, name) for name in task.input_fields}
    labels = set(task.labels or [])
    rows = _file_rows(source, skipped) if isinstance(source, FileSource) else _hub_rows(source)
    for row in rows:
        fields = {name: _lookup(row, column) for name, column in fields_of.items()}
        if any(not isinstance(v, str) or not v.strip() for v in fields.values()):
            skipped["missing_input"] += 1
            continue
        references = _as_references(_lookup(row, columns.label_field))
        if not references:
            skipped["missing_reference"] += 1
            continue
        if labels and references[0] not in labels:
            skipped["label_outside_label_set"] += 1
            continue
        yield EvalExample(fields=fields, references=references)


def load_rows(source: DataSource, columns: ColumnMap, task: TaskSpec, limit: int | None) -> EvaluationData:
    """The first `limit` usable rows of `source`. Raises EvaluationDataError when it cannot be read."""
    data = EvaluationData(source=source, examples=[])
    examples = usable_examples(source, columns, task, data.skipped)
    # Checked before the next row is read, so rows past the limit are not counted as skipped.
    while limit is None or len(data.examples) < limit:
        example = next(examples, None)
        if example is None:
            break
        data.examples.append(example)
    return data


def load_seeds(seeds: SeedSourceSpec, task: TaskSpec) -> list[dict[str, str]]:
    """`task.seed_source`'s rows as seed examples (every input field and the output field): the first
    `limit` usable rows, for classification as even a share of each label as the rows allow (a split
    sorted by label must not give seeds of one label). Raises EvaluationDataError naming the field
    when the source cannot be read or gives fewer than two."""
    source, skipped = seeds.source, Counter[str]()
    per_label = -(-seeds.limit // len(task.labels)) if task.labels else seeds.limit
    taken: dict[str, list[EvalExample]] = {}
    chosen: list[EvalExample] = []
    for example in usable_examples(source, seeds, task, skipped):
        group = taken.setdefault(example.references[0] if task.labels else "", [])
        if len(group) < per_label:
            group.append(example)
            chosen.append(example)
        if len(chosen) >= seeds.limit:
            break
    if len(chosen) < 2:
        found = f"; skipped: {dict(skipped)}" if skipped else ""
        raise EvaluationDataError(f"{source} gave {len(chosen)} usable seed example(s), 2 are needed{found}")
    return [{**e.fields, task.output_field: e.references[0]} for e in chosen]


def load_evaluation(spec: EvaluationSpec, task: TaskSpec) -> EvaluationData:
    """The evaluation rows (`path` or `dataset`), `limit` of them at most."""
    return load_rows(spec.source, spec, task, spec.limit)


def load_reference(spec: EvaluationSpec, task: TaskSpec, limit: int) -> EvaluationData:
    """The supervised reference's real training rows (`reference_path` or `reference_split`)."""
    source = spec.reference_source
    if source is None:
        raise EvaluationDataError("evaluation: the spec names no reference_path or reference_split")
    return load_rows(source, spec, task, limit)
