"""Many users at once, on the real stack: two tenants submit runs concurrently (team-a a classification,
team-b a seq2seq task), another team (team-c) calls the generator's OpenAI API all along, and faults
hit every part of the stack on a schedule (kill -9 of the generator, the scorer, the trainer worker and
the orchestrator; a PostgreSQL restart; a Redis restart). Afterwards every run's record is checked
against its spec (nothing duplicated or lost), and once the stack has stopped, that none of its
processes is left. tests/faults/test_many_users.py runs it bounded (a few minutes), bench/soak.py for
longer; both read the same report (ScenarioReport)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from gold.client import Client
from gold.client_errors import GoldError
from gold.stack import Stack
from services.orchestrator.plan import build_plan
from shared.db.models import Checkpoint, Iteration, Metric, Rejection, Sample, Step
from shared.settings import GoldSettings
from shared.spec import RunSpec
from tests.faults.support import pg_ctl
from tests.support import SENTIMENT_TASK, restart_local_redis, stack_on_free_ports

logger = logging.getLogger(__name__)

FAULTS = ("generator", "scorer", "trainer", "orchestrator", "postgres", "redis")
OTHER_TEAM = "team-c"
FINISHED = ("succeeded", "failed", "cancelled")

QA_TASK: dict[str, Any] = {
    "type": "seq2seq",
    "description": "Answer a general-knowledge question in a few words.",
    "input_fields": ["text"],
    "output_field": "label",
    "seed_examples": [
        {"text": "Who wrote Hamlet?", "label": "William Shakespeare"},
        {"text": "What is the capital of Peru?", "label": "Lima"},
        {"text": "Which planet is known as the red planet?", "label": "Mars"},
        {"text": "What gas do plants take in from the air?", "label": "Carbon dioxide"},
    ],
}


def classification_spec(name: str, iterations: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": SENTIMENT_TASK,
        # a handful of OOD samples is too few to judge the teacher by (teacher.min_kappa)
        "teacher": {"max_tokens": 40, "min_kappa": None},
        "student": {"epochs": 1, "final_epochs": 2, "batch_size": 8},
        "loop": {
            "iterations": iterations,
            "samples_per_iteration": 8,
            "ood_samples_per_iteration": 4,
            "feedback_per_iteration": 1,
        },
    }


def seq2seq_spec(name: str, iterations: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": QA_TASK,
        "teacher": {"max_tokens": 32},
        "student": {"model": "tiny-t5", "epochs": 1, "final_epochs": 2, "batch_size": 8, "max_length": 64},
        "loop": {
            "iterations": iterations,
            "samples_per_iteration": 8,
            "ood_samples_per_iteration": 4,
            "feedback_per_iteration": 1,
        },
    }


TENANTS = {"team-a": classification_spec, "team-b": seq2seq_spec}


@dataclass
class Scenario:
    data_dir: Path
    models_dir: Path
    runs_per_tenant: int = 1
    iterations: int = 1
    # no tenant submits a new run after this many seconds; the runs already in flight finish
    duration_s: float = 0.0
    fault_interval_s: float = 15.0
    # rounds of the schedule (every kind of fault once a round); None: round and round while runs last
    fault_rounds: int | None = 1
    down_s: float = 5.0  # how long a killed service stays down before it is started again
    # a run waiting longer than this for a service fails, naming it (GOLD_DEPENDENCY_PATIENCE_S)
    patience_s: float = 600.0
    run_timeout_s: float = 1200.0  # a run not finished by then is cancelled and reported
    requests_per_minute: int = 60  # the other team's quota, so that 429s are part of the test

    def environment(self) -> dict[str, str]:
        """The services' settings, scaled down so that a few minutes see every fault recovered from."""
        return {
            "GOLD_MODEL_DIR": str(self.models_dir),
            "GOLD_CONCURRENT_RUNS": str(len(TENANTS)),  # the tenants' runs are driven side by side
            "GOLD_LEASE_S": "20",  # a killed orchestrator's runs are taken over 20 s later
            "GOLD_DEPENDENCY_PATIENCE_S": str(self.patience_s),
            # find abandoned training jobs quickly (RQ's defaults are minutes)
            "GOLD_WORKER_MAINTENANCE_INTERVAL_S": "10",
            "GOLD_WORKER_TTL_S": "30",
            "GOLD_GENERATOR_KEY_POLICIES": json.dumps(
                {OTHER_TEAM: {"requests_per_minute": self.requests_per_minute, "scopes": ["openai"]}}
            ),
        }


