"""The run driver's logic (step order, keyed idempotent steps, resume, cancel, failure messages)
against a real PostgreSQL. The generator, scorer and trainer are stand-ins here: their own tests
and the end-to-end test run the real ones."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from datetime import timedelta

import datasets
import numpy as np
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import func, select

from services.orchestrator.driver import RunDriver
from services.orchestrator.main import create_app
from services.orchestrator.service import create_run
from services.orchestrator.stages import teacher as teacher_stage
from services.orchestrator.stages import train as train_stage
from shared.db.base import utcnow
from shared.db.models import Iteration, Metric, Rejection, Run, Sample, Step
from shared.errors import UpstreamError
from shared.jobs import train_queue
from shared.logging import make_handler
from shared.names import Diagnostic
from shared.schemas.generation import (
    AnswerRequest,
    AnswerResponse,
    AttributesResponse,
    ClassifyResponse,
    ClassPrediction,
    GeneratedSample,
    GenerateResponse,
    GenerationSettingsUsed,
    ParseStats,
    PromptExamples,
    Rejected,
    Usage,
)
from shared.schemas.scoring import EmbedResponse, EnergyResponse, SelectResponse
from shared.schemas.training import TrainResult
from shared.spec import RunSpec
from tests.integration.orchestrator.test_health_and_metrics import samples
from tests.support import stand_in_checkpoint


class StandInGenerator:
    def __init__(self) -> None:
        self.calls: list = []
        self.fail_on_call: int | None = None
        self.failure: Exception = UpstreamError("generator", "connection refused", 503, retryable=True)

    def generate(self, request):
        self.calls.append(request)
        if self.fail_on_call == len(self.calls):
            raise self.failure
        labels = request.task.labels or ["an answer"]  # seq2seq: one output for every sample
        samples = []
        for i in range(request.n):
            label = labels[i % len(labels)]
            text = f"{request.mode} sample {len(self.calls)}-{i} that is {label}"
            samples.append(
                GeneratedSample(
                    fields={"text": text, "label": label},
                    label=label,
                    prompt=PromptExamples(examples=[0, 1], feedback=list(range(len(request.feedback)))),
                    text_hash=hashlib.sha256(text.encode()).hexdigest()[:32],
                )
            )
        return GenerateResponse(
            samples=samples,
            stats=ParseStats(
                requested=request.n, completions=request.n + 1, accepted=request.n, rejected={"too_short": 1}
            ),
            rejections=[Rejected(reason="too_short", text="ok")],
            usage=Usage(prompt_tokens=10, completion_tokens=20),
            settings=GenerationSettingsUsed(
                model="stand-in",
                engine="stand-in",
                temperature=0.8,
                top_p=0.95,
                top_k=50,
                max_tokens=64,
                seed=request.sampling.seed,
            ),
        )

    def attributes(self, request):
        return AttributesResponse(
            attributes=["jazz", "war films", "a teenager's blog"][: request.n],
            usage=Usage(prompt_tokens=10, completion_tokens=20),
            settings=GenerationSettingsUsed(
                model="stand-in", engine="stand-in", temperature=0.9, top_p=0.95, top_k=50, max_tokens=96
            ),
        )

    def answer(self, request):
        self.calls.append(request)
        answers = [x["text"].split()[0] for x in request.inputs]  # the question's first word
        return AnswerResponse(
            answers=answers,
            finish_reasons=["stop"] * len(answers),
            usage=Usage(prompt_tokens=10, completion_tokens=2),
            model="stand-in",
            engine="stand-in",
            parameters=1000,
        )

    def classify(self, request):
        return ClassifyResponse(
            predictions=[
                ClassPrediction(label="positive", probabilities={"positive": 0.6, "negative": 0.4})
                for _ in request.inputs
            ],
            model="stand-in",
            engine="stand-in",
        )


class ReadingGenerator(StandInGenerator):
    """A teacher that judges the task: it reads the label off the stand-in sample's text."""

    def classify(self, request):
        labels = [x["text"].rsplit(" ", 1)[-1] for x in request.inputs]
        return ClassifyResponse(
            predictions=[
                ClassPrediction(
                    label=label, probabilities={label: 0.9, ({"positive", "negative"} - {label}).pop(): 0.1}
                )
                for label in labels
            ],
            model="stand-in",
            engine="stand-in",
        )


