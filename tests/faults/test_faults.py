"""Faults injected into real processes during real runs: every service is its own process started
by the launcher, PostgreSQL and Redis are real servers. Each test ends by checking the run's final
record in Postgres against what its spec implies: nothing lost, nothing duplicated; then the stack is
restored for the next test (healthy_stack_after)."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from gold.client import Client
from gold.client_errors import GoldError
from gold.stack import Stack
from services.orchestrator.plan import build_plan
from shared.checkpoints import checkpoints_root
from shared.db.models import Checkpoint, Iteration, Sample, Step
from shared.schemas.runs import RunRead
from shared.settings import GoldSettings
from shared.spec import RunSpec
from tests.faults.support import ensure_postgres, pg_ctl, redis_of
from tests.support import SENTIMENT_TASK, restart_local_redis, stack_on_free_ports, unwritable

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1800)]
ITERATIONS = 2


SPEC = {
    "name": "faults",
    "task": SENTIMENT_TASK,
    # four OOD samples an iteration are too few to judge the teacher by (teacher.min_kappa): these
    # tests follow the feedback path
    "teacher": {"max_tokens": 40, "min_kappa": None},
    "student": {"epochs": 1, "batch_size": 8},
    "loop": {
        "iterations": ITERATIONS,
        "samples_per_iteration": 8,
        "ood_samples_per_iteration": 4,
        "feedback_per_iteration": 1,
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, models_dir) -> Iterator[Stack]:
    # The services inherit this environment; the test modules after this one must not.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GOLD_MODEL_DIR", str(models_dir))
        # find abandoned training jobs quickly (RQ's defaults are minutes)
        env.setenv("GOLD_WORKER_MAINTENANCE_INTERVAL_S", "10")
        env.setenv("GOLD_WORKER_TTL_S", "30")
        settings = GoldSettings(data_dir=tmp_path_factory.mktemp("faults"))
        with stack_on_free_ports(settings) as running:
            yield running


@pytest.fixture
def client(stack) -> Client:
    return Client(stack.orchestrator_url, stack.token)


# The runs the current test submitted (see healthy_stack_after).
SUBMITTED: list[str] = []


def submit(client: Client, name: str) -> str:
    run_id = str(client.create_run({**SPEC, "name": name}).id)
    SUBMITTED.append(run_id)
    return run_id


@pytest.fixture(autouse=True)
def healthy_stack_after(stack: Stack, client: Client) -> Iterator[None]:
    """Each test hands the next one the stack it was given, whether it passed or failed: the
    launcher's environment as it was, every service running and started with that environment,
    PostgreSQL up, and none of its runs still holding the services."""
    env = dict(stack.env)
    processes = {s.name: s.process for s in stack.services}
    SUBMITTED.clear()
    yield
    env_changed = stack.env != env
    stack.env.clear()
    stack.env.update(env)
    if not stack.settings.database_url:  # the stack's own embedded server
        ensure_postgres(stack.settings.data_dir / "postgres")
    for service in stack.services:
        down = service.process is None or service.process.poll() is not None
        if down or (env_changed and service.process is not processes[service.name]):
            stack.restart(service.name)
    stack.check_alive()
    for run_id in SUBMITTED:
        if client.get_run(run_id).status in ("queued", "running"):
            client.cancel(run_id)
        finished(client, run_id)


def wait_for(
    client: Client, run_id: str, until: Callable[[RunRead], bool], timeout_s: float = 900
) -> RunRead:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            run = client.get_run(run_id)
            if until(run):
                return run
        except GoldError:  # the orchestrator may be down on purpose
            pass
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.5)


def finished(client: Client, run_id: str) -> RunRead:
    return wait_for(client, run_id, lambda r: r.status in ("succeeded", "failed", "cancelled"))


PLAN = build_plan(RunSpec.model_validate(SPEC))  # attributes, the loop's steps, the final student
STAGE_ORDER = list(dict.fromkeys(s.stage for s in PLAN))


def reached(iteration: int, stage: str) -> Callable[[RunRead], bool]:
    """At (iteration, stage) or past it. Stages such as score last well under a second, so a poller
    that waited for exactly that stage could miss it and hang; faults are injected at the first poll
    at or after the point, and a run that finished before then fails the test instead of skipping it."""

    def check(run: RunRead) -> bool:
        assert run.status in ("queued", "running"), f"run {run.status} before the fault was injected"
        if run.stage is None:
            return False
        return (run.iteration, STAGE_ORDER.index(run.stage)) >= (iteration, STAGE_ORDER.index(stage))

    return check


def assert_complete_record(stack: Stack, run_id: str) -> None:
    engine = create_engine(stack.env["GOLD_DATABASE_URL"])
    rid = uuid.UUID(run_id)
    with Session(engine) as session:

        def count(*where) -> int:
            return (
                session.scalar(select(func.count()).select_from(Sample).where(Sample.run_id == rid, *where))
                or 0
            )

        iterations = {
            it.index: it for it in session.scalars(select(Iteration).where(Iteration.run_id == rid))
        }
        # 0 holds the run-level steps (the teacher's attribute list), then the loop and the final student
        assert sorted(iterations) == list(range(0, ITERATIONS + 2))
        for i in range(1, ITERATIONS + 1):
            stats = iterations[i].parse_stats
            assert count(Sample.iteration == i, Sample.kind == "train") == stats["train"]["accepted"] > 0
            assert count(Sample.iteration == i, Sample.kind == "ood") == stats["ood"]["accepted"] > 0
            assert count(Sample.iteration == i, Sample.energy.is_(None)) == 0
            assert count(Sample.iteration == i, Sample.selected) == min(1, stats["ood"]["accepted"])
        hashes = session.scalars(
            select(Sample.text_hash).where(Sample.run_id == rid, Sample.kind != "seed")
        ).all()
        assert len(hashes) == len(set(hashes))  # no sample stored twice
        steps = session.scalars(select(Step).where(Step.run_id == rid)).all()
        assert all(s.status == "done" for s in steps) and len(steps) == len(PLAN)
        checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.run_id == rid)).all()
        assert sorted((c.iteration, c.role) for c in checkpoints) == [(1, "loop"), (2, "loop"), (3, "final")]
    engine.dispose()


def training(stack: Stack, client: Client, run_id: str, iteration: int) -> Job:
    """Returns 3 s into the training job of this iteration's student (the final one past the loop)."""
    role = "final" if iteration == ITERATIONS + 1 else "loop"
    wait_for(client, run_id, reached(iteration, "final_train" if role == "final" else "train"))
    job = Job.fetch(
        f"train-{run_id}-{iteration}-{role}", connection=redis_of(stack), serializer=JSONSerializer
    )
    deadline = time.monotonic() + 300
    while job.get_status(refresh=True) != "started":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(3)  # well inside training
    assert job.get_status(refresh=True) == "started", "the job ended before the fault"
    return job


