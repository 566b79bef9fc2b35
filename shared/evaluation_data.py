"""Load a run spec's `evaluation` block: real labelled data in a JSONL file.

`input_map` maps each task input field to a dataset column (a field not named maps to the column of
the same name); `label_field` is a column or a dotted path (e.g. `answers.text`), whose value may be a
list of acceptable answers; `limit` keeps the first N usable rows (file order, so runs compare).
Rows missing an input or a reference are skipped and counted, never silently."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.spec import EvaluationSpec, TaskSpec


@dataclass(frozen=True)
class EvalExample:
    fields: dict[str, str]  # the task's input fields
    references: tuple[str, ...]  # acceptable outputs (one label for classification)


@dataclass
class EvaluationData:
    path: Path
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


def load_evaluation(spec: EvaluationSpec, task: TaskSpec) -> EvaluationData:
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"evaluation data not found: {path}")
    columns = {name: spec.input_map.get(name, name) for name in task.input_fields}
    labels = set(task.labels or [])
    data = EvaluationData(path=path, examples=[])
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if spec.limit is not None and len(data.examples) >= spec.limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                data.skipped["bad_json"] += 1
                continue
            fields = {name: _lookup(row, column) for name, column in columns.items()}
            if any(not isinstance(v, str) or not v.strip() for v in fields.values()):
                data.skipped["missing_input"] += 1
                continue
            references = _as_references(_lookup(row, spec.label_field))
            if not references:
                data.skipped["missing_reference"] += 1
                continue
            if labels and references[0] not in labels:
                data.skipped["label_outside_label_set"] += 1
                continue
            data.examples.append(EvalExample(fields=fields, references=references))
    return data
