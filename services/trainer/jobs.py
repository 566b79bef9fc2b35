"""The trainer's RQ job. It takes ids only and reloads everything from Postgres, so it can run
again at any time: the checkpoint id and folder are deterministic per (run, iteration, role) and
the Checkpoint + Metric rows are upserted in one transaction at the end."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from transformers.utils import logging as hf_logging

from services.trainer.config import EXIT_WITH_PARENT_ENV, TrainerSettings, get_trainer_settings
from services.trainer.launcher import launch
from services.trainer.students import Example
from services.trainer.train import evaluate_few_shot, train
from services.trainer.train_config import TrainConfig, config_from_spec, evaluation_items
from shared.artifacts import ArtifactStore
from shared.checkpoints import CheckpointNotFound, checkpoint_uuid, read_metadata
from shared.db.metrics import upsert_metrics
from shared.db.models import Checkpoint, Run, Sample
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.evaluation_data import load_reference
from shared.logging import configure_logging, log_context
from shared.names import REFERENCE_EXAMPLES, TRAIN_EXAMPLES_PER_S, Stage, fewshot_metric, reference_metric
from shared.schemas.training import TrainJob, TrainResult
from shared.spec import RunSpec

logger = logging.getLogger(__name__)

# The run's stage each training role is (what the job's log lines carry as `stage`).
ROLE_STAGES = {
    "loop": Stage.TRAIN,
    "final": Stage.FINAL_TRAIN,
    "reference": Stage.REFERENCE_TRAIN,
    "fewshot": Stage.STUDENT_EVAL,
}

_watchdog_started = threading.Event()


def _exit_with_parent() -> None:
    """A work horse lives in its own process group, so a kill -9 of the worker leaves it running
    with nobody sending heartbeats. RQ then re-runs the abandoned job; this stops the orphan first
    so two copies never train the same checkpoint. The worker's pid comes from the environment:
    the horse may already be orphaned when this runs (imports take seconds)."""
    expected = os.environ.get(EXIT_WITH_PARENT_ENV)
    if not expected or _watchdog_started.is_set():
        return
    _watchdog_started.set()

    def orphaned() -> bool:
        return os.getppid() != int(expected)

    def leave() -> None:
        logger.error("trainer worker %s is gone: abandoning the job (RQ will run it again)", expected)
        os._exit(70)

    if orphaned():
        leave()

    def watch() -> None:
        while not orphaned():
            time.sleep(2.0)
        leave()

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _report(stage: str, **values: Any) -> None:
    """Progress in job.meta, for anyone watching the queue."""
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        job.meta.update({"stage": stage, **values})
        job.save_meta()


def _report_epoch(epoch: int, epochs: int) -> None:
    """After each epoch: the orchestrator shows "2 of 4 epochs" on the run."""
    _report("training", epoch=epoch, epochs=epochs)


def _examples(rows: list[Sample]) -> list[Example]:
    return [Example(fields=dict(r.fields), label=r.label, teacher_probs=r.teacher_probs) for r in rows]


def _first_trained_in(sample: Sample) -> int:
    """The iteration whose loop student first trains on a generated sample: an OOD batch joins in
    the iteration after its own."""
    return sample.iteration + 1 if sample.kind == "ood" else sample.iteration


def _generated_examples(
    session: Session, job: TrainJob, spec: RunSpec
) -> tuple[list[Example], list[Example]]:
    """The run's generated samples (for the loop's student: up to the job's iteration, without its
    OOD batch), split into training and held-out examples as the generate step marked them; a loop
    student trains on its newest student.loop_window iterations' samples only."""
    query = (
        select(Sample)
        .where(Sample.run_id == uuid.UUID(job.run_id))
        .order_by(Sample.iteration, Sample.kind, Sample.position)
    )
    # Samples the teacher-verification step left out (Sample.excluded) are never trained or scored on.
    rows = [r for r in session.scalars(query) if not r.excluded]
    if job.role == "loop":
        # The iteration's own OOD batch is left out: the student scores it next, and free energy
        # tells unfamiliar samples apart only on samples it has not been trained on. It joins the
        # training data from the next iteration on (and the final student's).
        rows = [r for r in rows if _first_trained_in(r) <= job.iteration]
    train = [r for r in rows if not r.holdout]
    window = spec.student.loop_window
    if job.role == "loop" and window is not None:
        # The newest iterations' samples and the human seeds. The held-out samples stay all of
        # them: patience compares the loop students' scores on one growing set, not on each window's few.
        train = [r for r in train if r.kind == "seed" or _first_trained_in(r) > job.iteration - window]
    return _examples(train), _examples([r for r in rows if r.holdout])


