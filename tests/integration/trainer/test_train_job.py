"""train_student end to end: samples in Postgres, the job through a real RQ burst worker, the
checkpoint folder, Checkpoint/Metric rows, continued training, the final student, idempotency."""

from __future__ import annotations

import json
import uuid

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import func, select

from services.trainer.config import get_trainer_settings
from shared.checkpoints import checkpoint_uuid
from shared.db.models import Checkpoint, Metric, Run, Sample
from shared.jobs import enqueue_train, train_job_id, train_queue
from shared.schemas.training import TrainJob, TrainResult
from shared.spec import RunSpec
from tests.support import sentiment_task

pytestmark = pytest.mark.slow

POS = [
    "a warm and funny film",
    "great acting, I loved it",
    "a moving, beautiful story",
    "brilliant from start to end",
    "the best movie this year",
    "charming and clever",
    "a joy to watch",
    "wonderful music and heart",
]
NEG = [
    "a dull, boring mess",
    "terrible plot and wooden acting",
    "I hated every minute",
    "far too long and flat",
    "a waste of two hours",
    "clumsy and lifeless",
    "painfully bad jokes",
    "an ugly, stupid film",
]


@pytest.fixture
def trainer_env(monkeypatch, tmp_path, database_url):
    monkeypatch.setenv("GOLD_DATABASE_URL", database_url)
    monkeypatch.setenv("GOLD_ARTIFACT_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("GOLD_TORCH_THREADS", "2")
    monkeypatch.setenv("GOLD_FINAL_MAX_EPOCHS", "3")
    monkeypatch.setenv("GOLD_FINAL_MIN_HOLDOUT", "1")  # the tests' held-out sets are a few rows
    get_trainer_settings.cache_clear()
    yield tmp_path / "artifacts"
    get_trainer_settings.cache_clear()


def _run(session_factory, spec: dict) -> uuid.UUID:
    RunSpec.model_validate(spec)
    run_id = uuid.uuid4()
    with session_factory() as session, session.begin():
        session.add(Run(id=run_id, name=spec["name"], spec=spec, status="running"))
    return run_id


def _add(session_factory, run_id, iteration, kind, rows, holdout=False, start=0, **extra):
    with session_factory() as session, session.begin():
        for i, (fields, label) in enumerate(rows):
            session.add(
                Sample(
                    run_id=run_id,
                    iteration=iteration,
                    kind=kind,
                    position=start + i,
                    fields=fields,
                    label=label,
                    holdout=holdout,
                    **extra,
                )
            )


def _work(redis_conn, job: TrainJob) -> TrainResult:
    queue = train_queue(redis_conn)
    enqueue_train(queue, job)
    SimpleWorker([queue], connection=redis_conn, serializer=JSONSerializer).work(burst=True)
    rq_job = queue.fetch_job(train_job_id(job))
    assert rq_job.get_status() == "finished", rq_job.latest_result().exc_string
    return TrainResult.model_validate(rq_job.return_value())


def _metrics(session_factory, run_id, iteration):
    with session_factory() as session:
        rows = session.scalars(select(Metric).where(Metric.run_id == run_id, Metric.iteration == iteration))
        return {m.name: m.value for m in rows}


def test_classifier_loop_continue_final_and_rerun(trainer_env, session_factory, redis_conn, tmp_path):
    reference_path = tmp_path / "real_train.jsonl"
    reference_path.write_text(
        "".join(
            json.dumps({"sentence": t, "label_text": y}) + "\n"
            for pair in zip(POS, NEG, strict=True)
            for t, y in zip(pair, ("positive", "negative"), strict=True)
        )
    )
    eval_path = tmp_path / "real.jsonl"
    eval_path.write_text(
        "".join(
            json.dumps({"sentence": t, "label_text": y}) + "\n"
            for t, y in [
                ("a lovely film", "positive"),
                ("boring and bad", "negative"),
                ("I loved the acting", "positive"),
                ("a dull waste", "negative"),
            ]
        )
    )
    spec = {
        "name": "sentiment",
        # the shared task with two of this test's reviews as its seeds (the counts below include them)
        "task": sentiment_task(
            seed_examples=[{"text": POS[0], "label": "positive"}, {"text": NEG[0], "label": "negative"}]
        ),
        "student": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 2e-4,
            "max_length": 32,
            "loss": "sce",
            "sce_alpha": 0.1,
            "sce_beta": 1.0,
            "distill_weight": 0.5,
        },
        "verification": {"policy": "keep"},
        "evaluation": {
            "path": str(eval_path),
            "input_map": {"text": "sentence"},
            "label_field": "label_text",
            "reference_path": str(reference_path),
            "reference_examples": 10,
        },
    }
    run_id = _run(session_factory, spec)
    _add(session_factory, run_id, 0, "seed", [(s, s["label"]) for s in spec["task"]["seed_examples"]])
    gen = [({"text": t, "label": "positive"}, "positive") for t in POS[1:6]]
    gen += [({"text": t, "label": "negative"}, "negative") for t in NEG[1:6]]
    _add(session_factory, run_id, 1, "train", gen, teacher_probs={"positive": 0.7, "negative": 0.3})
    # Left out by teacher verification: never trained on.
    _add(
        session_factory, run_id, 1, "train", [({"text": "excluded row"}, "positive")], start=50, excluded=True
    )
    _add(
        session_factory,
        run_id,
        1,
        "train",
        [({"text": POS[6]}, "positive"), ({"text": NEG[6]}, "negative")],
        holdout=True,
        start=100,
    )
    _add(
        session_factory,
        run_id,
        1,
        "ood",
        [({"text": "the soup was cold"}, "negative"), ({"text": "an off-label row"}, "neutral")],
    )
    # A later iteration's samples must not leak into iteration 1.
    _add(
        session_factory, run_id, 2, "train", [({"text": POS[7]}, "positive"), ({"text": NEG[7]}, "negative")]
    )

    first = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=1))
    cid = checkpoint_uuid(str(run_id), 1, "loop")
    assert first.checkpoint_id == str(cid)
    # seeds 2 + train 10; held-out rows excluded, and the iteration's OOD batch too (scored next)
    assert first.metrics["train_examples"] == 12 and first.extra["dropped_examples"] == 0
    folder = trainer_env / "checkpoints" / str(cid)
    meta = json.loads((folder / "gold_checkpoint.json").read_text())
    assert meta["student_kind"] == "classifier" and meta["task"]["labels"] == ["negative", "positive"]
    assert meta["training"]["loss"] == "sce" and meta["training"]["init_from"] is None
    assert meta["training"]["distill_weight"] == 0.5
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    assert "| eval_accuracy |" in (folder / "README.md").read_text()
    metrics = _metrics(session_factory, run_id, 1)
    assert {
        "train_loss",
        "holdout_accuracy",
        "eval_accuracy",
        "eval_macro_f1",
        "train_examples",
        "train_seconds",
        "train_examples_per_s",
    } <= set(metrics)
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and metrics["train_examples_per_s"] > 0
    with session_factory() as session:
        row = session.get(Checkpoint, cid)
        assert row.path == f"checkpoints/{cid}" and row.role == "loop" and row.student_model == "minilm"

    # Iteration 2 continues from iteration 1's student and sees iteration 2's samples and iteration
    # 1's OOD batch: 1 usable (the "neutral" one is outside the label set).
    second = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=2, init_checkpoint_id=str(cid)))
    assert second.metrics["train_examples"] == 15 and second.extra["dropped_examples"] == 1
    meta2 = json.loads(
        (trainer_env / "checkpoints" / second.checkpoint_id / "gold_checkpoint.json").read_text()
    )
    assert meta2["training"]["init_from"] == str(cid)

    # The final student: fresh, the whole pool, early stopping on the holdout.
    final = _work(
        redis_conn, TrainJob(run_id=str(run_id), iteration=3, role="final", init_checkpoint_id=str(cid))
    )
    meta3 = json.loads(
        (trainer_env / "checkpoints" / final.checkpoint_id / "gold_checkpoint.json").read_text()
    )
    assert meta3["role"] == "final" and meta3["training"]["init_from"] is None
    assert meta3["training"]["early_stopping"] is True and len(meta3["training"]["holdout_history"]) >= 1
    # the loop's epoch count (2) is always trained before an epoch may be chosen as the best
    assert meta3["training"]["holdout_history"][0]["epoch"] == 2
    assert final.metrics["train_examples"] == 15

    # Re-running a finished step changes nothing: same id, same rows, no second training.
    queue = train_queue(redis_conn)
    queue.fetch_job(train_job_id(TrainJob(run_id=str(run_id), iteration=1))).delete()
    again = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=1))
    assert again.checkpoint_id == first.checkpoint_id and again.extra.get("reused") is True
    assert again.metrics == pytest.approx(first.metrics)
    with session_factory() as session:
        assert (
            session.scalar(select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == run_id))
            == 3
        )
        n_metrics = session.scalar(select(func.count()).select_from(Metric).where(Metric.run_id == run_id))
    assert n_metrics == len(first.metrics) + len(second.metrics) + len(final.metrics)

    # The supervised reference: a fresh student on the first 10 real rows (2 held out for early
    # stopping), measured on the same evaluation data, its metrics named apart at iteration 0.
    reference = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=0, role="reference"))
    assert reference.metrics["reference_examples"] == 10
    assert reference.metrics["reference_train_examples"] == 8
    assert 0.0 <= reference.metrics["reference_eval_accuracy"] <= 1.0
    assert set(_metrics(session_factory, run_id, 0)) == set(reference.metrics)
    with session_factory() as session:
        assert session.get(Checkpoint, uuid.UUID(reference.checkpoint_id)).role == "reference"


