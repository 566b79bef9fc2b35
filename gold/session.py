"""A `gold` command's session with the orchestrator: the client (to a running stack or to one started
for the command, stopped with it on Ctrl-C or a signal), calls retried while the orchestrator is
slow to answer, a run followed with live progress, and its report saved."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

from gold.client import Client
from gold.client_errors import GoldError
from gold.config import CliSettings
from gold.report import write_report
from gold.stack import Stack, local_token, stop_signals_handled_by
from shared.names import TERMINAL_RUN_STATUSES, RunStatus
from shared.schemas.runs import RunRead, RunSummary
from shared.settings import GoldSettings

# Progress and messages go to stderr: stdout is left to the tables and the --json document.
console = Console(stderr=True)
T = TypeVar("T")
# Where the progress bar is not drawn (output to a file or a pipe), a plain line at least this often.
PLAIN_LINE_EVERY_S = 30.0


def orchestrator_client(settings: GoldSettings) -> Client:
    secret = CliSettings().api_token
    token = secret.get_secret_value() if secret is not None else None
    if token is None and (settings.data_dir / "api_token").exists():
        token = local_token(settings.data_dir)
    return Client(settings.orchestrator_url, token)


def follow(
    client: Client,
    run_id: str,
    poll_s: float = 2.0,
    stack: Stack | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunSummary:
    """Show live progress until the run ends; return its summary. In a terminal: a progress bar
    labelled with the stage and how far it has got. Elsewhere (`make demo > log`, where the bar
    is not drawn): a plain line as each stage begins and at least every PLAIN_LINE_EVERY_S."""
    plain = not console.is_terminal
    began = clock()
    last_line: tuple[float, str] | None = None  # when, and for which stage
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(RunStatus.QUEUED, total=1.0)
        waiting: str | None = None
        while True:
            run = patiently(lambda: client.get_run(run_id), stack)
            label = f"iteration {run.iteration} · {run.stage or run.status}"
            if run.waiting_for != waiting and run.status not in TERMINAL_RUN_STATUSES:
                waiting = run.waiting_for
                note = waiting_note(run) or "no longer waiting"
                console.print(f"{label}: {note}", style="yellow", markup=False, soft_wrap=True)
            within = f" · {run.stage_progress}" if run.stage_progress else ""
            progress.update(
                task,
                completed=run.progress,
                description=label + within + (" · waiting" if waiting else ""),
            )
            now = clock()
            if plain and run.status not in TERMINAL_RUN_STATUSES and _line_due(last_line, label, now, poll_s):
                console.print(progress_line(run, now - began), markup=False, highlight=False, soft_wrap=True)
                last_line = (now, label)
            if run.status in TERMINAL_RUN_STATUSES:
                done = 1.0 if run.status == RunStatus.SUCCEEDED else run.progress
                progress.update(task, completed=done, description=run.status)
                break
            if stack is not None:
                stack.check_alive()
            time.sleep(poll_s)
    return patiently(lambda: client.summary(run_id), stack)


def _line_due(last_line: tuple[float, str] | None, label: str, now: float, poll_s: float) -> bool:
    """A plain line as a stage begins, and whenever the next poll would come too late for one."""
    return last_line is None or last_line[1] != label or now + poll_s - last_line[0] >= PLAIN_LINE_EVERY_S


def waiting_note(run: RunRead) -> str | None:
    """What the run's step waits for, and since when (local time); None while it waits for nothing."""
    if not run.waiting_for:
        return None
    since = f" since {run.waiting_since.astimezone():%H:%M:%S}" if run.waiting_since else ""
    return f"waiting for {run.waiting_for}{since}"


def progress_line(run: RunRead, elapsed_s: float) -> str:
    """The run's progress as one plain line, e.g.
    "iteration 0 · teacher_eval · 64 of 500 rows answered · 1% · 0:03:05 elapsed"."""
    parts = [f"iteration {run.iteration}", run.stage or run.status]
    if run.stage_progress:
        parts.append(run.stage_progress)
    if run.waiting_for:
        parts.append("waiting")
    parts += [f"{run.progress:.0%}", f"{timedelta(seconds=int(elapsed_s))} elapsed"]
    return " · ".join(parts)


class PatientClient:
    """The calls `gold eval` and `gold retrain` make, each retried by `patiently` (creating a run
    is safe to retry: eval always sends an Idempotency-Key)."""

    def __init__(self, client: Client, stack: Stack | None = None) -> None:
        self.client, self.stack = client, stack

    def create_run(self, spec: dict[str, Any], idempotency_key: str | None = None) -> RunRead:
        return patiently(lambda: self.client.create_run(spec, idempotency_key), self.stack)

    def summary(self, run_id: str) -> RunSummary:
        return patiently(lambda: self.client.summary(run_id), self.stack)

    def get_run(self, run_id: str) -> RunRead:
        return patiently(lambda: self.client.get_run(run_id), self.stack)

    def dataset_rows(self, run_id: str) -> list[dict[str, Any]]:
        return patiently(lambda: self.client.dataset_rows(run_id), self.stack)


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
        retry=retry_if_exception(lambda e: isinstance(e, GoldError) and e.retryable),
        wait=wait_exponential(min=1, max=30),
        stop=stop_after_delay(CliSettings().follow_patience_s),
        before_sleep=warn,
        reraise=True,
    )
    return retrying(read)


@contextmanager
def local_stack(
    settings: GoldSettings, attach: bool, trainers: int = 1
) -> Iterator[tuple[Client, Stack | None]]:
    """A client to a running orchestrator (--attach) or to a stack started for this command."""
    if attach:
        yield orchestrator_client(settings), None
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
            yield Client(stack.orchestrator_url, stack.token), stack
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


def save_report(client: Client, settings: GoldSettings, run_id: str, compare: Sequence[str] = ()) -> None:
    folder = settings.data_dir / "reports"
    html_path = write_report(client.report(run_id, list(compare)), folder / f"{run_id}.html")
    console.print(f"report: {html_path}", soft_wrap=True)  # a path wrapped over lines is no path
