"""Two trainer workers as on two hosts: real `python -m services.trainer` processes, each in its own
working directory (its own .gold data and artifact cache), sharing only Redis, Postgres and an
artifact store behind a URL (file:// on a third directory, reached through fsspec only). One
worker's checkpoint is continued by the other, which downloads it; the first then finds the
second's checkpoint in the store when the step is re-run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.artifacts import ArtifactStore
from shared.checkpoints import checkpoint_uuid
from shared.db.models import Checkpoint, Run, Sample
from shared.jobs import enqueue_train, train_job_id, train_queue
from shared.schemas.training import TrainJob, TrainResult
from tests.conftest import PROJECT_ROOT
from tests.support import sentiment_task

pytestmark = pytest.mark.slow

REVIEWS = [
    ("a warm and funny film", "positive"),
    ("a dull, boring mess", "negative"),
    ("great acting, I loved it", "positive"),
    ("terrible plot and wooden acting", "negative"),
    ("a joy to watch", "positive"),
    ("a waste of two hours", "negative"),
]


def _host(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    cwd = tmp_path / name
    cwd.mkdir()
    return cwd, env | {"GOLD_WORKER_NAME": name}


def _work(cwd: Path, env: dict[str, str]) -> None:
    """One burst of the worker: it takes what is queued, then exits."""
    done = subprocess.run(
        [sys.executable, "-m", "services.trainer", "--burst"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _result(redis_conn, job: TrainJob, worker: str) -> TrainResult:
    rq_job = train_queue(redis_conn).fetch_job(train_job_id(job))
    assert rq_job.get_status() == "finished", rq_job.latest_result().exc_string
    assert rq_job.worker_name == worker
    return TrainResult.model_validate(rq_job.return_value())


def test_two_workers_share_only_redis_postgres_and_the_store(
    session_factory, redis_conn, redis_url, database_url, tmp_path
):
    store_url = f"file://{tmp_path}/store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOLD_")} | {
        "PYTHONPATH": str(PROJECT_ROOT),  # this checkout's code, whatever the cwd
        "GOLD_DATABASE_URL": database_url,
        "GOLD_REDIS_URL": redis_url,
        "GOLD_ARTIFACTS_URL": store_url,
        "GOLD_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    host_a, env_a = _host(tmp_path, "host-a", env)
    host_b, env_b = _host(tmp_path, "host-b", env)

    spec = {
        "name": "two-hosts",
        "task": sentiment_task(seed_examples=[{"text": t, "label": y} for t, y in REVIEWS[:2]]),
        "student": {"epochs": 1, "batch_size": 8, "learning_rate": 2e-4, "max_length": 32},
    }
    run_id = uuid.uuid4()
    with session_factory.begin() as session:
        session.add(Run(id=run_id, name=spec["name"], spec=spec, status="running"))
        for iteration in (1, 2):
            for i, (text, label) in enumerate(REVIEWS):
                session.add(
                    Sample(
                        run_id=run_id,
                        iteration=iteration,
                        kind="train",
                        position=i,
                        fields={"text": text},
                        label=label,
                        holdout=i >= 4,
                    )
                )
    queue = train_queue(redis_conn)

    first = TrainJob(run_id=str(run_id), iteration=1)
    enqueue_train(queue, first)
    _work(host_a, env_a)
    one = _result(redis_conn, first, "host-a")
    assert one.checkpoint_id == str(checkpoint_uuid(str(run_id), 1, "loop"))

    second = TrainJob(run_id=str(run_id), iteration=2, init_checkpoint_id=one.checkpoint_id)
    enqueue_train(queue, second)
    _work(host_b, env_b)  # continues from host-a's student, which it downloads
    two = _result(redis_conn, second, "host-b")

    store = ArtifactStore(store_url, tmp_path / "reader-cache")
    assert store.read_metadata(two.checkpoint_id).training.init_from == one.checkpoint_id
    cache_b = host_b / ".gold" / "artifact-cache" / "checkpoints"
    assert {p.name for p in cache_b.iterdir() if not p.name.startswith(".")} == {
        one.checkpoint_id,
        two.checkpoint_id,
    }
    cache_a = host_a / ".gold" / "artifact-cache" / "checkpoints"
    assert [p.name for p in cache_a.iterdir() if not p.name.startswith(".")] == [one.checkpoint_id]
    with session_factory() as session:
        rows = {str(c.id): c.path for c in session.query(Checkpoint).filter_by(run_id=run_id)}
    assert rows == {cid: f"checkpoints/{cid}" for cid in (one.checkpoint_id, two.checkpoint_id)}

    # The step re-run on host-a: the finished checkpoint host-b wrote is found in the store.
    queue.fetch_job(train_job_id(second)).delete()
    enqueue_train(queue, second)
    _work(host_a, env_a)
    again = _result(redis_conn, second, "host-a")
    assert again.extra.get("reused") is True and again.checkpoint_id == two.checkpoint_id
    for host in (host_a, host_b):  # nothing written beside the worker but its own .gold
        assert {p.name for p in host.iterdir()} <= {".gold"}