def qa_task(seeds: list[dict[str, str]]) -> dict:
    """An extractive question-answering task (seq2seq) with these seed examples."""
    return {
        "type": "seq2seq",
        "description": "extractive QA",
        "input_fields": ["context", "question"],
        "output_field": "answer",
        "seed_examples": seeds,
    }


def test_seq2seq_student_with_generation_metrics(trainer_env, session_factory, redis_conn, tmp_path):
    eval_path = tmp_path / "squad.jsonl"
    eval_path.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {
                    "context": "Paris is the capital of France.",
                    "question": "Capital of France?",
                    "answers": {"text": ["Paris", "Paris"]},
                },
                {
                    "context": "Water boils at 100 degrees.",
                    "question": "Boiling point?",
                    "answers": {"text": ["100 degrees"]},
                },
            ]
        )
    )
    seeds = [
        {"context": "Ada wrote code.", "question": "Who wrote code?", "answer": "Ada"},
        {"context": "The sky is blue.", "question": "What colour is the sky?", "answer": "blue"},
    ]
    spec = {
        "name": "qa",
        "task": qa_task(seeds),
        # the T5 kind (the default student of seq2seq tasks is the causal SmolLM2)
        "student": {"model": "tiny-t5", "epochs": 1, "batch_size": 4, "max_length": 64, "loss": "sce"},
        "evaluation": {"path": str(eval_path), "label_field": "answers.text"},
    }
    run_id = _run(session_factory, spec)
    _add(session_factory, run_id, 0, "seed", [(s, None) for s in seeds])
    _add(session_factory, run_id, 1, "train", [(s, None) for s in seeds * 3], start=10)
    result = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=1))
    metrics = _metrics(session_factory, run_id, 1)
    assert {"eval_exact_match", "eval_f1", "eval_rouge_l", "train_loss"} <= set(metrics)
    assert result.metrics["train_examples"] == 8
    with session_factory() as session:
        assert session.get(Checkpoint, uuid.UUID(result.checkpoint_id)).student_kind == "seq2seq"