class StandInScorer:
    def energy(self, request):
        return EnergyResponse(
            checkpoint_id=request.checkpoint_id,
            energies=[-float(i) for i in range(len(request.samples))],
            student_kind="classifier",
        )

    def select(self, request):
        order = sorted(range(len(request.energies)), key=lambda i: request.energies[i])
        low, high = int(request.band[0] * len(order)), int(request.band[1] * len(order))
        picked = [i for i in order[low:high] if i not in request.exclude][: request.count]
        return SelectResponse(selected=picked, low_energy=0.0, high_energy=0.0)

    def embed(self, request):
        """Unit vectors from a hash of each text: equal texts are equal, others nearly orthogonal."""
        vectors = []
        for text in request.texts:
            digest = hashlib.sha256(text.encode()).digest()
            vector = np.frombuffer(digest * 12, dtype=np.uint8)[:384].astype(np.float32) - 127.5
            vectors.append((vector / np.linalg.norm(vector)).tolist())
        return EmbedResponse(model="stand-in", dimensions=384, embeddings=vectors)


class TrainJobs(list):
    holdout: dict[int, float]

    def __init__(self) -> None:
        super().__init__()
        self.holdout = {}


@pytest.fixture
def stand_in_trainer(monkeypatch, session_factory):
    """Writes what the real trainer job writes (a checkpoint row and metrics); the loop students'
    held-out accuracy on generated data is taken from `jobs.holdout` by iteration when given."""
    jobs = TrainJobs()

    def run_train_job(ctx, job):
        jobs.append(job)
        checkpoint_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{job.run_id}/{job.iteration}/{job.role}")
        with session_factory() as session, session.begin():
            session.merge(stand_in_checkpoint(job, checkpoint_id))
            session.merge(
                Metric(
                    id=uuid.uuid5(checkpoint_id, "acc"),
                    run_id=uuid.UUID(job.run_id),
                    iteration=job.iteration,
                    name="eval_accuracy",
                    value=0.5,
                )
            )
            if job.iteration in jobs.holdout:
                session.merge(
                    Metric(
                        id=uuid.uuid5(checkpoint_id, "holdout"),
                        run_id=uuid.UUID(job.run_id),
                        iteration=job.iteration,
                        name="holdout_accuracy",
                        value=jobs.holdout[job.iteration],
                    )
                )
        wrong = {"input": {"text": f"a review the {job.role} student got wrong"}, "expected": "negative"}
        return TrainResult(
            checkpoint_id=str(checkpoint_id),
            metrics={"eval_accuracy": 0.5},
            seconds=0.1,
            examples_per_second=1.0,
            extra={
                "evaluation_errors": {
                    "wrong": 1,
                    "shown": [wrong | {"answered": "positive"}],
                    "confusion": {"negative": {"positive": 1}},
                }
            },
        )

    monkeypatch.setattr(train_stage, "run_train_job", run_train_job)
    return jobs


@pytest.fixture
def make_driver(orchestrator_settings, session_factory, redis_url):
    def make(generator=None, scorer=None, metrics=None, **overrides):
        settings = orchestrator_settings.model_copy(update={"dependency_patience_s": 3.0, **overrides})
        queue = train_queue(Redis.from_url(redis_url))
        return RunDriver(
            settings,
            session_factory,
            queue,
            generator or StandInGenerator(),
            scorer or StandInScorer(),
            metrics,
        )

    return make


def _submit(spec: dict, session_factory, settings) -> uuid.UUID:
    with session_factory() as session, session.begin():
        return create_run(RunSpec.model_validate(spec), session=session, settings=settings).id


