"""A run as the driver leaves it after one iteration, written straight to PostgreSQL: for tests of
what reads a finished run (the Python client, its example script) without generating or training."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import Checkpoint, Iteration, Metric, Run, Sample
from shared.names import RunStatus

GENERATED = [  # (kind, text, requested label, kept label, teacher's distribution, energy, fed back)
    ("train", "a warm, funny film", "positive", "positive", {"positive": 0.9, "negative": 0.1}, 0.2, False),
    ("train", "a film I will forget", "positive", "negative", {"positive": 0.3, "negative": 0.7}, 0.8, True),
    ("ood", "the plot never lands", "negative", "negative", {"positive": 0.2, "negative": 0.8}, 1.4, True),
]


def finish(session_factory: sessionmaker[Session], run_id: uuid.UUID, artifacts: Path) -> uuid.UUID:
    """The run as the driver leaves it after one iteration: generated rows, a metric, a final student
    whose folder is in the artifact store."""
    checkpoint = uuid.uuid4()
    folder = artifacts / "checkpoints" / str(checkpoint)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("# GOLD student\n")
    with session_factory.begin() as session:
        run = session.get(Run, run_id)
        run.status, run.iteration, run.progress = RunStatus.SUCCEEDED, 1, 1.0
        session.add(Iteration(run_id=run_id, index=1, status="succeeded"))
        session.add(Metric(run_id=run_id, iteration=1, name="eval_accuracy", value=0.75))
        session.add(
            Checkpoint(
                id=checkpoint,
                run_id=run_id,
                iteration=1,
                role="final",
                path=f"checkpoints/{checkpoint}",
                student_model="default",
                student_kind="classifier",
            )
        )
        for position, (kind, text, requested, kept, probs, energy, fed_back) in enumerate(GENERATED):
            session.add(
                Sample(
                    run_id=run_id,
                    iteration=1,
                    kind=kind,
                    position=position,
                    fields={"text": text, "label": kept},
                    label=kept,
                    requested_label=requested,
                    teacher_probs=probs,
                    energy=energy,
                    selected=fed_back,
                    prompt_examples={"seeds": [0, 1], "samples": [], "feedback": [], "attribute": None},
                )
            )
    return checkpoint
