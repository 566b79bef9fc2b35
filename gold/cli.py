"""The `gold` command: start the local stack, submit runs, follow them, run the demo, measure.
The commands parse their options and print; the session with the orchestrator is gold/session.py and
`gold eval`'s work is gold/evaluation/command.py."""

from __future__ import annotations

import errno
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from gold.client_errors import GoldError
from gold.demo import console_lines, demo_data, start_demo
from gold.evaluation.command import plan_evaluation, run_evaluations
from gold.evaluation.overrides import parse_overrides
from gold.evaluation.tables import format_paired, tasks_table
from gold.report import iteration_table, time_split_table
from gold.retrain import retrain_run, summarise
from gold.session import (
    PatientClient,
    console,
    follow,
    local_stack,
    orchestrator_client,
    save_report,
    waiting_note,
)
from gold.stack import PortInUse
from shared.logging import configure_logging
from shared.names import TERMINAL_RUN_STATUSES, RunStatus
from shared.schemas.runs import RunSummary
from shared.settings import GoldSettings
from shared.spec import load_spec_file

app = typer.Typer(help="GOLD: distil a teacher LLM into a small student with OOD-guided data generation.")
# `gold up`'s exit status when a port it serves on is taken: a script that chose the ports (the tests)
# may start it again on others.
EXIT_PORT_IN_USE = errno.EADDRINUSE


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def show_summary(summary: RunSummary, as_json: bool) -> None:
    out = Console()
    out.print(iteration_table(summary))
    out.print(time_split_table(summary))
    run = summary.run
    if run.status not in TERMINAL_RUN_STATUSES:  # where a running step has got, and what it waits for
        step = " · ".join(filter(None, [run.stage, run.stage_progress, f"{run.progress:.0%}"]))
        out.print(f"iteration {run.iteration} · {step}", markup=False)
        if note := waiting_note(run):
            out.print(note, style="yellow", markup=False)
    if run.error:
        out.print(f"[red]run failed:[/red] {run.error}")
    if as_json:
        print_json_last(summary.model_dump_json())


def print_json_last(document: str) -> None:
    """--json: the document is stdout's last line and, with stderr merged, the output's last line too,
    so callers print it only after everything else (report path, stack shutdown)."""
    sys.stderr.flush()
    print(document, flush=True)


@app.command()
def up(trainers: Annotated[int, typer.Option(min=1, max=16, help="trainer workers to start")] = 1) -> None:
    """Start the whole local stack, print the URLs; Ctrl-C stops everything it started."""
    settings = GoldSettings()
    configure_logging(settings.log_level)
    try:
        with local_stack(settings, attach=False, trainers=trainers) as (_, stack):
            assert stack is not None
            console.print(
                f"orchestrator  {stack.orchestrator_url}  (API docs: {stack.orchestrator_url}/docs)"
            )
            console.print(f"web console   {stack.orchestrator_url}/ui  (sign in with the API token below)")
            console.print(f"generator     {stack.generator_url}")
            console.print(f"scorer        {stack.scorer_url}")
            console.print(
                f"API token in {settings.data_dir / 'api_token'}; logs in {settings.data_dir / 'logs'}"
            )
            console.print("Ctrl-C stops everything.")
            while True:
                stack.check_alive()
                time.sleep(2.0)
    except KeyboardInterrupt:
        console.print("stopped.")
    except PortInUse as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_PORT_IN_USE) from exc
    except RuntimeError as exc:
        _fail(str(exc))


@app.command()
def submit(
    spec_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="run spec, YAML or JSON")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="end with the run as one JSON object")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="same key, same run")] = None,
) -> None:
    """Submit a run spec to the orchestrator."""
    settings = GoldSettings()
    client = orchestrator_client(settings)
    try:
        run = client.create_run(load_spec_file(spec_path), idempotency_key)
        console.print(f"run {run.id} {run.status}")
        if not wait:
            if as_json:
                print_json_last(run.model_dump_json())
            return
        summary = follow(client, str(run.id))
    except GoldError as exc:
        _fail(str(exc))
        return
    show_summary(summary, as_json)
    if summary.run.status != RunStatus.SUCCEEDED:
        raise typer.Exit(1)


@app.command()
def status(
    run_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a run's status and per-iteration results."""
    try:
        summary = orchestrator_client(GoldSettings()).summary(run_id)
    except GoldError as exc:
        _fail(str(exc))
        return
    console.print(
        f"run {summary.run.id} ({summary.run.name}): {summary.run.status}, "
        f"iteration {summary.run.iteration}, stage {summary.run.stage}, {summary.run.progress:.0%}"
    )
    show_summary(summary, as_json)


def demo_spec() -> dict[str, Any]:
    """The demo spec with the evaluation data this machine has (gold/demo.py), said in one line."""
    chosen = demo_data()
    style = "yellow" if chosen.source == "none" else "green"
    console.print(chosen.message, style=style, markup=False, highlight=False, soft_wrap=True)
    return chosen.spec


def _interrupted() -> None:
    console.print("stopped; the stack is down. Run the same command again to resume its runs.")
    raise typer.Exit(130)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="end with the run as one JSON object")] = False,
) -> None:
    """Start the stack, run the bundled demo spec with live progress, print results, stop."""
    settings = GoldSettings()
    configure_logging("WARNING")
    spec = demo_spec()
    try:
        with local_stack(settings, attach=False) as (client, stack):
            if stack is not None:
                for where in console_lines(stack.orchestrator_url, settings.data_dir / "api_token"):
                    console.print(where, markup=False, highlight=False, soft_wrap=True)
            run, line = start_demo(client, spec, stack)
            console.print(line, markup=False, highlight=False, soft_wrap=True)
            summary = follow(client, str(run.id), stack=stack)
            show_summary(summary, as_json=False)
            save_report(client, settings, str(run.id))
    except (GoldError, RuntimeError) as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _interrupted()
        return
    if as_json:
        print_json_last(summary.model_dump_json())
    if summary.run.status != RunStatus.SUCCEEDED:
        raise typer.Exit(1)