@dataclass
class RunOutcome:
    tenant: str
    name: str
    run_id: str
    status: str = "running"
    error: str | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # what its record shows duplicated or lost


@dataclass
class ScenarioReport:
    seconds: float
    runs: list[RunOutcome]
    faults: dict[str, int]
    fault_errors: list[str]  # a fault that could not be recovered from (a service that did not come back)
    requests: dict[str, Any]
    processes_found: int  # what the check of processes left saw before the stop (so it is not vacuous)
    processes_left: list[str]

    def figures(self) -> dict[str, Any]:
        """The one JSON object bench/soak.py prints."""
        statuses = Counter(r.status for r in self.runs)
        problems = [p for r in self.runs for p in r.problems]
        return {
            "seconds": round(self.seconds, 1),
            "runs": {
                "submitted": len(self.runs),
                **{status: statuses.get(status, 0) for status in ("succeeded", "failed", "cancelled")},
                "by_tenant": dict(Counter(r.tenant for r in self.runs)),
                "failed_reasons": [
                    f"{r.tenant}/{r.name}: {r.error}" for r in self.runs if r.status != "succeeded"
                ],
                "mean_seconds": round(sum(r.seconds for r in self.runs) / max(1, len(self.runs)), 1),
            },
            "faults": self.faults,
            "fault_errors": self.fault_errors,
            "other_team_requests": self.requests,
            "duplicates": sum(p.startswith("duplicate") for p in problems),
            "losses": sum(p.startswith("lost") for p in problems),
            "record_problems": problems,
            "processes_left": self.processes_left,
        }


# -- the other team ------------------------------------------------------------------------------
class OtherTeam(threading.Thread):
    """Small OpenAI completions, one after another, all along. Every answer must be a 2xx, or a 429 or
    503 that says when to come back (Retry-After); a connection that fails while the generator is down
    on purpose (`generator_down`) is expected and counted apart from one that fails while it is up."""

    def __init__(self, base_url: str, token: str, generator_down: threading.Event, pause_s: float = 0.3):
        super().__init__(name="other-team", daemon=True)
        self.url = f"{base_url}/v1/completions"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.generator_down = generator_down
        self.pause_s = pause_s
        self.stopping = threading.Event()
        self.by_status: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # "ConnectError (generator down)", ...
        self.bad: list[str] = []  # answers that break the contract: a 5xx other than 503, no Retry-After
        self.latencies_ms: list[float] = []

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=httpx.Timeout(120.0, connect=5.0)) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                self._ask(http, n)
                self.stopping.wait(self.pause_s)

    def _ask(self, http: httpx.Client, n: int) -> None:
        body = {"model": "default", "prompt": f"Request {n}. Name a colour:", "max_tokens": 8}
        down_before = self.generator_down.is_set()
        started = time.monotonic()
        try:
            response = http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            down = down_before or self.generator_down.is_set()
            self.errors[f"{type(exc).__name__} ({'generator down' if down else 'generator up'})"] += 1
            if not down:
                self.bad.append(f"{type(exc).__name__} while the generator was up: {exc}")
            return
        status = response.status_code
        self.by_status[str(status)] += 1
        if status < 300:
            self.latencies_ms.append((time.monotonic() - started) * 1000)
        elif status in (429, 503):
            if "retry-after" not in response.headers:
                self.bad.append(f"{status} without Retry-After: {response.text[:200]}")
        elif status >= 500:
            self.bad.append(f"{status}: {response.text[:300]}")
        else:  # a 4xx of our own making would be a broken test, not a broken service
            self.bad.append(f"{status} (the request is valid): {response.text[:300]}")

    def figures(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_ms)

        def pct(q: float) -> float | None:
            return (
                round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None
            )

        return {
            "total": sum(self.by_status.values()) + sum(self.errors.values()),
            "by_status": dict(sorted(self.by_status.items())),
            "errors": dict(sorted(self.errors.items())),
            "contract_violations": self.bad,
            "p50_ms_2xx": pct(0.5),
            "p99_ms_2xx": pct(0.99),
        }


