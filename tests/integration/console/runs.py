"""Runs as the driver leaves them, written straight into the database: a finished GOLD or vanilla
run with iterations, metrics, samples (train, OOD, fed back, with the teacher's check), rejections
and timings, and a run that failed before its first iteration."""

from __future__ import annotations

import random
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.orchestrator import service
from services.orchestrator.config import OrchestratorSettings
from shared.auth import Principal
from shared.db.base import utcnow
from shared.db.models import Iteration, Metric, Rejection, Run, Sample
from shared.names import IterationStatus, RunStatus
from shared.spec import RunSpec
from tests.support import sentiment_task

WORDS = [
    "film",
    "plot",
    "actor",
    "scene",
    "score",
    "ending",
    "pacing",
    "dialogue",
    "camera",
    "story",
    "music",
    "cast",
]


def spec(name: str, *, feedback: bool = True, iterations: int = 2) -> dict[str, Any]:
    return {
        "name": name,
        "task": sentiment_task(),
        "loop": {
            "iterations": iterations,
            "samples_per_iteration": 8,
            "ood_samples_per_iteration": 4 if feedback else 0,
            "feedback": feedback,
        },
    }


def _create(
    sessions: sessionmaker[Session], settings: OrchestratorSettings, owner: str, body: dict
) -> uuid.UUID:
    with sessions.begin() as session:
        run = service.create_run(
            RunSpec.model_validate(body),
            session=session,
            settings=settings,
            principal=Principal(owner, False),
        )
        return run.id


def finished_run(
    sessions: sessionmaker[Session],
    settings: OrchestratorSettings,
    *,
    owner: str,
    name: str,
    feedback: bool = True,
    train_per_iteration: int = 12,
    seed: int = 0,
) -> uuid.UUID:
    """A succeeded run with 2 loop iterations and a final student."""
    rng = random.Random(seed)
    run_id = _create(sessions, settings, owner, spec(name, feedback=feedback))
    labels = ["negative", "positive"]
    samples: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    fed_back: list[str] = []
    with sessions.begin() as session:
        for index in (1, 2, 3):
            session.add(
                Iteration(
                    run_id=run_id,
                    index=index,
                    status=IterationStatus.DONE,
                    timings={"generate_train": 20.0 + index, "train": 40.0, "score": 5.0},
                    started_at=utcnow(),
                    finished_at=utcnow(),
                )
            )
            accuracy = 0.6 + 0.08 * index + (0.03 if feedback else 0) + rng.uniform(-0.02, 0.02)
            values = {
                "eval_accuracy": accuracy,
                "holdout_accuracy": accuracy + 0.1,
                "train_loss": 0.7 / index,
            }
            if index <= 2:
                values |= {"distinct_2": 0.5 + 0.05 * index, "embedding_spread": 0.3 + 0.02 * index}
                if feedback:
                    values |= {"ood_novelty": 0.4, "train_novelty": 0.2, "ood_energy_gap": 0.5}
            metrics += [
                {"run_id": run_id, "iteration": index, "name": k, "value": v} for k, v in values.items()
            ]
            if index == 3:
                continue
            kinds = [("train", train_per_iteration)] + ([("ood", 6)] if feedback else [])
            for kind, count in kinds:
                for position in range(count):
                    requested = labels[position % 2]
                    agrees = position % 5 != 0
                    teacher = requested if agrees else labels[(position + 1) % 2]
                    sample_id = uuid.uuid4()
                    selected = kind == "ood" and position in (2, 3)
                    if selected:
                        fed_back.append(str(sample_id))
                    text = " ".join(rng.choice(WORDS) for _ in range(8))
                    samples.append(
                        {
                            "id": sample_id,
                            "run_id": run_id,
                            "iteration": index,
                            "kind": kind,
                            "position": position,
                            "fields": {"text": f"{kind} {index}.{position}: {text}", "label": teacher},
                            "label": teacher,
                            "requested_label": requested,
                            "teacher_probs": {teacher: 0.8, [x for x in labels if x != teacher][0]: 0.2},
                            "prompt_examples": {
                                "seeds": [0, 1],
                                "feedback": fed_back[:2] if index == 2 and kind == "train" else [],
                            },
                            "holdout": position == 0,
                            "excluded": False,
                            "energy": rng.gauss(-6.0 if kind == "train" else -4.0, 0.8),
                            "selected": selected,
                        }
                    )
        session.execute(Sample.__table__.insert(), samples)
        session.execute(
            Metric.__table__.insert(),
            [*metrics, {"run_id": run_id, "iteration": 0, "name": "teacher_eval_accuracy", "value": 0.82}],
        )
        session.add(
            Rejection(
                run_id=run_id, iteration=1, kind="train", reason="unparsable", text="Sure! Here is a review"
            )
        )
        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.stage, run.progress, run.iteration = RunStatus.SUCCEEDED, "done", 1.0, 3
        run.started_at, run.finished_at = run.created_at, utcnow()
    return run_id


def failed_run(
    sessions: sessionmaker[Session], settings: OrchestratorSettings, *, owner: str, name: str
) -> uuid.UUID:
    """A gold run that failed in its first stage: no iteration, no sample but the seeds."""
    run_id = _create(sessions, settings, owner, spec(name))
    with sessions.begin() as session:
        run = session.get(Run, run_id)
        assert run is not None
        run.status, run.stage, run.finished_at = RunStatus.FAILED, "teacher_eval", utcnow()
        run.error = (
            "generator: http://127.0.0.1:8001 unreachable: connection refused "
            "(gave up after 600 s of waiting; GOLD_DEPENDENCY_PATIENCE_S)"
        )
    return run_id


def many_samples(sessions: sessionmaker[Session], run_id: uuid.UUID, count: int) -> None:
    """`count` more training samples in iteration 1 of the run (a large run's table)."""
    rows = [
        {
            "id": uuid.uuid4(),
            "run_id": run_id,
            "iteration": 1,
            "kind": "train",
            "position": 1000 + i,
            "fields": {
                "text": f"sample {i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(12)),
                "label": "positive",
            },
            "label": "positive" if i % 2 else "negative",
            "requested_label": "positive",
            "teacher_probs": {"positive": 0.7, "negative": 0.3}
            if i % 3
            else {"positive": 0.2, "negative": 0.8},
            "prompt_examples": {"seeds": [0, 1]},
            "holdout": False,
            "excluded": False,
            "energy": -5.0 + (i % 100) / 50,
            "selected": False,
            "embedding": [0.01 * (i % 7)] * 384,
        }
        for i in range(count)
    ]
    with sessions.begin() as session:
        session.execute(Sample.__table__.insert(), rows)
