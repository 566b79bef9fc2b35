"""One tiny GOLD run through every real component: embedded PostgreSQL and Redis, the generator
on the real vLLM engine with the default teacher, the scorer, a trainer worker and the
orchestrator, each its own process, started by the same launcher as `gold up`."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from gold.client import Client
from shared.db.models import Checkpoint, Iteration, Metric, Rejection, Sample
from shared.settings import GoldSettings
from tests.support import SENTIMENT_TASK, stack_on_free_ports

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1500)]


def tiny_spec(fixture_data) -> dict:
    return {
        "name": "e2e-sentiment",
        "task": SENTIMENT_TASK,
        # a handful of OOD samples is too few to judge the teacher by (teacher.min_kappa, tested
        # with stand-ins): the loop's feedback path is what this test follows
        "teacher": {"max_tokens": 48, "seed": 1, "min_kappa": None},
        "student": {"epochs": 2, "batch_size": 8},
        "loop": {
            "iterations": 2,
            "samples_per_iteration": 12,
            "ood_samples_per_iteration": 6,
            "feedback_per_iteration": 2,
        },
        "evaluation": {
            "path": str(fixture_data / "sentiment" / "validation.jsonl"),
            "input_map": {"text": "sentence"},
            "limit": 60,
        },
    }


def test_tiny_gold_run_end_to_end(tmp_path, fixture_data, models_dir, monkeypatch):
    monkeypatch.setenv("GOLD_MODEL_DIR", str(models_dir))
    settings = GoldSettings(data_dir=tmp_path / "gold")
    with stack_on_free_ports(settings) as stack:
        client = Client(stack.orchestrator_url, stack.token)
        run = client.create_run(tiny_spec(fixture_data))
        deadline = time.monotonic() + 1200
        while (current := client.get_run(str(run.id))).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"run stuck at {current.stage}"
            stack.check_alive()
            time.sleep(2)
        assert current.status == "succeeded", current.error
        summary = client.summary(str(run.id))

        headers = {"Authorization": f"Bearer {stack.token}"}
        base = stack.orchestrator_url
        model = httpx.get(f"{base}/runs/{run.id}/model", headers=headers, timeout=60)
        dataset = httpx.get(f"{base}/runs/{run.id}/dataset", headers=headers, timeout=60)
        report = httpx.get(f"{base}/runs/{run.id}/report", headers=headers, timeout=120)
        unauthorised = httpx.get(f"{base}/runs/{run.id}", timeout=10)
        database_url = stack.env["GOLD_DATABASE_URL"]

        engine = create_engine(database_url)
        with Session(engine) as session:
            _assert_stored_run(session, run.id, summary)
        engine.dispose()

    assert unauthorised.status_code == 401
    assert model.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(model.content)) as archive:
        names = archive.getnames()
    assert any(n.endswith("config.json") for n in names) and any(n.endswith("README.md") for n in names)
    rows = [json.loads(line) for line in dataset.text.splitlines()]
    assert {r["gold_kind"] for r in rows} == {"seed", "train", "ood"}
    assert all("gold_teacher_probs" in r and "gold_excluded" in r for r in rows)
    assert report.status_code == 200 and report.text.count("data:image/png") >= 3


def _count(session: Session, *where) -> int:
    return session.scalar(select(func.count()).select_from(Sample).where(*where)) or 0


def _assert_stored_run(session: Session, run_id: uuid.UUID, summary) -> None:
    iterations = {it.index: it for it in session.scalars(select(Iteration).where(Iteration.run_id == run_id))}
    assert sorted(iterations) == [0, 1, 2, 3]
    for i in (1, 2):
        it = iterations[i]
        train, ood = it.parse_stats["train"], it.parse_stats["ood"]
        # every generated completion is a sample or a counted rejection, never silently dropped
        assert (
            _count(session, Sample.run_id == run_id, Sample.iteration == i, Sample.kind == "train")
            == train["accepted"]
        )
        assert train["accepted"] + sum(train["rejected"].values()) == train["completions"]
        rejected = session.scalar(
            select(func.count())
            .select_from(Rejection)
            .where(Rejection.run_id == run_id, Rejection.iteration == i, Rejection.kind == "train")
        )
        assert rejected == sum(train["rejected"].values())
        assert train["accepted"] >= 6, train  # the default teacher yields most of what was asked
        ood_rows = Sample.run_id == run_id, Sample.iteration == i, Sample.kind == "ood"
        assert _count(session, *ood_rows) == ood["accepted"] >= 3
        assert _count(session, *ood_rows, Sample.energy.is_(None)) == 0
        # the [0.5, 0.8) band of a handful of OOD samples holds 1-2 of them; at most feedback_per_iteration
        assert 1 <= _count(session, *ood_rows, Sample.selected) <= 2
        assert set(it.timings) == {"generate_train", "generate_ood", "verify", "train", "score", "select"}
        assert it.checkpoint_id is not None
    # diversity: generated texts are not copies of one another
    texts = [
        s.fields["text"]
        for s in session.scalars(select(Sample).where(Sample.run_id == run_id, Sample.kind == "train"))
    ]
    assert len(set(texts)) == len(texts)
    assert len({t[:25] for t in texts}) >= 0.7 * len(texts)
    # the feedback picks of iteration 1 were shown to the teacher in iteration 2
    fed = [
        s.prompt_examples["feedback"]
        for s in session.scalars(
            select(Sample).where(Sample.run_id == run_id, Sample.iteration == 2, Sample.kind == "train")
        )
    ]
    assert any(fed)
    checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id)).all()
    assert sorted((c.iteration, c.role) for c in checkpoints) == [(1, "loop"), (2, "loop"), (3, "final")]
    names = {(m.iteration, m.name) for m in session.scalars(select(Metric).where(Metric.run_id == run_id))}
    assert (0, "teacher_eval_accuracy") in names
    for i in (1, 2, 3):
        assert (i, "eval_accuracy") in names and (i, "train_loss") in names
    assert summary.sample_counts["seed"] == 4