def reference_examples(spec: RunSpec) -> tuple[list[Example], list[Example]]:
    """The supervised reference's data: the first N real labelled rows of evaluation.reference_path
    (or reference_split), N being reference_examples or else the run's generation budget (the final
    student trains on every generated sample, OOD ones included); the last holdout_fraction of them
    is held out for early stopping, as generated data is."""
    assert spec.evaluation is not None
    wanted = spec.evaluation.reference_examples or spec.loop.generation_budget
    data = load_reference(spec.evaluation, spec.task, wanted)
    rows = [Example(fields=e.fields, label=e.references[0]) for e in data.examples]
    if len(rows) < 2:
        raise ValueError(f"{data.source}: fewer than 2 usable labelled rows")
    held = min(int(round(len(rows) * spec.loop.holdout_fraction)), len(rows) - 1)
    return rows[: len(rows) - held], rows[len(rows) - held :]


def build_config(
    session: Session, job: TrainJob, spec: RunSpec, settings: TrainerSettings, store: ArtifactStore
) -> TrainConfig:
    """The training config of one job, from the run's spec and its samples in Postgres; the
    checkpoint it continues from is fetched from the artifact store (downloaded when remote)."""
    # Fresh students (final, reference) get the longer epoch budget with early stopping.
    fresh = job.role != "loop"
    if job.role == "reference":
        train_examples, holdout_examples = reference_examples(spec)
    elif job.role == "fewshot":  # the seed examples are the shots; nothing is trained
        train_examples, holdout_examples = [Example(fields=dict(s)) for s in spec.task.seed_examples], []
    else:
        train_examples, holdout_examples = _generated_examples(session, job, spec)

    init_from = None
    if not fresh and spec.student.continue_training and job.init_checkpoint_id:
        init_from = store.fetch(job.init_checkpoint_id)  # CheckpointNotFound: the loop cannot continue
        meta = read_metadata(init_from)
        if meta.student_kind != spec.student_kind:
            raise ValueError(f"init checkpoint is a {meta.student_kind}, the spec wants {spec.student_kind}")

    # Submitting the run checked the evaluation file; one gone since fails the step (naming the
    # field and the file) rather than train a student nobody can compare: a run that "succeeded"
    # without its real-data metrics was dropped from `gold eval`'s statistics unseen.
    evaluation = evaluation_items(spec)

    cid = checkpoint_uuid(job.run_id, job.iteration, job.role)
    return config_from_spec(
        spec,
        settings,
        checkpoint_id=str(cid),
        output_dir=store.local_folder(cid),
        train=train_examples,
        holdout=holdout_examples,
        evaluation=evaluation,
        fresh=fresh,
        soft_labels=job.role != "reference",  # real rows: no teacher
        init_from=init_from,
        metadata={"run_id": job.run_id, "iteration": job.iteration, "role": job.role},
    )


def record(
    session: Session, job: TrainJob, cfg: TrainConfig, result: TrainResult, base_model: str, relpath: str
) -> None:
    """Upsert the Checkpoint row and one Metric row per metric (the caller commits once)."""
    run_id = uuid.UUID(job.run_id)
    values = {
        "path": relpath,
        "student_model": base_model,
        "student_kind": cfg.kind,
        "metrics": result.metrics,
    }
    stmt = insert(Checkpoint).values(
        id=uuid.UUID(result.checkpoint_id), run_id=run_id, iteration=job.iteration, role=job.role, **values
    )
    session.execute(stmt.on_conflict_do_update(index_elements=["run_id", "iteration", "role"], set_=values))
    upsert_metrics(session, run_id, job.iteration, result.metrics)


