"""The `gold` command: start the local stack, submit runs, follow them, run the demo."""

from __future__ import annotations

import errno
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from gold.config import CliSettings
from gold.demo import demo_data
from gold.evaluation.mode_specs import STUDENT_MODES, parse_modes
from gold.evaluation.overrides import apply_overrides, parse_overrides
from gold.evaluation.plots import sweep_plot
from gold.evaluation.repeats import earlier_result, evaluate, sweep
from gold.evaluation.resumable_runs import resumable_run
from gold.evaluation.tables import diagnostics_table, format_paired, results_table, sweep_table, tasks_table
from gold.report import iteration_table, time_split_table, write_report
from gold.retrain import retrain_run, summarise
from gold.stack import PortInUse, Stack, local_token, stop_signals_handled_by
from shared.clients import OrchestratorClient
from shared.errors import UpstreamError
from shared.logging import configure_logging
from shared.names import TERMINAL_RUN_STATUSES, RunStatus
from shared.schemas.runs import RunRead, RunSummary
from shared.settings import GoldSettings
from shared.spec import load_spec_file

app = typer.Typer(help="GOLD: distil a teacher LLM into a small student with OOD-guided data generation.")
console = Console(stderr=True)
# `gold up`'s exit status when a port it serves on is taken: a script that chose the ports (the tests)
# may start it again on others.
EXIT_PORT_IN_USE = errno.EADDRINUSE
T = TypeVar("T")