# -- the fault schedule --------------------------------------------------------------------------
class FaultSchedule:
    """Every `interval_s`, the next fault of FAULTS, round and round: a killed service stays down
    `down_s`, then the scenario starts it again (as a supervisor would: the stack has none of its own).

    It runs in the thread that started the stack, never in a thread of its own: the services die with
    the thread that spawned them (PR_SET_PDEATHSIG follows the parent *thread*), so services restarted
    from a thread would all get SIGTERM when it ended."""

    def __init__(
        self,
        stack: Stack,
        generator_down: threading.Event,
        interval_s: float,
        down_s: float,
        rounds: int | None,
    ):
        self.stack = stack
        self.generator_down = generator_down
        self.interval_s = interval_s
        self.down_s = down_s
        self.rounds = rounds
        self.injected: Counter[str] = Counter({kind: 0 for kind in FAULTS})
        self.errors: list[str] = []

    def run(self, done: Callable[[], bool]) -> None:
        """Inject faults until `done()` and every kind has been injected once; after `rounds` rounds
        (if given) only wait for `done()`."""
        n, next_at = 0, time.monotonic() + self.interval_s
        while not (done() and n >= len(FAULTS)):
            all_out = self.rounds is not None and n >= self.rounds * len(FAULTS)
            if not all_out and time.monotonic() >= next_at:
                self.inject_recovering(FAULTS[n % len(FAULTS)])
                n, next_at = n + 1, time.monotonic() + self.interval_s
            time.sleep(0.5)

    def inject_recovering(self, kind: str) -> None:
        try:
            self.inject(kind)
        except Exception as exc:  # reported: the scenario fails on it, the schedule goes on
            logger.exception("fault %s: could not recover", kind)
            self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
        self.injected[kind] += 1

    def inject(self, kind: str) -> None:
        logger.info("fault: %s", kind)
        if kind == "generator":
            self.generator_down.set()
            try:
                self._kill_and_restart("generator", self.down_s)
            finally:
                self.generator_down.clear()
        elif kind in ("scorer", "orchestrator"):
            self._kill_and_restart(kind, self.down_s)
        elif kind == "trainer":  # the worker and its work horse (a whole process group)
            self._kill_and_restart("trainer-0", self.down_s)
        elif kind == "postgres":
            pg_ctl(self.stack.settings.data_dir / "postgres", "restart")
        elif kind == "redis":
            restart_local_redis(self.stack.env["GOLD_REDIS_URL"], down_s=self.down_s)

    def _kill_and_restart(self, name: str, down_s: float) -> None:
        self.stack.kill(name)  # SIGKILL
        time.sleep(down_s)
        self.stack.restart(name, ready_timeout_s=300)


# -- the tenants ---------------------------------------------------------------------------------
class Tenant(threading.Thread):
    """Submits its runs one after another (each waited for), retrying a submission the orchestrator
    could not take (down on purpose) with the same Idempotency-Key, so a retry never makes a second run."""

    def __init__(self, name: str, url: str, token: str, scenario: Scenario, deadline: float):
        super().__init__(name=name, daemon=True)
        self.tenant = name
        self.client = Client(url, token)
        self.scenario = scenario
        self.deadline = deadline  # no new run after this (time.monotonic)
        self.outcomes: list[RunOutcome] = []
        self.specs: dict[str, dict[str, Any]] = {}

    def run(self) -> None:
        for i in range(self.scenario.runs_per_tenant):
            if i and time.monotonic() > self.deadline:
                break
            spec = TENANTS[self.tenant](f"{self.tenant}-{i}", self.scenario.iterations)
            started = time.monotonic()
            run_id = self._submit(spec)
            self.specs[run_id] = spec
            outcome = RunOutcome(self.tenant, spec["name"], run_id)
            self.outcomes.append(outcome)
            run = self._wait(run_id, started + self.scenario.run_timeout_s)
            outcome.status, outcome.error = run.status, run.error
            outcome.seconds = time.monotonic() - started

    def _submit(self, spec: dict[str, Any]) -> str:
        key = str(uuid.uuid4())
        while True:
            try:
                return str(self.client.create_run(spec, idempotency_key=key).id)
            except GoldError as exc:
                if not exc.retryable:  # the request's own fault: no retry makes it right
                    raise
            time.sleep(1.0)

    def _wait(self, run_id: str, deadline: float):
        cancelled = False
        while True:
            try:
                run = self.client.get_run(run_id)
                if run.status in FINISHED:
                    return run
                if time.monotonic() > deadline and not cancelled:
                    logger.error("run %s not finished in time: cancelling it", run_id)
                    self.client.cancel(run_id)
                    cancelled = True
            except GoldError as exc:
                if not exc.retryable:
                    raise  # the orchestrator (or its database) down on purpose is retryable: waited out
            time.sleep(1.0)