def _count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def test_gold_run_stores_every_step(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    generator = ReadingGenerator()  # a teacher that judges the task: its check is trusted
    driver = make_driver(generator)
    run_id = _submit(spec, session_factory, orchestrator_settings)
    driver.drive(run_id)
    with session_factory() as session:
        run = session.get(Run, run_id)
        assert run.status == "succeeded", run.error
        assert run.progress == 1.0
        for i in (1, 2):
            assert (
                _count(
                    session, Sample, Sample.run_id == run_id, Sample.iteration == i, Sample.kind == "train"
                )
                == 8
            )
            ood = Sample.run_id == run_id, Sample.iteration == i, Sample.kind == "ood"
            assert _count(session, Sample, *ood) == 4
            assert _count(session, Sample, *ood, Sample.energy.is_not(None)) == 4
            assert (
                _count(
                    session,
                    Sample,
                    Sample.run_id == run_id,
                    Sample.iteration == i,
                    Sample.energy.is_not(None),
                )
                == 12
            )
            # band [0.5, 0.8) of 4 energies = indices 2..3 -> 1 sample (int(3.2) = 3)
            assert _count(session, Sample, *ood, Sample.selected) == 1
        iterations = {
            it.index: it for it in session.scalars(select(Iteration).where(Iteration.run_id == run_id))
        }
        assert sorted(iterations) == [0, 1, 2, 3]  # teacher baseline, 2 loop iterations, final student
        assert set(iterations[1].timings) == {
            "generate_train",
            "generate_ood",
            "verify",
            "train",
            "score",
            "select",
        }
        assert iterations[1].parse_stats["train"]["rejected"] == {"too_short": 1}
        assert iterations[1].checkpoint_id is not None
        teacher = session.scalar(
            select(Metric.value).where(Metric.run_id == run_id, Metric.name == "teacher_eval_accuracy")
        )
        assert 0.0 <= teacher <= 1.0
        assert _count(session, Step, Step.run_id == run_id, Step.status == "done") == 15  # + attributes
        # The stages write every diagnostic the renderers read (by the same names: shared.diagnostics).
        for i in (1, 2):
            stored = select(Metric.name).where(Metric.run_id == run_id, Metric.iteration == i)
            written = set(session.scalars(stored))
            assert set(Diagnostic) <= written, set(Diagnostic) - written
    # feedback of iteration 1 goes into the training prompt of iteration 2, and earlier hashes are excluded
    second_train = [c for c in generator.calls if c.mode == "train"][1]
    assert len(second_train.feedback) == 1
    assert len(second_train.exclude_hashes) == 8 + 4
    assert [j.role for j in stand_in_trainer] == ["loop", "loop", "final"]
    assert stand_in_trainer[1].init_checkpoint_id is not None  # continued training


def test_vanilla_spends_the_same_budget_without_feedback(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec["loop"]["feedback"] = False
    generator = StandInGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator).drive(run_id)
    assert [c.mode for c in generator.calls] == ["train", "train"]
    assert all(c.n == 12 and not c.feedback for c in generator.calls)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        assert _count(session, Sample, Sample.run_id == run_id, Sample.kind == "ood") == 0


def test_crash_mid_run_resumes_without_duplicates(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    generator = StandInGenerator()
    generator.fail_on_call = 3  # iteration 2's training generation
    generator.failure = RuntimeError("process died")
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "failed"
        session.execute(Run.__table__.update().where(Run.id == run_id).values(status="running", error=None))
        session.commit()
    generator.fail_on_call = None
    make_driver(generator).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        assert _count(session, Sample, Sample.run_id == run_id, Sample.kind == "train") == 16
        assert _count(session, Sample, Sample.run_id == run_id, Sample.kind == "ood") == 8
    # iteration 1 was not generated again: 2 calls, the failed one, then iteration 2's two
    assert len(generator.calls) == 5


def test_redis_gone_mid_step_leaves_the_run_to_resume(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer, monkeypatch
):
    """Redis down for longer than its connection's retries while a training step polls its job: the
    step is interrupted like one that lost Postgres (the run stays running and resumes), instead
    of failing the run with "ConnectionError"."""
    trained = train_stage.run_train_job

    def redis_down_once(ctx, job):
        if not getattr(redis_down_once, "failed", False):
            redis_down_once.failed = True  # type: ignore[attr-defined]
            raise RedisConnectionError("Error 111 connecting to unix socket")
        return trained(ctx, job)

    monkeypatch.setattr(train_stage, "run_train_job", redis_down_once)
    generator = StandInGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    with pytest.raises(RedisConnectionError):
        make_driver(generator).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "running"
    make_driver(generator).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"


def test_unreachable_generator_fails_naming_it(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    generator = StandInGenerator()
    generator.fail_on_call = 1
    calls = []

    def always_down(request):
        calls.append(request)
        raise UpstreamError("generator", "ConnectError calling /v1/generate", 503, retryable=True)

    generator.generate = always_down
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator, dependency_patience_s=2.0).drive(run_id)
    with session_factory() as session:
        run = session.get(Run, run_id)
    assert run.status == "failed"
    assert run.error.startswith("generator: ConnectError") and "gave up after" in run.error
    assert len(calls) >= 2  # retried with backoff before giving up


def test_cancel_while_running(make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer):
    generator = StandInGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    original = generator.generate

    def cancel_then_generate(request):
        with session_factory() as session, session.begin():
            session.get(Run, run_id).status = "cancelling"
        return original(request)

    generator.generate = cancel_then_generate
    make_driver(generator).drive(run_id)
    with session_factory() as session:
        run = session.get(Run, run_id)
        assert run.status == "cancelled" and run.finished_at is not None
        assert _count(session, Sample, Sample.run_id == run_id, Sample.kind == "ood") == 0


def test_report_renders_plots_for_gold_and_vanilla(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer, api
):
    gold = _submit(spec, session_factory, orchestrator_settings)
    make_driver().drive(gold)
    spec["loop"]["feedback"] = False
    vanilla = _submit(spec, session_factory, orchestrator_settings)
    make_driver().drive(vanilla)
    response = api.get(f"/runs/{gold}/report", params={"compare": str(vanilla)})
    assert response.status_code == 200
    page = response.text
    assert page.count("data:image/png;base64,") == 5  # metric, energies, labels, OOD, diversity
    assert "teacher few-shot accuracy" in page and "vanilla" in page
    assert "<td>2</td>" in page  # the feedback table lists iteration-2 picks
    assert "listed by the teacher: jazz, war films, a teenager&#x27;s blog." in page  # the OOD subjects
    # the stand-in teacher says "positive" to everything: its labels and its feedback check unused
    assert "kept as asked (teacher at chance)" in page and "<td>withheld</td>" in page
    # what the final student got wrong on the real data, beside the generated samples
    assert "a review the final student got wrong" in page and "<th>answered positive</th>" in page


@pytest.mark.parametrize("policy", ["keep", "relabel", "drop"])
def test_teacher_verification_policies(
    policy, make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    # the stand-in teacher says "positive" (p=0.6) for everything; half the samples asked for "negative"
    # (such a teacher is not trusted by default: the gate is off here, and tested below)
    spec["verification"] = {"policy": policy}
    spec.setdefault("teacher", {})["min_kappa"] = None
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver().drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        generated = session.scalars(
            select(Sample).where(Sample.run_id == run_id, Sample.kind != "seed")
        ).all()

        def metric(name: str) -> list[float]:
            return session.scalars(
                select(Metric.value).where(Metric.run_id == run_id, Metric.name == name)
            ).all()

        agreement = metric("teacher_agreement")
        fidelity = metric("label_fidelity_after_verification")
    assert agreement == [0.5, 0.5]
    # what is trained on agrees with the teacher: all of it, unless the requested labels are kept
    assert fidelity == ([0.5, 0.5] if policy == "keep" else [1.0, 1.0])
    assert all(s.teacher_probs == {"positive": 0.6, "negative": 0.4} for s in generated)
    negatives = [s for s in generated if s.requested_label == "negative"]
    assert len(negatives) == len(generated) // 2
    if policy == "keep":
        assert all(s.label == "negative" and not s.excluded for s in negatives)
    if policy == "relabel":
        assert all(
            s.label == "positive" and s.fields["label"] == "positive" and not s.excluded for s in negatives
        )
    if policy == "drop":
        assert all(s.excluded for s in negatives) and not any(
            s.excluded for s in generated if s not in negatives
        )


def test_soft_labels_need_verification(api, spec):
    spec["student"] = {"distill_weight": 0.5}
    spec["verification"] = {"policy": "off"}
    response = api.post("/runs", json=spec)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["student"]
    # without soft labels asked for, verification off turns the default distillation off
    del spec["student"]
    created = api.post("/runs", json=spec)
    assert created.status_code == 201, created.text
    stored = created.json()["spec"]
    assert stored["verification"]["policy"] == "off" and stored["student"]["distill_weight"] == 0.0


def test_time_budget_skips_later_iterations_and_the_reference_is_trained_apart(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec["loop"]["max_seconds"] = 60
    spec["evaluation"]["reference_path"] = spec["evaluation"]["path"]
    run_id = _submit(spec, session_factory, orchestrator_settings)
    with session_factory() as session, session.begin():  # as if it had been running for an hour
        run = session.get(Run, run_id)
        run.status, run.started_at = "running", utcnow() - timedelta(hours=1)
    make_driver().drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        skipped = session.scalars(select(Step).where(Step.run_id == run_id, Step.status == "skipped")).all()
        assert {(s.iteration, s.stage) for s in skipped} == {
            (2, stage) for stage in ("generate_train", "generate_ood", "verify", "train", "score", "select")
        }
        assert "loop.max_seconds (60 s)" in skipped[0].result["reason"]
        iterations = {
            it.index: it for it in session.scalars(select(Iteration).where(Iteration.run_id == run_id))
        }
        assert sorted(iterations) == [0, 1, 3] and iterations[0].checkpoint_id is None
    assert [(j.iteration, j.role) for j in stand_in_trainer] == [(0, "reference"), (1, "loop"), (3, "final")]


def test_seq2seq_teacher_baseline_answers_in_batches_scored_like_the_students(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer, fixture_data, monkeypatch
):
    monkeypatch.setattr(teacher_stage, "TEACHER_BATCH", 2)
    spec["task"] = {
        "type": "seq2seq",
        "description": "Answer a question.",
        "input_fields": ["text"],
        "output_field": "label",
        "seed_examples": [
            {"text": "Who wrote Hamlet?", "label": "Shakespeare"},
            {"text": "What is the capital of Peru?", "label": "Lima"},
        ],
    }
    spec["evaluation"] = {
        "path": str(fixture_data / "qa" / "validation.jsonl"),
        "input_map": {"text": "question"},
        "label_field": "answers.text",
        "limit": 5,
    }
    generator = StandInGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator).drive(run_id)
    asked = [c for c in generator.calls if isinstance(c, AnswerRequest)]
    assert [len(c.inputs) for c in asked] == [2, 2, 1]
    assert all(c.max_tokens == RunSpec.model_validate(spec).teacher.max_tokens for c in asked)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        names = set(
            session.scalars(select(Metric.name).where(Metric.run_id == run_id, Metric.iteration == 0))
        )
    assert {"teacher_eval_exact_match", "teacher_eval_f1", "teacher_eval_rouge_l"} <= names
    assert {"teacher_seconds_per_example", "teacher_parameters"} <= names


def _hub_spec(spec: dict, dataset: str) -> dict:
    """A run that measures the teacher only, on a Hugging Face dataset's validation split."""
    spec["loop"] = {"iterations": 0}
    spec["evaluation"] = {
        "dataset": dataset,
        "split": "validation",
        "input_map": {"text": "sentence"},
        "label_field": "label",
    }
    return spec


def test_the_teacher_baseline_reads_a_hub_dataset_by_its_class_names(
    make_driver, spec, session_factory, orchestrator_settings, tmp_path, monkeypatch
):
    # The hub is out of reach (HF_HUB_OFFLINE=1): `datasets` reads a folder named as the hub id in
    # the working directory first, as it reads its own download.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    folder = tmp_path / "acme" / "reviews"
    folder.mkdir(parents=True)
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    rows = [{"sentence": f"review {i}", "label": int(i < 3)} for i in range(4)]  # 3 positive, 1 negative
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "validation.parquet"))
    run_id = _submit(_hub_spec(spec, "acme/reviews"), session_factory, orchestrator_settings)
    make_driver().drive(run_id)  # the stand-in teacher answers "positive" to everything
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        accuracy = session.scalar(
            select(Metric.value).where(Metric.run_id == run_id, Metric.name == "teacher_eval_accuracy")
        )
    assert accuracy == pytest.approx(0.75)


def test_a_hub_dataset_that_does_not_load_fails_the_run_naming_it(
    make_driver, spec, session_factory, orchestrator_settings
):
    run_id = _submit(_hub_spec(spec, "nobody/missing"), session_factory, orchestrator_settings)
    make_driver().drive(run_id)
    with session_factory() as session:
        run = session.get(Run, run_id)
    assert run.status == "failed"
    assert (
        "evaluation.dataset: Hugging Face dataset nobody/missing (split validation) could not be loaded"
        in (run.error)
    )
    assert "Traceback" not in run.error


@pytest.mark.parametrize("policy", ["relabel", "drop"])
def test_verification_leaves_the_labels_alone_when_the_teacher_judges_the_task_at_chance(
    policy, make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec["verification"] = {"policy": policy, "min_confidence": 0.7}
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver().drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        generated = session.scalars(
            select(Sample).where(Sample.run_id == run_id, Sample.kind == "train")
        ).all()
        metrics = {
            m.name: m.value
            for m in session.scalars(select(Metric).where(Metric.run_id == run_id, Metric.iteration == 1))
        }
    assert metrics["verification_kappa"] == 0.0 and metrics["verification_withheld"] == 1.0
    assert metrics["teacher_agreement"] == 0.5
    # nothing relabelled or left out, and no distribution stored for a student to distil
    assert all(s.label == s.requested_label and not s.excluded and s.teacher_probs is None for s in generated)


@pytest.mark.parametrize("check", ["relabel", "drop"])
def test_feedback_is_checked_by_the_teacher_before_it_goes_into_a_prompt(
    check, make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    # the whole OOD batch is the band; the stand-in teacher says "positive" (p=0.6) for everything,
    # and half the OOD samples were asked to be "negative" (such a teacher is not trusted by
    # default: the gate on its judgement is off here, and tested below)
    spec["loop"] |= {"selection_band": [0.0, 1.0], "feedback_per_iteration": 4, "feedback_check": check}
    spec.setdefault("teacher", {})["min_kappa"] = None
    spec["verification"] = {"policy": "off"}  # the check alone
    generator = StandInGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator).drive(run_id)
    ood = [c for c in generator.calls if c.mode == "ood"]
    assert all(c.attributes == ["jazz", "war films", "a teenager's blog"] for c in ood)
    fed = [c for c in generator.calls if c.mode == "train"][1].feedback
    assert [f["label"] for f in fed] == ["positive"] * (4 if check == "relabel" else 2)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        metrics = {
            m.name: m.value
            for m in session.scalars(select(Metric).where(Metric.run_id == run_id, Metric.iteration == 1))
        }
        selected = session.scalars(select(Sample).where(Sample.run_id == run_id, Sample.selected)).all()
    assert metrics["feedback_checked"] == 4 and metrics["feedback_teacher_agreement"] == 0.5
    assert metrics["feedback_relabelled"] == (2 if check == "relabel" else 0)
    assert metrics["feedback_dropped"] == (0 if check == "relabel" else 2)
    assert metrics["feedback_contradicted"] == 0
    # the report's feedback table: requested label, the teacher's label and its confidence
    assert all(
        s.teacher_probs == {"positive": 0.6, "negative": 0.4} and s.label == "positive" for s in selected
    )
    assert {s.requested_label for s in selected} == (
        {"negative", "positive"} if check == "relabel" else {"positive"}
    )


@pytest.mark.parametrize(
    ("generator", "kappa"), [(StandInGenerator, 0.0), (ReadingGenerator, 1.0)], ids=["at-chance", "judges"]
)
def test_feedback_is_withheld_while_the_teacher_judges_the_task_no_better_than_chance(
    generator, kappa, make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec["loop"] |= {"selection_band": [0.0, 1.0], "feedback_per_iteration": 4}
    stand_in = generator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(stand_in).drive(run_id)
    fed = [c for c in stand_in.calls if c.mode == "train"][1].feedback
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        metrics = {
            m.name: m.value
            for m in session.scalars(select(Metric).where(Metric.run_id == run_id, Metric.iteration == 1))
        }
        ood = session.scalars(
            select(Sample).where(Sample.run_id == run_id, Sample.kind == "ood", Sample.iteration == 1)
        ).all()
        judged = session.scalar(
            select(Iteration.parse_stats).where(Iteration.run_id == run_id, Iteration.index == 1)
        )["teacher_judgement"]
    assert metrics["teacher_kappa"] == kappa
    # every OOD sample is judged (requested label, teacher's label), the kappa's input
    assert sorted(judged) == sorted(
        [s.requested_label, "positive" if kappa == 0.0 else s.requested_label] for s in ood
    )
    # a teacher at chance relabels nothing, feeds nothing back and leaves no distribution behind
    assert all(s.label == s.requested_label for s in ood)
    assert all(bool(s.teacher_probs) == (kappa == 1.0) for s in ood)
    assert metrics["feedback_withheld"] == (1.0 if kappa == 0.0 else 0.0)
    assert len(fed) == (0 if kappa == 0.0 else 4)
    assert not any(s.selected for s in ood) if kappa == 0.0 else sum(s.selected for s in ood) == 4


class RepeatingGenerator(StandInGenerator):
    """Every other sample repeats one text, call after call: a near duplicate of the pool."""

    def generate(self, request):
        response = super().generate(request)
        for i, sample in enumerate(response.samples):
            if i % 2 == 0:
                sample.fields["text"] = f"the same {request.mode} review, sample {i}"
        return response


def test_near_duplicates_of_the_pool_are_rejected_and_diversity_is_recorded(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(RepeatingGenerator()).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        reasons = session.scalars(
            select(Rejection.reason).where(Rejection.run_id == run_id, Rejection.iteration == 2)
        ).all()
        kept = session.scalars(select(Sample).where(Sample.run_id == run_id, Sample.iteration == 2)).all()
        metrics = {
            (m.iteration, m.name): m.value
            for m in session.scalars(select(Metric).where(Metric.run_id == run_id))
        }
        seeds = session.scalars(select(Sample).where(Sample.run_id == run_id, Sample.kind == "seed")).all()
    # iteration 2 repeats iteration 1's even samples: 4 of 8 train and 2 of 4 OOD are rejected
    assert reasons.count("near_duplicate_of_pool") == 6
    assert len(kept) == 6 and all(s.embedding is not None and len(s.embedding) == 384 for s in kept)
    assert all(s.embedding is not None for s in seeds)
    assert metrics[(2, "train_near_duplicates")] == 4 and metrics[(1, "train_near_duplicates")] == 0
    for name in (
        "distinct_2",
        "embedding_spread",
        "pool_spread",
        "pool_coverage",
        "ood_novelty",
        "train_novelty",
    ):
        assert 0.0 <= metrics[(1, name)] <= 1.0, name
    assert (1, "ood_energy_gap") in metrics


class NoUsableOODGenerator(StandInGenerator):
    """Every OOD sample is rejected by the task's checks, as a small teacher's can be on SQuAD."""

    def generate(self, request):
        response = super().generate(request)
        if request.mode != "ood":
            return response
        stats = response.stats.model_copy(
            update={"accepted": 0, "rejected": {"answer_not_in_context": request.n}}
        )
        rejections = [Rejected(reason="answer_not_in_context", text="x") for _ in range(request.n)]
        return response.model_copy(update={"samples": [], "stats": stats, "rejections": rejections})


def test_an_empty_ood_batch_feeds_nothing_back_and_the_run_goes_on(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(NoUsableOODGenerator()).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        ood = session.scalars(select(Sample).where(Sample.run_id == run_id, Sample.kind == "ood")).all()
        reasons = session.scalars(
            select(Rejection.reason).where(Rejection.run_id == run_id, Rejection.kind == "ood")
        ).all()
    assert ood == [] and reasons and set(reasons) == {"answer_not_in_context"}


def test_teacher_baseline_is_measured_once_and_reused(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    class CountingGenerator(StandInGenerator):
        classified = 0

        def classify(self, request):
            CountingGenerator.classified += len(request.inputs)
            return super().classify(request)

    spec["loop"] |= {"iterations": 1, "feedback": False}
    first = _submit(spec, session_factory, orchestrator_settings)
    make_driver(CountingGenerator()).drive(first)
    measured = CountingGenerator.classified
    # the evaluation rows (limit 20) and verification's 12 generated samples (vanilla: 8 + the OOD
    # budget's 4); vanilla checks no feedback
    assert measured == 20 + 12
    spec["name"] = "another mode, same teacher and data"
    second = _submit(spec, session_factory, orchestrator_settings)
    make_driver(CountingGenerator()).drive(second)
    assert CountingGenerator.classified == measured + 12  # its own verification only
    with session_factory() as session:
        steps_done = {s.run_id: s for s in session.scalars(select(Step).where(Step.stage == "teacher_eval"))}
        values = session.scalars(select(Metric.value).where(Metric.name == "teacher_eval_accuracy")).all()
    assert steps_done[second].result["reused_from"] == str(first)
    assert len(values) == 2 and values[0] == values[1]


def test_patience_stops_the_loop_once_held_out_accuracy_stops_improving(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec["loop"] |= {"iterations": 4, "patience": 1}
    stand_in_trainer.holdout.update({1: 0.8, 2: 0.75, 3: 0.9})
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver().drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
        skipped = session.scalars(select(Step).where(Step.run_id == run_id, Step.status == "skipped")).all()
    assert {s.iteration for s in skipped} == {3, 4}
    assert "loop.patience" in skipped[0].result["reason"] and "0.800, 0.750" in skipped[0].result["reason"]
    assert [(j.iteration, j.role) for j in stand_in_trainer] == [(1, "loop"), (2, "loop"), (5, "final")]


def test_metrics_after_a_run_count_steps_by_stage_and_runs_by_status(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    app = create_app(orchestrator_settings, drive_runs=False)
    with TestClient(app) as client:
        generator = StandInGenerator()
        generator.fail_on_call = 1  # one retried generator call
        run_id = _submit(spec, session_factory, orchestrator_settings)
        make_driver(generator, metrics=app.state.metrics).drive(run_id)
        scrape = samples(client.get("/metrics").text)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
    assert scrape[("gold_orchestrator_runs", (("status", "succeeded"),))] == 1
    assert scrape[("gold_orchestrator_runs", (("status", "queued"),))] == 0

    def steps(stage: str) -> float:
        return scrape[("gold_orchestrator_step_seconds_count", (("outcome", "done"), ("stage", stage)))]

    assert steps("train") == 2 and steps("generate_train") == 2 and steps("final_train") == 1
    assert scrape[("gold_orchestrator_step_seconds_sum", (("outcome", "done"), ("stage", "score")))] > 0
    assert scrape[("gold_orchestrator_retries_total", (("what", "generator"),))] == 1
    assert scrape[("gold_orchestrator_train_queue_depth", ())] == 0


def test_a_failed_step_is_timed_as_failed(make_driver, spec, session_factory, orchestrator_settings):
    generator = StandInGenerator()
    generator.fail_on_call = 1
    generator.failure = UpstreamError("generator", "bad request", 400)  # not retryable: the step fails
    run_id = _submit(spec, session_factory, orchestrator_settings)
    driver = make_driver(generator)
    driver.drive(run_id)
    failed = {"stage": "generate_train", "outcome": "failed"}
    assert driver.metrics.registry.get_sample_value("gold_orchestrator_step_seconds_count", failed) == 1


def test_json_log_lines_carry_run_id_iteration_and_stage(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    stream = io.StringIO()
    handler = make_handler("json")
    handler.setStream(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    generator = StandInGenerator()
    original = generator.generate

    def generate(request):  # runs in the driver's pool of service-call threads
        logging.getLogger("stand_in.generator").info("generating %d", request.n)
        return original(request)

    generator.generate = generate
    try:
        run_id = _submit(spec, session_factory, orchestrator_settings)
        make_driver(generator).drive(run_id)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    steps = [
        r for r in lines if r["name"] == "services.orchestrator.driver" and ": iteration " in r["message"]
    ]
    assert len(steps) == 15
    assert all(r["run_id"] == str(run_id) and r["levelname"] == "INFO" and "timestamp" in r for r in steps)
    assert [(r["iteration"], r["stage"]) for r in steps][:3] == [
        (0, "teacher_eval"),
        (0, "attributes"),
        (1, "generate_train"),
    ]
    calls = [r for r in lines if r["name"] == "stand_in.generator"]
    assert [(r["run_id"], r["iteration"], r["stage"]) for r in calls] == [
        (str(run_id), 1, "generate_train"),
        (str(run_id), 1, "generate_ood"),
        (str(run_id), 2, "generate_train"),
        (str(run_id), 2, "generate_ood"),
    ]
    done = [r for r in lines if r["message"] == f"run {run_id} succeeded"]
    assert len(done) == 1 and done[0]["run_id"] == str(run_id) and "stage" not in done[0]


def test_a_run_whose_stored_spec_this_version_cannot_read_fails_with_the_field_named(
    make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    run_id = _submit(spec, session_factory, orchestrator_settings)
    with session_factory() as session, session.begin():  # as stored by another version
        run = session.get(Run, run_id)
        run.spec = {**run.spec, "loop": {**run.spec["loop"], "retired_setting": 0.1}}
    make_driver().drive(run_id)
    with session_factory() as session:
        run = session.get(Run, run_id)
        assert run.status == "failed" and run.finished_at is not None
        assert "loop.retired_setting: Extra inputs are not permitted" in run.error


class RecordingGenerator(StandInGenerator):
    """Records every request, whatever the endpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def generate(self, request):
        self.requests.append(request)
        return super().generate(request)

    def attributes(self, request):
        self.requests.append(request)
        return super().attributes(request)

    def classify(self, request):
        self.requests.append(request)
        return super().classify(request)


@pytest.mark.parametrize(("teacher", "asked"), [("default", None), ("second", "second")])
def test_the_specs_teacher_is_asked_for_generation_verification_and_the_baseline(
    teacher, asked, make_driver, spec, session_factory, orchestrator_settings, stand_in_trainer
):
    spec.setdefault("teacher", {}).update(model=teacher, min_kappa=None)
    spec["verification"] = {"policy": "relabel"}
    generator = RecordingGenerator()
    run_id = _submit(spec, session_factory, orchestrator_settings)
    make_driver(generator).drive(run_id)
    with session_factory() as session:
        assert session.get(Run, run_id).status == "succeeded"
    kinds = {type(r).__name__ for r in generator.requests}
    assert kinds == {"GenerateRequest", "AttributesRequest", "ClassifyRequest"}
    # the teacher baseline and the verification are both classify requests: more than one
    assert sum(type(r).__name__ == "ClassifyRequest" for r in generator.requests) >= 2
    assert {r.model for r in generator.requests} == {asked}
