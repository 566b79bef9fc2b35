"""Names several services write and others read: run, iteration and step statuses, the stages of a
run, and the metric names (stored in Postgres and printed by `gold`). Values are stored: keep them
stable. StrEnum members compare equal to their str values, so the str columns take them as is."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # asked to stop: the driver stops at its next check
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A driver claims and drives these; the others are final.
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.CANCELLING)
TERMINAL_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class IterationStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    # An iteration open when its run ends takes the run's end: failed or cancelled.
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # by a stopping rule (loop.max_seconds, loop.patience)


# Steps a resumed run does not run again.
FINISHED_STEP_STATUSES = (StepStatus.DONE, StepStatus.SKIPPED)


class Stage(StrEnum):
    """The stages of a run (step.stage, iteration.timings keys)."""

    TEACHER_EVAL = "teacher_eval"
    ATTRIBUTES = "attributes"
    GENERATE_TRAIN = "generate_train"
    GENERATE_OOD = "generate_ood"
    VERIFY = "verify"
    TRAIN = "train"
    SCORE = "score"
    SELECT = "select"
    FINAL_TRAIN = "final_train"
    REFERENCE_TRAIN = "reference_train"
    STUDENT_EVAL = "student_eval"


# -- metric names ------------------------------------------------------------------------------
# A student's metrics on the real evaluation data are the task metrics (shared/task_metrics.py,
# named as in shared.spec.TASK_METRICS) behind eval_; the teacher's answers to the same data add
# teacher_; the supervised reference student's metrics (all of them) add reference_, since they
# are stored at iteration 0 beside the teacher's.
EVAL_PREFIX = "eval_"
TEACHER_PREFIX = "teacher_"
REFERENCE_PREFIX = "reference_"
# the student before distillation, answering few-shot from the seed examples (causal students)
FEWSHOT_PREFIX = "fewshot_"


def eval_metric(task_metric: str) -> str:
    """accuracy -> eval_accuracy: a student's score on the real evaluation data."""
    return f"{EVAL_PREFIX}{task_metric}"


def teacher_eval_metric(task_metric: str) -> str:
    """accuracy -> teacher_eval_accuracy: the teacher's few-shot score on the same data."""
    return f"{TEACHER_PREFIX}{eval_metric(task_metric)}"


def reference_metric(student_metric: str) -> str:
    """eval_accuracy -> reference_eval_accuracy: any student metric, of the supervised reference."""
    return f"{REFERENCE_PREFIX}{student_metric}"


def fewshot_metric(student_metric: str) -> str:
    """eval_f1 -> fewshot_eval_f1: a student metric of the student before distillation, few-shot."""
    return f"{FEWSHOT_PREFIX}{student_metric}"


# What every trained student reports (the trainer writes them).
TRAIN_LOSS = "train_loss"
TRAIN_EXAMPLES_PER_S = "train_examples_per_s"
# The student's score on held-out GENERATED data, its answers decoded (the loop's stopping rule
# reads it): label accuracy, or SQuAD token F1 for seq2seq, since exact match is 0 for any long
# answer (an NL4OPT formulation) and could never show the student improving.
HOLDOUT_METRICS = {"classification": "holdout_accuracy", "seq2seq": "holdout_f1"}


def holdout_metric(task_type: str) -> str:
    """classification -> holdout_accuracy, seq2seq -> holdout_f1 (HOLDOUT_METRICS)."""
    return HOLDOUT_METRICS[task_type]


STUDENT_PARAMETERS = "student_parameters"
TRAINABLE_PARAMETERS = "train_trainable_parameters"  # all of them, or LoRA's adapters
EVAL_SECONDS_PER_EXAMPLE = "eval_seconds_per_example"
# A training result's extra: the student's wrong answers on the real data (the run report shows them).
EVALUATION_ERRORS = "evaluation_errors"
# The supervised reference: the real labelled examples it was trained on.
REFERENCE_EXAMPLES = reference_metric("examples")
# The teacher baseline (iteration 0).
TEACHER_PARAMETERS = f"{TEACHER_PREFIX}parameters"
TEACHER_SECONDS_PER_EXAMPLE = f"{TEACHER_PREFIX}seconds_per_example"


class Diagnostic(StrEnum):
    """The loop's diagnostics: metric rows of a loop iteration beside its student's metrics, written
    by the orchestrator's stages and read through shared.diagnostics by the run report, `gold`'s
    run table and `gold eval` (whose results files keep them by these names)."""

    # generation (stages/generate.py, pool.py): the batch and the pool in the embedding space
    DISTINCT_2 = "distinct_2"
    EMBEDDING_SPREAD = "embedding_spread"
    POOL_SPREAD = "pool_spread"
    POOL_COVERAGE = "pool_coverage"
    NEAREST_NEIGHBOUR_SIMILARITY = "nearest_neighbour_similarity"
    TRAIN_NOVELTY = "train_novelty"
    OOD_NOVELTY = "ood_novelty"
    TRAIN_NEAR_DUPLICATES = "train_near_duplicates"
    OOD_NEAR_DUPLICATES = "ood_near_duplicates"
    # the teacher's check of every generated label (stages/verify.py)
    TEACHER_AGREEMENT = "teacher_agreement"
    LABEL_FIDELITY_AFTER_VERIFICATION = "label_fidelity_after_verification"
    VERIFIED_EXCLUDED = "verified_excluded"
    TEACHER_MEAN_CONFIDENCE = "teacher_mean_confidence"
    VERIFICATION_KAPPA = "verification_kappa"
    VERIFICATION_WITHHELD = "verification_withheld"
    # scoring and the feedback check (stages/score.py)
    OOD_ENERGY_GAP = "ood_energy_gap"
    TEACHER_KAPPA = "teacher_kappa"
    FEEDBACK_WITHHELD = "feedback_withheld"
    FEEDBACK_CHECKED = "feedback_checked"
    FEEDBACK_TEACHER_AGREEMENT = "feedback_teacher_agreement"
    FEEDBACK_RELABELLED = "feedback_relabelled"
    FEEDBACK_DROPPED = "feedback_dropped"
    FEEDBACK_CONTRADICTED = "feedback_contradicted"


def novelty(kind: str) -> Diagnostic:
    """train -> train_novelty: a generated batch's mean distance from the pool before it."""
    return Diagnostic(f"{kind}_novelty")


def near_duplicates(kind: str) -> Diagnostic:
    """ood -> ood_near_duplicates: a generated batch's samples left out as near-duplicates."""
    return Diagnostic(f"{kind}_near_duplicates")