# -- the checks ----------------------------------------------------------------------------------
def record_problems(session: Session, run_id: str, spec_json: dict[str, Any]) -> list[str]:
    """What a succeeded run's record holds that its spec does not imply: each problem begins with
    'duplicate' or 'lost' (or 'record' for anything else)."""
    spec = RunSpec.model_validate(spec_json)
    plan = build_plan(spec)
    rid = uuid.UUID(run_id)
    problems: list[str] = []

    def count(model: Any, *where: Any) -> int:
        return session.scalar(select(func.count()).select_from(model).where(model.run_id == rid, *where)) or 0

    iterations = {it.index: it for it in session.scalars(select(Iteration).where(Iteration.run_id == rid))}
    if sorted(iterations) != sorted({p.iteration for p in plan}):
        problems.append(f"record: iterations {sorted(iterations)} for a plan of {len(plan)} steps")
    asked = {"train": spec.loop.samples_per_iteration, "ood": spec.loop.ood_samples_per_iteration}
    for i in range(1, spec.loop.iterations + 1):
        stats = iterations[i].parse_stats if i in iterations else {}
        for kind, n in asked.items():
            if kind not in stats:
                problems.append(f"lost: iteration {i} has no {kind} generation recorded")
                continue
            got = stats[kind]
            samples = count(Sample, Sample.iteration == i, Sample.kind == kind)
            rejected = count(Rejection, Rejection.iteration == i, Rejection.kind == kind)
            if got["requested"] != n or got["completions"] != n:
                problems.append(f"record: iteration {i} {kind}: asked {n}, stats say {got}")
            if samples != got["accepted"]:
                word = "duplicate" if samples > got["accepted"] else "lost"
                problems.append(
                    f"{word}: iteration {i} {kind}: {samples} samples stored, {got['accepted']} accepted"
                )
            if rejected != sum(got["rejected"].values()):
                word = "duplicate" if rejected > sum(got["rejected"].values()) else "lost"
                problems.append(
                    f"{word}: iteration {i} {kind}: {rejected} rejections stored, stats {got['rejected']}"
                )
            if got["accepted"] + sum(got["rejected"].values()) != got["completions"]:
                problems.append(
                    f"lost: iteration {i} {kind}: completions neither accepted nor rejected: {got}"
                )
        if unscored := count(Sample, Sample.iteration == i, Sample.kind == "ood", Sample.energy.is_(None)):
            problems.append(f"lost: iteration {i}: {unscored} OOD samples without an energy score")
        if (
            selected := count(Sample, Sample.iteration == i, Sample.selected)
        ) > spec.loop.feedback_per_iteration:
            problems.append(f"duplicate: iteration {i}: {selected} samples selected for feedback")
    hashes = session.scalars(
        select(Sample.text_hash).where(Sample.run_id == rid, Sample.kind != "seed")
    ).all()
    if len(hashes) != len(set(hashes)):
        problems.append(f"duplicate: {len(hashes) - len(set(hashes))} generated samples stored twice")
    if count(Sample, Sample.kind == "seed") != len(spec.task.seed_examples):
        problems.append("record: the seed examples stored are not the spec's")
    steps = session.scalars(select(Step).where(Step.run_id == rid)).all()
    if sorted((s.iteration, s.stage) for s in steps) != sorted((p.iteration, p.stage) for p in plan):
        problems.append(f"record: {len(steps)} steps stored for a plan of {len(plan)}")
    if undone := [f"{s.iteration}/{s.stage}: {s.status}" for s in steps if s.status != "done"]:
        problems.append(f"record: steps not done: {undone}")
    expected = sorted(
        (p.iteration, "final" if p.stage == "final_train" else "loop")
        for p in plan
        if p.stage in ("train", "final_train")
    )
    checkpoints = sorted(
        (c.iteration, c.role) for c in session.scalars(select(Checkpoint).where(Checkpoint.run_id == rid))
    )
    if checkpoints != expected:
        word = "duplicate" if len(checkpoints) > len(expected) else "lost"
        problems.append(f"{word}: checkpoints {checkpoints}, the plan trains {expected}")
    metrics = [(m.iteration, m.name) for m in session.scalars(select(Metric).where(Metric.run_id == rid))]
    if len(metrics) != len(set(metrics)):
        problems.append(f"duplicate: {len(metrics) - len(set(metrics))} metric rows stored twice")
    for iteration, _ in expected:
        if (iteration, "train_loss") not in metrics:
            problems.append(f"lost: no train_loss metric for the student of iteration {iteration}")
    return problems


