"""A long step says how far it has got on the run (stage_progress, and run.progress moving within the
step), written every few seconds rather than per row: the teacher's baseline by rows answered and
the energy step by samples scored, seen as a poller sees them, against a real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis
from sqlalchemy import select

from services.orchestrator import context, feedback
from services.orchestrator.driver import RunDriver
from services.orchestrator.service import create_run
from services.orchestrator.stages import generate as generate_stage
from services.orchestrator.stages import score as score_stage
from services.orchestrator.stages import teacher as teacher_stage
from services.orchestrator.stages.generate import chunk_seed
from shared.db.models import Run, Sample
from shared.jobs import train_queue
from shared.spec import RunSpec
from tests.integration.orchestrator.test_driver import (  # noqa: F401  (stand_in_trainer: a fixture)
    StandInGenerator,
    StandInScorer,
    stand_in_trainer,
)

pytestmark = pytest.mark.usefixtures("stand_in_trainer")  # it records the students' jobs


class Polled:
    """What GET /runs/{id} says (stage, stage_progress, progress) as each service call comes in."""

    def __init__(self, session_factory) -> None:
        self.session_factory = session_factory
        self.run_id: uuid.UUID | None = None
        self.seen: list[tuple[str | None, str | None, float]] = []

    def __call__(self) -> None:
        with self.session_factory() as session:
            run = session.get(Run, self.run_id)
            self.seen.append((run.stage, run.stage_progress, run.progress))


class PolledGenerator(StandInGenerator):
    def __init__(self, polled: Polled) -> None:
        super().__init__()
        self.polled = polled

    def classify(self, request):
        self.polled()
        return super().classify(request)


class PolledScorer(StandInScorer):
    def __init__(self, polled: Polled) -> None:
        self.polled = polled

    def energy(self, request):
        self.polled()
        return super().energy(request)


def _drive(
    spec, session_factory, orchestrator_settings, redis_url, generator=PolledGenerator
) -> tuple[Polled, PolledGenerator]:
    polled = Polled(session_factory)
    with session_factory() as session, session.begin():
        polled.run_id = create_run(
            RunSpec.model_validate(spec), session=session, settings=orchestrator_settings
        ).id
    teacher = generator(polled)
    driver = RunDriver(
        orchestrator_settings,
        session_factory,
        train_queue(Redis.from_url(redis_url)),
        teacher,
        PolledScorer(polled),
    )
    driver.drive(polled.run_id)
    with session_factory() as session:
        run = session.get(Run, polled.run_id)
        assert run.status == "succeeded", run.error
        assert run.stage_progress is None  # said by a step while it runs, not after
    return polled, teacher


def test_rows_answered_and_samples_scored_show_as_the_steps_go(
    spec, session_factory, orchestrator_settings, redis_url, monkeypatch
):
    monkeypatch.setattr(teacher_stage, "TEACHER_BATCH", 8)
    monkeypatch.setattr(score_stage, "SCORE_BATCH", 5)
    monkeypatch.setattr(context, "PROGRESS_EVERY_S", 0.0)  # every batch, to see each one
    polled, _ = _drive(spec, session_factory, orchestrator_settings, redis_url)
    teacher = [seen for seen in polled.seen if seen[0] == "teacher_eval"]
    assert [text for _, text, _ in teacher] == [None, "8 of 20 rows answered", "16 of 20 rows answered"]
    assert teacher[0][2] < teacher[1][2] < teacher[2][2]  # the run's progress moves within the step
    scored = [text for stage, text, _ in polled.seen if stage == "score"]
    # each iteration scores its 4 OOD and 8 training samples, 5 at a time
    assert scored == [None, "5 of 12 samples scored", "10 of 12 samples scored"] * 2


def test_progress_is_written_every_few_seconds_not_per_batch(
    spec, session_factory, orchestrator_settings, redis_url, monkeypatch
):
    monkeypatch.setattr(teacher_stage, "TEACHER_BATCH", 2)
    polled, _ = _drive(spec, session_factory, orchestrator_settings, redis_url)
    teacher = [text for stage, text, _ in polled.seen if stage == "teacher_eval"]
    assert len(teacher) == 10  # ten batches, answered within a second: one write, after the first
    assert teacher == [None] + ["2 of 20 rows answered"] * 9


class PolledChunks(PolledGenerator):
    def generate(self, request):
        self.polled()
        return super().generate(request)


def test_samples_generated_show_chunk_by_chunk_and_chunks_are_deterministic(
    spec, session_factory, orchestrator_settings, redis_url, monkeypatch
):
    monkeypatch.setattr(generate_stage, "GENERATE_CHUNK", 3)
    monkeypatch.setattr(context, "PROGRESS_EVERY_S", 0.0)
    polled, generator = _drive(spec, session_factory, orchestrator_settings, redis_url, PolledChunks)
    with session_factory() as session:
        kept = session.scalars(
            select(Sample).where(
                Sample.run_id == polled.run_id, Sample.iteration == 1, Sample.kind == "train"
            )
        ).all()
    # 8 training samples, 3 a request: the run says so after each of the first two requests
    train = [text for stage, text, _ in polled.seen if stage == "generate_train"]
    assert train == [None, "3 of 8 samples generated", "6 of 8 samples generated"] * 2
    ood = [text for stage, text, _ in polled.seen if stage == "generate_ood"]
    assert ood == [None, "3 of 4 samples generated"] * 2
    chunks = [c for c in generator.calls if c.mode == "train"][:3]
    assert [c.n for c in chunks] == [3, 3, 2]
    # labels dealt in turn over the step, so each chunk is balanced and the step is as one request
    labels = [label for c in chunks for label in c.labels]
    assert labels == ["negative", "positive"] * 4
    seeds = [c.sampling.seed for c in chunks]
    assert len(set(seeds)) == 3 and seeds[1:] == [chunk_seed(seeds[0], 1), chunk_seed(seeds[0], 2)]
    # a later chunk excludes what the earlier ones produced
    assert len(chunks[2].exclude_hashes) == len(chunks[0].exclude_hashes) + 6
    assert len(kept) == 8 and [s.position for s in kept] == list(range(8))


class RecordingChecks(PolledGenerator):
    def __init__(self, polled: Polled) -> None:
        super().__init__(polled)
        self.verified: list[int] = []  # inputs per classify request of the verify step

    def classify(self, request):
        response = super().classify(request)  # records the run's stage as the request comes in
        if self.polled.seen[-1][0] == "verify":
            self.verified.append(len(request.inputs))
        return response


def test_a_step_bigger_than_one_request_is_generated_and_checked_in_parts(
    spec, session_factory, orchestrator_settings, redis_url, monkeypatch
):
    """The spec allows 10000 samples an iteration, one generate request 512 and one classify request
    4096: a step asks in chunks (GENERATE_CHUNK) and the teacher checks in batches (CHECK_BATCH)."""
    monkeypatch.setattr(feedback, "CHECK_BATCH", 256)
    monkeypatch.setattr(context, "PROGRESS_EVERY_S", 0.0)
    spec["loop"] |= {"iterations": 1, "samples_per_iteration": 600}
    polled, generator = _drive(spec, session_factory, orchestrator_settings, redis_url, RecordingChecks)
    train = [c.n for c in generator.calls if c.mode == "train"]
    assert sum(train) == 600 and max(train) == generate_stage.GENERATE_CHUNK
    # verification: the iteration's 600 training and 4 OOD samples, 256 at a time
    assert generator.verified == [256, 256, 92]
    checks = [text for stage, text, _ in polled.seen if stage == "verify"]
    assert checks == [None] + [f"{n} of 604 samples checked by the teacher" for n in (256, 512)]
