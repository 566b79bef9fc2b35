"""The steps of a GOLD run, keyed by (iteration, stage), in the order the driver runs them; what
each stage does is in the registry, services/orchestrator/stages/__init__.py."""

from __future__ import annotations

from dataclasses import dataclass

from shared.names import Stage
from shared.spec import RunSpec


@dataclass(frozen=True)
class PlannedStep:
    iteration: int
    stage: Stage


def build_plan(spec: RunSpec) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    if spec.evaluation is not None and spec.evaluation.teacher_baseline:
        steps.append(PlannedStep(0, Stage.TEACHER_EVAL))
    if spec.evaluation is not None and spec.evaluation.student_baseline:
        steps.append(PlannedStep(0, Stage.STUDENT_EVAL))
    if spec.evaluation is not None and spec.evaluation.reference_source is not None:
        steps.append(PlannedStep(0, Stage.REFERENCE_TRAIN))
    if spec.loop.iterations == 0:  # a baselines-only run
        return steps
    if spec.loop.uses_feedback and spec.loop.ood_attributes > 0:
        steps.append(PlannedStep(0, Stage.ATTRIBUTES))
    for i in range(1, spec.loop.iterations + 1):
        steps.append(PlannedStep(i, Stage.GENERATE_TRAIN))
        if spec.loop.uses_feedback:
            steps.append(PlannedStep(i, Stage.GENERATE_OOD))
        if spec.verification.policy != "off":
            steps.append(PlannedStep(i, Stage.VERIFY))
        steps.append(PlannedStep(i, Stage.TRAIN))
        if spec.loop.uses_feedback:
            steps.append(PlannedStep(i, Stage.SCORE))
            steps.append(PlannedStep(i, Stage.SELECT))
    if spec.loop.final_student:
        steps.append(PlannedStep(spec.loop.iterations + 1, Stage.FINAL_TRAIN))
    return steps


def _unbegun_loop_steps(
    spec: RunSpec, plan: list[PlannedStep], index: int, done: set[tuple[int, str]]
) -> list[PlannedStep]:
    """When plan[index] opens a loop iteration after the first that has not begun: it and the
    loop steps after it not yet done (what a stopping rule skips). Otherwise nothing."""
    step = plan[index]
    if not 1 < step.iteration <= spec.loop.iterations or any(i == step.iteration for i, _ in done):
        return []
    return [
        s for s in plan[index:] if s.iteration <= spec.loop.iterations and (s.iteration, s.stage) not in done
    ]


def steps_past_time_budget(
    spec: RunSpec, plan: list[PlannedStep], index: int, done: set[tuple[int, str]], elapsed_s: float
) -> list[PlannedStep]:
    """The loop steps to skip when plan[index] is next and the run has been running elapsed_s:
    once loop.max_seconds is used, no new iteration starts (the first always runs, one already
    begun is finished, and the final student is trained on what was generated)."""
    if spec.loop.max_seconds is None or elapsed_s <= spec.loop.max_seconds:
        return []
    return _unbegun_loop_steps(spec, plan, index, done)


def plateaued(history: list[float], patience: int) -> bool:
    """The last `patience` values did not beat the best value before them."""
    if len(history) <= patience:
        return False
    return max(history[-patience:]) <= max(history[:-patience])


def steps_past_plateau(
    spec: RunSpec, plan: list[PlannedStep], index: int, done: set[tuple[int, str]], history: list[float]
) -> list[PlannedStep]:
    """The loop steps to skip when plan[index] is next and `history` is the loop student's
    score on held-out generated data per finished iteration (shared/names.HOLDOUT_METRICS): the
    paper's stop once the student stops improving (loop.patience iterations without a new best)."""
    if spec.loop.patience is None or not plateaued(history, spec.loop.patience):
        return []
    return _unbegun_loop_steps(spec, plan, index, done)