def test_the_causal_student_answers_few_shot_before_training(
    trainer_env, session_factory, redis_conn, tmp_path
):
    eval_path = tmp_path / "qa.jsonl"
    rows = [
        {"context": "Paris is the capital of France.", "question": "Capital of France?", "a": ["Paris"]},
        {"context": "The lamp was electrified in 1931.", "question": "When electrified?", "a": ["1931"]},
    ]
    eval_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seeds = [
        {"context": "Ada wrote code in London.", "question": "Where did Ada write code?", "answer": "London"},
        {"context": "The sky was blue at noon.", "question": "What colour was the sky?", "answer": "blue"},
    ]
    spec = {
        "name": "qa-fewshot",
        "task": qa_task(seeds),
        "student": {"max_length": 64},  # the default seq2seq student: SmolLM2-135M, causal
        "evaluation": {"path": str(eval_path), "label_field": "a", "student_baseline": True},
    }
    run_id = _run(session_factory, spec)
    result = _work(redis_conn, TrainJob(run_id=str(run_id), iteration=0, role="fewshot"))
    metrics = _metrics(session_factory, run_id, 0)
    assert set(metrics) == set(result.metrics)
    assert {"fewshot_eval_f1", "fewshot_eval_exact_match", "fewshot_eval_seconds_per_example"} <= set(metrics)
    assert metrics["fewshot_eval_f1"] > 0.4  # the pretrained model copies short answers after 2 shots
    with session_factory() as session:  # nothing was trained, so there is no checkpoint
        assert session.scalar(select(func.count()).select_from(Checkpoint)) == 0


def test_unknown_run_and_disallowed_model_fail(trainer_env, session_factory):
    from services.trainer.jobs import train_student

    with pytest.raises(LookupError):
        train_student(TrainJob(run_id=str(uuid.uuid4()), iteration=1).model_dump())
    spec = {
        "name": "x",
        "task": {
            "type": "classification",
            "description": "d",
            "input_fields": ["text"],
            "output_field": "label",
            "labels": ["a", "b"],
            "seed_examples": [{"text": "1", "label": "a"}, {"text": "2", "label": "b"}],
        },
        "student": {"model": "/etc/some/local/path"},
    }
    run_id = _run(session_factory, spec)
    _add(session_factory, run_id, 0, "seed", [({"text": "1"}, "a"), ({"text": "2"}, "b")])
    with pytest.raises(ValueError, match="allow-list"):
        train_student(TrainJob(run_id=str(run_id), iteration=1).model_dump())