def stack_processes(data_dir: Path) -> dict[int, str]:
    """Every process of the stack in `data_dir`, orphans included: what runs with its data directory
    in its environment (the services and all they start) or on its command line (PostgreSQL, Redis),
    and their descendants (PostgreSQL's backends rename themselves)."""
    me = os.getpid()
    found: dict[int, str] = {}
    for process in psutil.process_iter(["pid", "cmdline", "name"]):
        if process.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(process.info["cmdline"] or [])
            if str(data_dir) in cmdline or process.environ().get("GOLD_DATA_DIR") == str(data_dir):
                found[process.pid] = cmdline[:120] or process.info["name"]
                for child in process.children(recursive=True):
                    found.setdefault(child.pid, " ".join(child.cmdline())[:120] or child.name())
    return found


def still_alive(processes: dict[int, str], timeout_s: float = 10.0) -> list[str]:
    handles = []
    for pid in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            handles.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(handles, timeout=timeout_s)
    return [f"{p.pid} {processes[p.pid]}" for p in alive]


# -- the whole scenario ---------------------------------------------------------------------------
@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` inside (the stack's services inherit it), as it was after."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_scenario(scenario: Scenario) -> ScenarioReport:
    started = time.monotonic()
    tokens = {name: secrets.token_urlsafe(16) for name in [*TENANTS, OTHER_TEAM]}
    settings = GoldSettings(data_dir=scenario.data_dir, api_keys=tokens)
    generator_down = threading.Event()
    with environment(scenario.environment()), stack_on_free_ports(settings) as stack:
        other_team = OtherTeam(stack.generator_url, tokens[OTHER_TEAM], generator_down)
        faults = FaultSchedule(
            stack, generator_down, scenario.fault_interval_s, scenario.down_s, scenario.fault_rounds
        )
        deadline = time.monotonic() + scenario.duration_s
        tenants = [Tenant(name, stack.orchestrator_url, tokens[name], scenario, deadline) for name in TENANTS]
        for thread in [other_team, *tenants]:
            thread.start()
        # here, in the thread that started the stack (FaultSchedule says why); a bounded scenario
        # still sees every kind of fault once, the last ones maybe after the runs
        faults.run(done=lambda: not any(tenant.is_alive() for tenant in tenants))
        time.sleep(2.0)  # the other team's answers once everything is back
        other_team.stopping.set()
        other_team.join()
        outcomes = [o for t in tenants for o in t.outcomes]
        engine = create_engine(stack.env["GOLD_DATABASE_URL"])
        with Session(engine) as session:
            for tenant in tenants:
                for outcome in tenant.outcomes:
                    if outcome.status == "succeeded":
                        outcome.problems = record_problems(
                            session, outcome.run_id, tenant.specs[outcome.run_id]
                        )
        engine.dispose()
        processes = stack_processes(scenario.data_dir)
    return ScenarioReport(
        seconds=time.monotonic() - started,
        runs=outcomes,
        faults=dict(faults.injected),
        fault_errors=faults.errors,
        requests=other_team.figures(),
        processes_found=len(processes),
        processes_left=still_alive(processes | stack_processes(scenario.data_dir)),
    )
