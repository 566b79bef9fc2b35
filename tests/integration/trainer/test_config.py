"""The spec-to-config mapping is one function: the `train` CLI and the trainer job build the same
TrainConfig from the same spec and data (the CLI had drifted and dropped fields)."""

from __future__ import annotations

import json
import uuid

import pytest

from services.trainer import train as train_module
from services.trainer.config import get_trainer_settings
from services.trainer.jobs import build_config
from shared.artifacts import ArtifactStore
from shared.checkpoints import CheckpointNotFound
from shared.db.models import Run, Sample
from shared.evaluation_data import EvaluationDataError
from shared.schemas.training import TrainJob, TrainResult
from shared.spec import RunSpec
from tests.support import SENTIMENT_TASK

TRAIN = [({"text": "a warm film"}, "positive"), ({"text": "a dull film"}, "negative")]
HOLDOUT = [({"text": "great fun"}, "positive")]


@pytest.fixture
def settings(monkeypatch, tmp_path):
    monkeypatch.setenv("GOLD_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    get_trainer_settings.cache_clear()
    yield get_trainer_settings()
    get_trainer_settings.cache_clear()


def _spec(tmp_path) -> dict:
    real = tmp_path / "real.jsonl"
    real.write_text(json.dumps({"text": "lovely", "label_text": "positive"}) + "\n")
    return {
        "name": "config",
        "task": SENTIMENT_TASK,
        # Every field away from its default, the four the CLI used to drop among them.
        "student": {
            "epochs": 2,
            "final_epochs": 5,
            "learning_rate": 1e-4,
            "final_learning_rate": 5e-5,
            "head_learning_rate": 3e-4,
            "batch_size": 4,
            "max_length": 32,
            "max_target_length": 24,
            "loss": "sce",
            "sce_alpha": 0.5,
            "sce_beta": 2.0,
            "seed": 7,
            "distill_weight": 0.3,
            "distill_temperature": 3.0,
        },
        "verification": {"policy": "keep"},
        "evaluation": {"path": str(real)},
    }


def _job_config(session_factory, spec: dict, settings, **job):
    run_id = uuid.uuid4()
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name=spec["name"], spec=spec, status="running"))
        for i, (fields, label) in enumerate(TRAIN + HOLDOUT):
            session.add(
                Sample(
                    run_id=run_id,
                    iteration=1,
                    kind="train",
                    position=i,
                    fields=fields,
                    label=label,
                    holdout=i >= len(TRAIN),
                )
            )
    with session_factory() as session:
        return build_config(
            session,
            TrainJob(run_id=str(run_id), iteration=1, **job),
            RunSpec.model_validate(spec),
            settings,
            ArtifactStore.from_settings(settings),
        )


def _cli_config(tmp_path, monkeypatch, spec: dict):
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("spec", "train", "holdout")}
    paths["spec"].write_text(json.dumps(spec))
    for name, rows in (("train", TRAIN), ("holdout", HOLDOUT)):
        paths[name].write_text("".join(json.dumps({"fields": f, "label": y}) + "\n" for f, y in rows))
    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        return TrainResult(checkpoint_id=cfg.checkpoint_id, metrics={}, seconds=0.0, examples_per_second=0.0)

    monkeypatch.setattr(train_module, "train", fake_train)
    train_module.main(
        [
            *("--spec", str(paths["spec"]), "--train", str(paths["train"])),
            *("--holdout", str(paths["holdout"]), "--output", str(tmp_path / "out")),
        ]
    )
    (cfg,) = seen
    return cfg


