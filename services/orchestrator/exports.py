"""What a user takes away from a run: the generated dataset (JSONL or parquet, one row schema; its
card is services/orchestrator/dataset_card.py) and the student as an archive of its Hugging Face
folder. Reads only; the caller's session is not committed here."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.orchestrator.feedback import top_label
from services.orchestrator.service import get_run, require_visible
from shared.artifacts import ArtifactStore
from shared.auth import Principal
from shared.db.models import Checkpoint, Sample
from shared.errors import Conflict, NotFound
from shared.spec import TaskSpec, stored_spec

# The provenance columns: the in-context examples of the prompt that generated the row (none for a
# seed): seed positions, earlier samples' and feedback samples' ids, and the attribute asked for.
PROVENANCE = {
    "seeds": "gold_prompt_seeds",
    "samples": "gold_prompt_samples",
    "feedback": "gold_prompt_feedback",
}


def dataset_row(sample: Sample) -> dict[str, Any]:
    """One row of the dataset, the same in JSONL and parquet: the sample's fields (inputs and output),
    `label` (the label kept, after verification), and how the loop made and used it (the columns are
    listed in docs/python-client.md)."""
    probs = sample.teacher_probs
    teacher_label = top_label(probs) if probs else None
    requested = sample.requested_label
    agrees = None if teacher_label is None or requested is None else teacher_label == requested
    provenance = sample.prompt_examples or {}
    return {
        **sample.fields,
        "label": sample.label,
        "gold_kind": sample.kind,
        "gold_iteration": sample.iteration,
        "gold_holdout": sample.holdout,
        "gold_requested_label": requested,
        "gold_teacher_label": teacher_label,
        "gold_teacher_agrees": agrees,
        "gold_teacher_probs": probs,
        "gold_energy": sample.energy,
        "gold_selected": sample.selected,
        "gold_excluded": sample.excluded,
        **{column: list(provenance.get(key, [])) for key, column in PROVENANCE.items()},
        "gold_prompt_attribute": provenance.get("attribute"),
        "gold_id": str(sample.id),
    }


def dataset_rows(
    run_id: uuid.UUID, *, session: Session, principal: Principal, batch: int = 1000
) -> Iterator[dict[str, Any]]:
    """The run's samples as dataset rows, in (iteration, kind, position) order."""
    require_visible(run_id, session=session, principal=principal)
    query = (
        select(Sample)
        .where(Sample.run_id == run_id)
        .order_by(Sample.iteration, Sample.kind, Sample.position)
        .execution_options(yield_per=batch)
    )
    for sample in session.scalars(query):
        yield dataset_row(sample)


def dataset_lines(
    run_id: uuid.UUID, *, session: Session, principal: Principal, batch: int = 1000
) -> Iterator[str]:
    """One JSON object a line: the rows of `dataset_rows`, with the teacher's label distribution
    (the soft labels students learn) and whether verification left the row out of training."""
    for row in dataset_rows(run_id, session=session, principal=principal, batch=batch):
        yield json.dumps(row, ensure_ascii=False) + "\n"


def parquet_schema(task: TaskSpec) -> pa.Schema:
    """The rows' columns with fixed types, so that every run of a task has one schema whatever its
    data (an all-null energy column is still a float). The teacher's distribution is a struct with a
    field per label (seq2seq runs have none: null)."""
    text_fields = [*task.input_fields, *([task.output_field] if task.output_field != "label" else [])]
    probs = pa.struct([(label, pa.float64()) for label in task.labels]) if task.labels else pa.null()
    return pa.schema(
        [
            *[(name, pa.string()) for name in text_fields],
            ("label", pa.string()),
            ("gold_kind", pa.string()),
            ("gold_iteration", pa.int32()),
            ("gold_holdout", pa.bool_()),
            ("gold_requested_label", pa.string()),
            ("gold_teacher_label", pa.string()),
            ("gold_teacher_agrees", pa.bool_()),
            ("gold_teacher_probs", probs),
            ("gold_energy", pa.float64()),
            ("gold_selected", pa.bool_()),
            ("gold_excluded", pa.bool_()),
            ("gold_prompt_seeds", pa.list_(pa.int32())),
            ("gold_prompt_samples", pa.list_(pa.string())),
            ("gold_prompt_feedback", pa.list_(pa.string())),
            ("gold_prompt_attribute", pa.string()),
            ("gold_id", pa.string()),
        ]
    )


def dataset_parquet(run_id: uuid.UUID, *, session: Session, principal: Principal) -> bytes:
    """The rows as one parquet file (`datasets.load_dataset("parquet", data_files=...)` reads it)."""
    run = get_run(run_id, session=session, principal=principal)
    schema = parquet_schema(stored_spec(run.spec).task)
    rows = list(dataset_rows(run_id, session=session, principal=principal))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    return buffer.getvalue()


def best_checkpoint(run_id: uuid.UUID, *, session: Session, principal: Principal) -> Checkpoint:
    """The final student when there is one, else the last loop checkpoint."""
    require_visible(run_id, session=session, principal=principal)
    checkpoints = list(
        session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id, Checkpoint.role != "reference"))
    )
    if not checkpoints:
        raise Conflict(f"run {run_id} has no trained student yet")
    return max(checkpoints, key=lambda c: (c.role == "final", c.iteration))


def model_archive(
    run_id: uuid.UUID, *, session: Session, principal: Principal, artifacts: ArtifactStore
) -> tuple[str, bytes]:
    checkpoint = best_checkpoint(run_id, session=session, principal=principal)
    name = f"gold-student-{run_id}"
    try:
        return f"{name}.tar.gz", artifacts.archive(checkpoint.path, name)
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise NotFound(f"checkpoint {checkpoint.id} files are missing from the artifact store") from exc
