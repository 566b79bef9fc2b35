"""What `gold eval` does between reading its options (gold/cli.py) and writing its result: the plan
the options describe (specs, modes, budgets, overrides, the repeats a results file already holds),
checked before any stack starts; then each spec evaluated, or swept over the budgets, on the stack,
with its tables, plot and report."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from gold.evaluation.mode_specs import STUDENT_MODES, parse_modes
from gold.evaluation.overrides import apply_overrides, parse_overrides
from gold.evaluation.plots import sweep_plot
from gold.evaluation.repeats import earlier_result, evaluate, sweep
from gold.evaluation.resumable_runs import resumable_run
from gold.evaluation.tables import diagnostics_table, results_table, sweep_table
from gold.report import iteration_table
from gold.session import PatientClient, console, follow, local_stack, save_report
from shared.schemas.runs import RunSummary
from shared.settings import GoldSettings
from shared.spec import load_spec_file


@dataclass(frozen=True)
class EvalPlan:
    """What `gold eval`'s options ask for."""

    specs: list[dict[str, Any]]  # with the --set overrides applied
    modes: list[str]
    repeats: int
    budgets: list[int]  # empty: a plain evaluation, no budget sweep
    overrides: dict[str, Any]
    earlier: dict[str, dict[str, Any]]  # spec name -> its result in the --resume-from file


def plan_evaluation(
    spec_paths: list[Path],
    modes: str,
    repeats: int,
    budgets: str | None,
    overrides: list[str],
    resume_from: Path | None,
) -> EvalPlan:
    """The plan, or a ValueError whose message names the option at fault."""
    try:
        chosen = parse_modes(modes)
        sizes = sorted({int(b) for b in budgets.split(",") if b.strip()}) if budgets else []
    except ValueError as exc:
        raise ValueError(f"--modes/--budgets: {exc}") from exc
    changes = parse_overrides(overrides)
    specs = [apply_overrides(load_spec_file(path), changes) for path in spec_paths]
    earlier: dict[str, dict[str, Any]] = {}
    if resume_from is not None:
        if sizes:
            raise ValueError("--resume-from: budget sweeps (--budgets) do not resume from a file")
        try:
            document = json.loads(resume_from.read_text(encoding="utf-8"))
            for spec in specs:
                earlier[spec["name"]] = earlier_result(document, spec["name"], changes, repeats)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--resume-from {resume_from}: {exc}") from exc
    return EvalPlan(specs, chosen, repeats, sizes, changes, earlier)


def run_evaluations(
    plan: EvalPlan,
    settings: GoldSettings,
    attach: bool,
    progress: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Each spec's result, its runs made one after the other on a stack started for this call (or a
    running one: attach). Each run's iterations, then the spec's tables (and a sweep's plot) are
    printed as they end, and a report is written of the first gold run this call made. `progress`
    is told the results so far after each run (the spec under way's partial)."""
    results: list[dict[str, Any]] = []
    made: set[str] = set()  # the runs of this call (a resumed file's earlier runs may be elsewhere)
    with local_stack(settings, attach) as (client, stack):

        def run(mode_spec: dict[str, Any]) -> RunSummary:
            summary = resumable_run(
                mode_spec,
                PatientClient(client, stack),
                lambda run_id: follow(client, run_id, stack=stack),
                lambda line: console.print(line, markup=False),
            )
            Console().print(iteration_table(summary))
            made.add(str(summary.run.id))
            return summary

        def told(partial: dict[str, Any]) -> None:
            if progress is not None:
                progress([*results, partial])

        for spec in plan.specs:
            if plan.budgets:
                result = sweep(spec, plan.modes, plan.repeats, plan.budgets, run, told)
                plot = sweep_plot(result, settings.data_dir / "reports" / f"{spec['name']}-budget-sweep.png")
                Console().print(sweep_table(result))
                console.print(f"plot: {plot}", soft_wrap=True)
            else:
                result = evaluate(spec, plan.modes, plan.repeats, run, plan.earlier.get(spec["name"]), told)
                Console().print(results_table(result))
                if set(plan.modes) & set(STUDENT_MODES):  # a baselines-only run has no loop data
                    Console().print(diagnostics_table(result))
                runs = {m["mode"]: [r for r in m["run_ids"] if r in made] for m in result["modes"]}
                if runs.get("gold"):
                    save_report(client, settings, runs["gold"][0], runs.get("vanilla", [])[:1])
            results.append(result)
    return results
