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