def _client(settings: GoldSettings) -> OrchestratorClient:
    secret = CliSettings().api_token
    token = secret.get_secret_value() if secret is not None else None
    if token is None and (settings.data_dir / "api_token").exists():
        token = local_token(settings.data_dir)
    return OrchestratorClient(settings.orchestrator_url, token)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def follow(
    client: OrchestratorClient, run_id: str, poll_s: float = 2.0, stack: Stack | None = None
) -> RunSummary:
    """Show live progress until the run ends; return its summary."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(RunStatus.QUEUED, total=1.0)
        while True:
            run = patiently(lambda: client.get_run(run_id), stack)
            label = f"iteration {run.iteration} · {run.stage or run.status}"
            progress.update(task, completed=run.progress, description=label)
            if run.status in TERMINAL_RUN_STATUSES:
                done = 1.0 if run.status == RunStatus.SUCCEEDED else run.progress
                progress.update(task, completed=done, description=run.status)
                break
            if stack is not None:
                stack.check_alive()
            time.sleep(poll_s)
    return patiently(lambda: client.summary(run_id), stack)


class PatientClient:
    """The calls `gold eval` and `gold retrain` make, each retried by `patiently` (creating a run
    is safe to retry: eval always sends an Idempotency-Key)."""

    def __init__(self, client: OrchestratorClient, stack: Stack | None = None) -> None:
        self.client, self.stack = client, stack

    def create_run(self, spec: dict[str, Any], idempotency_key: str | None = None) -> RunRead:
        return patiently(lambda: self.client.create_run(spec, idempotency_key), self.stack)

    def summary(self, run_id: str) -> RunSummary:
        return patiently(lambda: self.client.summary(run_id), self.stack)

    def get_run(self, run_id: str) -> RunRead:
        return patiently(lambda: self.client.get_run(run_id), self.stack)

    def dataset(self, run_id: str) -> str:
        return patiently(lambda: self.client.dataset(run_id), self.stack)


def patiently(read: Callable[[], T], stack: Stack | None = None) -> T:
    """`read()`, retried with backoff while the orchestrator answers with a transient error
    (timeout, 5xx, 429) and the local stack, if any, is alive: on a loaded machine one slow
    answer must not end an evaluation that has run for an hour."""

    def warn(state: RetryCallState) -> None:
        if stack is not None:
            stack.check_alive()
        error = state.outcome.exception() if state.outcome else None
        console.print(f"[yellow]orchestrator did not answer ({error}); retrying[/yellow]", soft_wrap=True)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, UpstreamError) and e.retryable),
        wait=wait_exponential(min=1, max=30),
        stop=stop_after_delay(CliSettings().follow_patience_s),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(read)


def show_summary(summary: RunSummary, as_json: bool) -> None:
    out = Console()
    out.print(iteration_table(summary))
    out.print(time_split_table(summary))
    if summary.run.error:
        out.print(f"[red]run failed:[/red] {summary.run.error}")
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
    client = _client(settings)
    try:
        run = client.create_run(load_spec_file(spec_path), idempotency_key)
        console.print(f"run {run.id} {run.status}")
        if not wait:
            if as_json:
                print_json_last(run.model_dump_json())
            return
        summary = follow(client, str(run.id))
    except UpstreamError as exc:
        _fail(exc.message)
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
        summary = _client(GoldSettings()).summary(run_id)
    except UpstreamError as exc:
        _fail(exc.message)
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


@contextmanager
def local_stack(
    settings: GoldSettings, attach: bool, trainers: int = 1
) -> Iterator[tuple[OrchestratorClient, Stack | None]]:
    """A client to a running orchestrator (--attach) or to a stack started for this command."""
    if attach:
        yield _client(settings), None
        return
    started = time.monotonic()
    with stop_on_signals():
        with console.status("starting the stack (the first start converts the teacher: a few minutes)..."):
            stack = Stack(settings, trainers=trainers)
            stack.__enter__()
        try:
            console.print(
                f"stack ready in {time.monotonic() - started:.0f} s; orchestrator at {stack.orchestrator_url}"
            )
            yield OrchestratorClient(stack.orchestrator_url, stack.token), stack
        finally:
            console.print("stopping the stack...")
            stack.stop()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM (kill, a CI timeout, a container stop), SIGHUP (a closed terminal) and SIGINT stop a
    command that started the stack the way Ctrl-C does: the stack goes down before the command
    exits."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    with stop_signals_handled_by(interrupt):
        yield


def _interrupted() -> None:
    console.print("stopped; the stack is down. Run the same command again to resume its runs.")
    raise typer.Exit(130)


def save_report(
    client: OrchestratorClient, settings: GoldSettings, run_id: str, compare: list[str] = ()
) -> None:
    folder = settings.data_dir / "reports"
    html_path = write_report(client.report(run_id, list(compare)), folder / f"{run_id}.html")
    console.print(f"report: {html_path}", soft_wrap=True)  # a path wrapped over lines is no path


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
            run = client.create_run(spec)
            console.print(f"run {run.id}: {spec['name']}")
            summary = follow(client, str(run.id), stack=stack)
            show_summary(summary, as_json=False)
            save_report(client, settings, str(run.id))
    except (UpstreamError, RuntimeError) as exc:
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
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        console.print(f"results: {out}", soft_wrap=True)
    if as_json:
        print_json_last(json.dumps(document))


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
        chosen = parse_modes(modes)
        sizes = sorted({int(b) for b in budgets.split(",") if b.strip()}) if budgets else []
    except ValueError as exc:
        _fail(f"--modes/--budgets: {exc}")
        return
    try:
        changes = parse_overrides(overrides or [])
        specs = [apply_overrides(load_spec_file(path), changes) for path in spec_paths]
    except ValueError as exc:
        _fail(str(exc))
        return
    earlier: dict[str, dict[str, Any]] = {}
    if resume_from is not None:
        if sizes:
            _fail("--resume-from: budget sweeps (--budgets) do not resume from a file")
            return
        try:
            document = json.loads(resume_from.read_text(encoding="utf-8"))
            for spec in specs:
                earlier[spec["name"]] = earlier_result(document, spec["name"], changes, repeats)
        except (ValueError, KeyError, TypeError) as exc:
            _fail(f"--resume-from {resume_from}: {exc}")
            return
    results: list[dict[str, Any]] = []
    made: set[str] = set()  # the runs of this call (a resumed file's earlier runs may be elsewhere)
    try:
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

            for spec in specs:
                if sizes:
                    result = sweep(spec, chosen, repeats, sizes, run)
                    plot = sweep_plot(
                        result, settings.data_dir / "reports" / f"{spec['name']}-budget-sweep.png"
                    )
                    Console().print(sweep_table(result))
                    console.print(f"plot: {plot}", soft_wrap=True)
                else:
                    result = evaluate(spec, chosen, repeats, run, earlier.get(spec["name"]))
                    Console().print(results_table(result))
                    if set(chosen) & set(STUDENT_MODES):  # a baselines-only run has no loop data
                        Console().print(diagnostics_table(result))
                    runs = {m["mode"]: [r for r in m["run_ids"] if r in made] for m in result["modes"]}
                    if runs.get("gold"):
                        save_report(client, settings, runs["gold"][0], runs.get("vanilla", [])[:1])
                results.append(result)
    except (UpstreamError, RuntimeError) as exc:
        _fail(str(exc))
        return
    except KeyboardInterrupt:
        _interrupted()
        return
    if len(results) > 1 and not sizes:
        Console().print(tasks_table(results))
    document = {
        **(results[0] if len(results) == 1 else {"tasks": results}),
        "overrides": changes,
        "command": command_line(sys.argv, "eval"),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_result(document, out, as_json)


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
    client = PatientClient(_client(GoldSettings()))  # an orchestrator restarting mid-way is waited for
    rows = []
    try:
        for run_id in run_ids:
            with console.status(f"run {run_id}: training its final student twice..."):
                rows.append(retrain_run(client, run_id, changes))
            row = rows[-1]
            console.print(f"{run_id} {row['spec']}: as run {row['as_run']:.3f}, changed {row['changed']:.3f}")
    except (UpstreamError, ValueError) as exc:
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
