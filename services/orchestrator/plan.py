"""The steps of a GOLD run, keyed by (iteration, stage), in the order the driver runs them."""

from __future__ import annotations

from dataclasses import dataclass

from shared.spec import RunSpec

# Stage names are stored in Postgres (step.stage, iteration.timings): keep them stable.
TEACHER_EVAL = "teacher_eval"
GENERATE_TRAIN = "generate_train"
GENERATE_OOD = "generate_ood"
VERIFY = "verify"
TRAIN = "train"
SCORE = "score"
SELECT = "select"
FINAL_TRAIN = "final_train"


@dataclass(frozen=True)
class PlannedStep:
    iteration: int
    stage: str


def uses_feedback(spec: RunSpec) -> bool:
    return spec.loop.feedback and spec.loop.ood_samples_per_iteration > 0


def teacher_baseline(spec: RunSpec) -> bool:
    return (
        spec.evaluation is not None
        and spec.evaluation.teacher_baseline
        and spec.task.type == "classification"
    )


def build_plan(spec: RunSpec) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    if teacher_baseline(spec):
        steps.append(PlannedStep(0, TEACHER_EVAL))
    for i in range(1, spec.loop.iterations + 1):
        steps.append(PlannedStep(i, GENERATE_TRAIN))
        if uses_feedback(spec):
            steps.append(PlannedStep(i, GENERATE_OOD))
        if spec.verification.policy != "off":
            steps.append(PlannedStep(i, VERIFY))
        steps.append(PlannedStep(i, TRAIN))
        if uses_feedback(spec):
            steps.append(PlannedStep(i, SCORE))
            steps.append(PlannedStep(i, SELECT))
    if spec.loop.final_student:
        steps.append(PlannedStep(spec.loop.iterations + 1, FINAL_TRAIN))
    return steps


def train_samples_per_iteration(spec: RunSpec) -> int:
    """Vanilla spends the OOD budget on plain training samples: same generation budget."""
    if uses_feedback(spec):
        return spec.loop.samples_per_iteration
    return spec.loop.samples_per_iteration + spec.loop.ood_samples_per_iteration
