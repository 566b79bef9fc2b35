"""The spec each run of an evaluation is submitted with: a mode's run (gold, vanilla) with the
repeat's seeds and the baselines it measures, a run that measures baselines alone, and the spec at
another generation budget."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from shared.spec import LoopSpec, StudentSpec, TeacherSpec

MODES = ("gold", "vanilla", "teacher", "student", "supervised")
STUDENT_MODES = ("gold", "vanilla")


def _default(model: type[BaseModel], name: str) -> Any:
    """A spec field's default, read from shared/spec.py (a spec dict leaves defaults out)."""
    return model.model_fields[name].default


def parse_modes(raw: str) -> list[str]:
    modes = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise ValueError(f"--modes: unknown mode(s) {unknown}; choose from {list(MODES)}")
    if not modes:
        raise ValueError(f"--modes: name at least one of {list(MODES)}")
    return modes


def mode_spec(
    spec: dict[str, Any],
    mode: str,
    repeat: int,
    measure_teacher: bool,
    measure_supervised: bool = False,
    measure_student: bool = False,
) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["name"] = f"{spec['name']}-{mode}-r{repeat}"
    out.setdefault("loop", {})["feedback"] = mode == "gold"
    for part, model in (("teacher", TeacherSpec), ("student", StudentSpec)):
        section = out.setdefault(part, {})
        section["seed"] = int(section.get("seed", _default(model, "seed"))) + repeat
    if out.get("evaluation"):
        out["evaluation"]["teacher_baseline"] = measure_teacher
        if measure_student:
            out["evaluation"]["student_baseline"] = True
        if not measure_supervised:
            out["evaluation"].pop("reference_path", None)
            out["evaluation"].pop("reference_split", None)
            out["evaluation"].pop("reference_examples", None)
    return out


def baselines_spec(
    spec: dict[str, Any], repeat: int, measure_teacher: bool, measure_supervised: bool, measure_student: bool
) -> dict[str, Any]:
    """A run that trains no student (loop.iterations 0) and measures the baselines asked for:
    `gold eval --modes teacher` (student, supervised) without gold or vanilla. The supervised
    reference trains on as many real examples as the spec's generation budget, as beside a run."""
    out = mode_spec(spec, "baselines", repeat, measure_teacher, measure_supervised, measure_student)
    budget = LoopSpec.model_validate(out["loop"]).generation_budget
    out["loop"]["iterations"] = 0
    if measure_supervised:
        out["evaluation"].setdefault("reference_examples", budget)
    return out


def budget_spec(spec: dict[str, Any], budget: int) -> dict[str, Any]:
    """The spec with its generation budget (samples over all iterations) set to `budget`, keeping
    the iteration count and the share of OOD samples."""
    out = copy.deepcopy(spec)
    loop = out.setdefault("loop", {})
    iterations = int(loop.get("iterations", _default(LoopSpec, "iterations")))
    train = int(loop.get("samples_per_iteration", _default(LoopSpec, "samples_per_iteration")))
    ood = int(loop.get("ood_samples_per_iteration", _default(LoopSpec, "ood_samples_per_iteration")))
    per_iteration = max(budget // iterations, 2)
    ood_share = ood / (train + ood) if train + ood else 0.0
    loop["ood_samples_per_iteration"] = max(int(round(per_iteration * ood_share)), 1 if ood else 0)
    loop["samples_per_iteration"] = per_iteration - loop["ood_samples_per_iteration"]
    loop["feedback_per_iteration"] = min(
        int(loop.get("feedback_per_iteration", _default(LoopSpec, "feedback_per_iteration"))),
        loop["ood_samples_per_iteration"],
    )
    out["name"] = f"{spec['name']}-b{budget}"
    return out
