"""The registry of stages: per stage of a run (shared.names.Stage), the body that runs it. The
plan (services/orchestrator/plan.py) says which steps a run has and in what order; run_stage
runs one and marks it done.

A body takes (ctx, iteration), reads what it needs and calls the services, and returns a Done:
its writes and the step's result, committed here with the step's done mark in one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from services.orchestrator.context import RunContext, StepFailed
from services.orchestrator.plan import PlannedStep
from services.orchestrator.stages import generate, score, teacher, train, verify
from services.orchestrator.stages.done import Done
from services.orchestrator.stages.records import mark_step
from shared.names import Stage


@dataclass(frozen=True)
class StageDef:
    body: Callable[[RunContext, int], Done]
    what: str  # one line for the log


STAGES: dict[Stage, StageDef] = {
    Stage.TEACHER_EVAL: StageDef(teacher.teacher_eval, "the teacher answers the evaluation data"),
    Stage.REFERENCE_TRAIN: StageDef(train.train_reference, "the supervised reference student"),
    Stage.STUDENT_EVAL: StageDef(train.student_fewshot, "the student before distillation answers few-shot"),
    Stage.ATTRIBUTES: StageDef(generate.list_attributes, "the teacher lists attributes for OOD prompts"),
    Stage.GENERATE_TRAIN: StageDef(generate.generate_train, "the teacher generates training samples"),
    Stage.GENERATE_OOD: StageDef(generate.generate_ood, "the teacher generates OOD samples"),
    Stage.VERIFY: StageDef(verify.verify_labels, "the teacher verifies the generated labels"),
    Stage.TRAIN: StageDef(train.train_loop, "the loop's student"),
    Stage.SCORE: StageDef(score.score, "free energy of the samples under the student"),
    Stage.SELECT: StageDef(score.select_feedback, "feedback from the OOD energy band"),
    Stage.FINAL_TRAIN: StageDef(train.train_final, "a fresh student on the whole pool"),
}


def run_stage(ctx: RunContext, step: PlannedStep) -> None:
    """Run one step and commit its writes with its done mark; a body that fails leaves nothing.
    Its duration goes to the step histogram when it ends done or failed (not when cancelled)."""
    definition = STAGES.get(step.stage)
    if definition is None:
        raise StepFailed(f"unknown stage {step.stage}")
    started = time.perf_counter()
    try:
        done = definition.body(ctx, step.iteration)
    except StepFailed:
        ctx.metrics.observe_step(step.stage, "failed", time.perf_counter() - started)
        raise
    with ctx.sessions() as session, session.begin():
        done.write(session)
        mark_step(session, ctx.run_id, step.iteration, step.stage, done.result)
    outcome = "done" if done.failure is None else "failed"
    ctx.metrics.observe_step(step.stage, outcome, time.perf_counter() - started)
    if done.failure is not None:
        raise StepFailed(done.failure)