def kill_trainer_mid_job(stack: Stack, client: Client, run_id: str, iteration: int) -> None:
    """kill -9 the trainer worker (and its work horse) while it trains this iteration's student,
    then start a new worker: RQ fails the abandoned job and the orchestrator's next attempt runs."""
    training(stack, client, run_id, iteration)
    stack.kill("trainer-0")
    time.sleep(2)
    stack.restart("trainer-0")


def test_trainer_killed_twice_and_scorer_down_while_scoring(stack, client):
    """One run through three faults (a run costs minutes, so faults share one): the trainer killed
    while it trains iteration 1's student, the scorer down across iteration 2's score step, and the
    trainer killed again while it trains the final student."""
    run_id = submit(client, "kill-trainer-and-scorer")
    kill_trainer_mid_job(stack, client, run_id, iteration=1)
    # scoring takes a fraction of a second, so the scorer goes down during training and stays down
    # until the score step has met it: the step's requests fail and are retried, not the run
    wait_for(client, run_id, reached(2, "train"))
    stack.kill("scorer")
    wait_for(client, run_id, reached(2, "score"))
    time.sleep(3)
    stack.restart("scorer")
    kill_trainer_mid_job(stack, client, run_id, iteration=ITERATIONS + 1)
    run = finished(client, run_id)
    assert run.status == "succeeded", run.error
    assert_complete_record(stack, run_id)


def test_orchestrator_killed_then_postgres_and_redis_restarted_mid_run(stack, client):
    """One run through three faults: the orchestrator killed in iteration 1 (it resumes the run
    from its last completed step), PostgreSQL restarted in iteration 2, and Redis down for 5 s, then
    back with its data (append-only file), while the worker's horse trains the final student: every
    service reconnects and the run finishes complete."""
    run_id = submit(client, "kill-orchestrator-restart-postgres-redis")
    wait_for(client, run_id, reached(1, "generate_ood"))
    stack.kill("orchestrator")
    time.sleep(2)
    stack.restart("orchestrator")
    wait_for(client, run_id, reached(2, "generate_train"))
    pg_ctl(stack.settings.data_dir / "postgres", "restart")
    training(stack, client, run_id, iteration=ITERATIONS + 1)
    restart_local_redis(stack.env["GOLD_REDIS_URL"], down_s=5)
    run = finished(client, run_id)
    assert run.status == "succeeded", run.error
    assert_complete_record(stack, run_id)
    stack.check_alive()  # no service gave up on Redis


def test_generator_unreachable_for_30s_then_back(stack, client):
    run_id = submit(client, "generator-down")
    wait_for(client, run_id, reached(1, "train"))
    stack.kill("generator", signal.SIGKILL)
    time.sleep(30)
    stack.restart("generator")
    run = finished(client, run_id)
    assert run.status == "succeeded", run.error
    assert_complete_record(stack, run_id)


def test_generator_gone_past_the_patience_fails_naming_it(stack, client):
    stack.env["GOLD_DEPENDENCY_PATIENCE_S"] = "8"
    stack.restart("orchestrator")
    stack.kill("generator")
    run_id = submit(client, "generator-gone")
    run = finished(client, run_id)
    assert run.status == "failed"
    assert run.error.startswith("generator:") and "gave up after 8 s" in run.error


def test_unwritable_artifact_directory_fails_the_run_naming_it(stack, client):
    checkpoints = checkpoints_root(stack.settings.artifacts)
    checkpoints.mkdir(parents=True, exist_ok=True)
    before = set(checkpoints.iterdir())
    with unwritable(checkpoints):
        run_id = submit(client, "artifacts-unwritable")
        run = finished(client, run_id)
    assert run.status == "failed"
    assert run.error and f"artifact directory {checkpoints} is not writable" in run.error
    # Nothing half-written: no checkpoint recorded for the run, no folder of it on disk.
    engine = create_engine(stack.env["GOLD_DATABASE_URL"])
    with Session(engine) as session:
        assert session.scalars(select(Checkpoint).where(Checkpoint.run_id == uuid.UUID(run_id))).all() == []
    engine.dispose()
    assert set(checkpoints.iterdir()) == before