def _finished(session: Session, checkpoint_id: uuid.UUID, store: ArtifactStore) -> TrainResult | None:
    """The result of a job already done (its row committed, its folder published), or None."""
    row = session.get(Checkpoint, checkpoint_id)
    if row is None:
        return None
    try:
        meta = store.read_metadata(checkpoint_id)
    except CheckpointNotFound as exc:
        logger.warning("checkpoint %s has a row but no published folder (%s): training again", row.id, exc)
        return None
    metrics = {k: float(v) for k, v in (row.metrics or {}).items()}
    return TrainResult(
        checkpoint_id=str(row.id),
        metrics=metrics,
        seconds=0.0,
        examples_per_second=metrics.get(TRAIN_EXAMPLES_PER_S, 0.0),
        extra={"reused": True, "base_model": meta.base_model},
    )


def train_student(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point (services.trainer.jobs.train_student): TrainJob in, TrainResult out."""
    _exit_with_parent()
    hf_logging.disable_progress_bar()  # tqdm bars would flood the worker log
    job = TrainJob.model_validate(payload)
    settings = get_trainer_settings()
    if not logging.getLogger().handlers:  # a spawned work horse: nothing configured its logging yet
        configure_logging(settings.log_level, settings.log_format)
    with log_context(run_id=job.run_id, iteration=job.iteration, stage=ROLE_STAGES[job.role].value):
        return _train_student(job, settings)


def _train_student(job: TrainJob, settings: TrainerSettings) -> dict[str, Any]:
    engine = make_engine(settings.require_database_url())
    factory = make_sessionmaker(engine)
    store = ArtifactStore.from_settings(settings)
    try:
        _report("loading")
        with factory() as session:
            run = session.get(Run, uuid.UUID(job.run_id))
            if run is None:
                raise LookupError(f"run {job.run_id} does not exist")
            spec = RunSpec.model_validate(run.spec)
            cid = checkpoint_uuid(job.run_id, job.iteration, job.role)
            done = _finished(session, cid, store)
            if done is not None:
                logger.info("checkpoint %s already complete: not training again", cid)
                return done.model_dump()
            cfg = build_config(session, job, spec, settings, store)
        logger.info(
            "training %s student for run %s iteration %d (%s): %d train, %d holdout, %d eval examples",
            cfg.kind,
            job.run_id,
            job.iteration,
            job.role,
            len(cfg.train),
            len(cfg.holdout),
            len(cfg.evaluation),
        )
        if job.role == "fewshot":
            result = evaluate_few_shot(cfg)
            result.metrics = {fewshot_metric(name): value for name, value in result.metrics.items()}
            with transaction(factory) as session:
                upsert_metrics(session, uuid.UUID(job.run_id), job.iteration, result.metrics)
            return result.model_dump()
        store.require_writable()  # before training, not after
        _report("training", train_examples=len(cfg.train), epoch=0, epochs=cfg.epochs)
        if settings.trainer_processes > 1:  # rank 0 trains in a child process: no epoch progress
            result = launch(cfg, settings.trainer_processes)
        else:
            result = train(cfg, on_epoch=_report_epoch)
        if job.role == "reference":  # stored at iteration 0 beside the teacher's: name them apart
            result.metrics = {reference_metric(name): value for name, value in result.metrics.items()} | {
                REFERENCE_EXAMPLES: float(len(cfg.train) + len(cfg.holdout))
            }
        relpath = store.publish(result.checkpoint_id)  # uploaded, for a store behind a URL
        with transaction(factory) as session:
            record(session, job, cfg, result, str(result.extra.get("base_model", cfg.model)), relpath)
        _report("done", checkpoint_id=result.checkpoint_id)
        return result.model_dump()
    finally:
        engine.dispose()
