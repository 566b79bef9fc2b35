"""What a user takes away from a run: the generated dataset as JSONL and the student as an archive
of its Hugging Face folder. Reads only; the caller's session is not committed here."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.orchestrator.service import require_visible
from shared.artifacts import ArtifactStore
from shared.auth import Principal
from shared.db.models import Checkpoint, Sample
from shared.errors import Conflict, NotFound


def dataset_lines(
    run_id: uuid.UUID, *, session: Session, principal: Principal, batch: int = 1000
) -> Iterator[str]:
    """One JSON object a line: the sample's fields, label and how the loop used it, with the
    teacher's label distribution (the soft labels students learn) and whether verification left
    it out of training."""
    require_visible(run_id, session=session, principal=principal)
    query = (
        select(Sample)
        .where(Sample.run_id == run_id)
        .order_by(Sample.iteration, Sample.kind, Sample.position)
        .execution_options(yield_per=batch)
    )
    for sample in session.scalars(query):
        yield (
            json.dumps(
                {
                    **sample.fields,
                    "label": sample.label,
                    "gold_kind": sample.kind,
                    "gold_iteration": sample.iteration,
                    "gold_holdout": sample.holdout,
                    "gold_energy": sample.energy,
                    "gold_selected": sample.selected,
                    "gold_excluded": sample.excluded,
                    "gold_teacher_probs": sample.teacher_probs,
                    "gold_id": str(sample.id),
                },
                ensure_ascii=False,
            )
            + "\n"
        )


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