def test_cli_and_job_build_the_same_config(session_factory, settings, tmp_path, monkeypatch):
    spec = _spec(tmp_path)
    job = _job_config(session_factory, spec, settings, role="loop")
    cli = _cli_config(tmp_path, monkeypatch, spec)

    per_checkpoint = {"checkpoint_id", "output_dir", "metadata"}
    assert cli.model_dump(exclude=per_checkpoint) == job.model_dump(exclude=per_checkpoint)
    assert (job.distill_weight, job.distill_temperature) == (0.3, 3.0)
    assert (job.max_target_length, job.min_epochs, job.epochs) == (24, 2, 2)
    assert (job.learning_rate, job.head_learning_rate) == (1e-4, 3e-4)  # a loop student: not the final rate
    assert len(job.train) == 2 and len(job.holdout) == 1 and len(job.evaluation) == 1


def test_a_missing_init_checkpoint_is_a_domain_error_naming_the_file(session_factory, settings, tmp_path):
    missing = str(uuid.uuid4())
    with pytest.raises(CheckpointNotFound) as caught:
        _job_config(session_factory, _spec(tmp_path), settings, role="loop", init_checkpoint_id=missing)
    assert str(settings.artifacts / "checkpoints" / missing / "gold_checkpoint.json") in str(caught.value)


@pytest.mark.parametrize("role", ["loop", "final"])
def test_an_evaluation_file_gone_since_submission_fails_the_job_naming_it(
    session_factory, settings, tmp_path, role
):
    """Submitting checked the file; one removed since fails the step instead of a student "measured"
    on nothing (the run succeeded without real-data metrics and `gold eval` left the repeat out)."""
    spec = _spec(tmp_path)
    (tmp_path / "real.jsonl").unlink()
    with pytest.raises(EvaluationDataError) as caught:
        _job_config(session_factory, spec, settings, role=role)
    assert str(caught.value).startswith(f"evaluation.path {tmp_path / 'real.jsonl'}: the file does not exist")


def _trained_on(session_factory, spec: dict, settings, role: str, window: int | None) -> set[str]:
    """The texts a job at iteration 3 trains on, of a run with a seed and a train and an OOD
    sample in each of iterations 1-3 (and a held-out one in iteration 1, which every job holds out)."""
    spec = {**spec, "student": {**spec["student"], "loop_window": window}}
    run_id = uuid.uuid4()
    rows = [(0, "seed"), (1, "held")] + [(i, kind) for i in (1, 2, 3) for kind in ("train", "ood")]
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name=spec["name"], spec=spec, status="running"))
        for iteration, kind in rows:
            session.add(
                Sample(
                    run_id=run_id,
                    iteration=iteration,
                    kind="train" if kind == "held" else kind,
                    position=int(kind == "held"),
                    fields={"text": f"{kind}{iteration}"},
                    label="positive",
                    holdout=kind == "held",
                )
            )
    with session_factory() as session:
        cfg = build_config(
            session,
            TrainJob(run_id=str(run_id), iteration=3, role=role),
            RunSpec.model_validate(spec),
            settings,
            ArtifactStore.from_settings(settings),
        )
    assert [e.fields["text"] for e in cfg.holdout] == ["held1"]
    return {e.fields["text"] for e in cfg.train}


@pytest.mark.parametrize(
    ("role", "window", "expected"),
    [
        ("loop", None, {"seed0", "train1", "ood1", "train2", "ood2", "train3"}),  # not its own OOD batch
        ("loop", 1, {"seed0", "train3", "ood2"}),  # the OOD batch joins the iteration after its own
        ("loop", 2, {"seed0", "train2", "ood1", "train3", "ood2"}),
        ("final", 1, {"seed0", "train1", "ood1", "train2", "ood2", "train3", "ood3"}),
    ],
)
def test_the_loop_window_keeps_the_newest_iterations_and_the_seeds(
    session_factory, settings, tmp_path, role, window, expected
):
    assert _trained_on(session_factory, _spec(tmp_path), settings, role, window) == expected


def test_a_loop_window_without_continued_training_is_refused_naming_the_field(tmp_path):
    spec = _spec(tmp_path)
    spec["student"] |= {"loop_window": 1, "continue_training": False}
    with pytest.raises(ValueError, match="student.loop_window"):
        RunSpec.model_validate(spec)