# The options and output of the commands that measure (eval, retrain).
JsonFlag = Annotated[
    bool, typer.Option("--json", help="end stdout with the result as one JSON object (its last line)")
]
ResultFile = Annotated[
    Path | None, typer.Option(help="write the JSON result (with the command line and date) to this file")
]


def _write_result(document: dict[str, Any], out: Path | None, as_json: bool) -> None:
    if out is not None:
        _write_file(document, out)
        console.print(f"results: {out}", soft_wrap=True)
    if as_json:
        print_json_last(json.dumps(document))


def _write_file(document: dict[str, Any], out: Path) -> None:
    """Whole or not at all: a process stopped while writing leaves the file it replaces."""
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.part")
    part.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    part.replace(out)


@app.command("eval")
def eval_command(
    spec_paths: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, help="run spec(s), YAML or JSON")
    ],
    modes: Annotated[
        str,
        typer.Option(
            help="comma-separated: gold, vanilla, teacher, student (a causal student before "
            "distillation, few-shot from the seed examples), supervised (the student on as many real "
            "labelled examples, when the spec has evaluation.reference_path or reference_split)"
        ),
    ] = "gold,vanilla,teacher,supervised",
    repeats: Annotated[int, typer.Option(min=1, max=20)] = 1,
    budgets: Annotated[
        str | None, typer.Option(help="comma-separated generation budgets to sweep, e.g. 64,256,1024")
    ] = None,
    attach: Annotated[
        bool, typer.Option("--attach", help="use a running `gold up` instead of starting one")
    ] = False,
    as_json: JsonFlag = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override a spec field for a sensitivity run, e.g. --set loop.selection_band=[0.2,0.5] "
            "(dotted path, YAML value; repeatable; the spec name gets a suffix)",
        ),
    ] = None,
    out: ResultFile = None,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="a results file of this command (same spec and --set): the repeats it holds are "
            "kept and only the others run, e.g. --repeats 3 after --repeats 2 on another machine",
        ),
    ] = None,
) -> None:
    """Measure GOLD against vanilla generation and the teacher's own few-shot answers, per spec.
    Re-run with the same arguments after an interruption: finished runs are reused."""
    settings = GoldSettings()
    configure_logging("WARNING")
    try:
        plan = plan_evaluation(spec_paths, modes, repeats, budgets, overrides or [], resume_from)
    except ValueError as exc:
        _fail(str(exc))
        return

    def document(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **(results[0] if len(results) == 1 else {"tasks": results}),
            "overrides": plan.overrides,
            "command": command_line(sys.argv, "eval"),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def partial(results: list[dict[str, Any]]) -> None:
        # after each run: a stopped evaluation leaves what it measured (--resume-from reads it)
        if out is not None:
            _write_file({**document(results), "partial": True}, out)

    try:
        results = run_evaluations(plan, settings, attach, partial)
    except (GoldError, RuntimeError) as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _interrupted()
        return
    if len(results) > 1 and not plan.budgets:
        Console().print(tasks_table(results))
    _write_result(document(results), out, as_json)


@app.command()
def retrain(
    run_ids: Annotated[list[str], typer.Argument(help="finished runs of a running stack (`gold up`)")],
    overrides: Annotated[
        list[str],
        typer.Option(
            "--set", help="the student recipe to try, e.g. --set student.learning_rate=5e-5 (repeatable)"
        ),
    ],
    as_json: JsonFlag = False,
    out: ResultFile = None,
) -> None:
    """Train each run's final student again on the run's own generated data, as the run did and
    with --set changes, and compare the two paired by run: a student recipe measured without
    generation noise or cost."""
    configure_logging("WARNING")
    from transformers.utils import logging as transformers_logging  # imported here: slow to import

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        changes = parse_overrides(overrides)
    except ValueError as exc:
        _fail(str(exc))
        return
    client = PatientClient(orchestrator_client(GoldSettings()))  # waits for an orchestrator restarting
    rows = []
    try:
        for run_id in run_ids:
            with console.status(f"run {run_id}: training its final student twice..."):
                rows.append(retrain_run(client, run_id, changes))
            row = rows[-1]
            console.print(f"{run_id} {row['spec']}: as run {row['as_run']:.3f}, changed {row['changed']:.3f}")
    except (GoldError, ValueError) as exc:
        _fail(str(exc))
        return
    document = {
        "runs": rows,
        **summarise(rows),
        "overrides": changes,
        "command": command_line(sys.argv, "retrain"),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    console.print(f"changed - as run, paired by run: {format_paired(document['paired'])}", soft_wrap=True)
    _write_result(document, out, as_json)


def command_line(argv: list[str], command: str) -> str:
    """The command as typed, under the program name `gold <command>` whatever the entry point."""
    args = argv[1:]
    if command in args:
        args = args[args.index(command) + 1 :]
    return shlex.join(["gold", command, *args])
