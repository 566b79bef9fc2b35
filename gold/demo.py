"""The bundled demo's spec, and where its real evaluation data comes from on this machine.

The spec (gold/specs/demo.yaml) names a local copy of SST-2's validation split beside the project,
present on the developers' machines. Elsewhere the demo reads the same split from the Hugging Face
hub (or the `datasets` cache of an earlier load), and without either it still runs, without
real-data accuracy, and says so in one line with how to get the data."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from gold.client import Client
from gold.session import patiently
from gold.stack import LOCAL_KEY_NAME, Stack
from shared.evaluation_data import EvaluationDataError, load_evaluation
from shared.names import RunStatus
from shared.schemas.runs import RunRead
from shared.spec import RunSpec, load_spec_file

DEMO_SPEC = Path(__file__).with_name("specs") / "demo.yaml"
# The same rows on the hub: GLUE SST-2's validation split, whose class-label column `label` reads as
# negative/positive. Replaces the spec's `path` and `label_field` where the local copy is absent.
HUB_EVALUATION = {"dataset": "stanfordnlp/sst2", "split": "validation", "label_field": "label"}
# A demo run in these states resumes when the stack starts again: the next `gold demo` follows it.
UNFINISHED = (RunStatus.RUNNING, RunStatus.QUEUED)


@dataclass(frozen=True)
class DemoData:
    spec: dict[str, Any]  # the spec to submit: its evaluation section as chosen, or none
    source: str  # "file", "hub" or "none"
    message: str  # one line for the user


def choose_evaluation(spec: dict[str, Any], hub: dict[str, Any] = HUB_EVALUATION) -> DemoData:
    """The spec's local evaluation file when it is present; else the hub dataset, when a first row
    of it loads (from the hub, or offline from the cache); else no evaluation section."""
    spec = copy.deepcopy(spec)
    evaluation = spec.get("evaluation")
    if not evaluation:
        return DemoData(spec, "none", "the demo spec has no evaluation section: no real-data accuracy")
    local = evaluation.get("path")
    if local and Path(local).is_file():
        return DemoData(spec, "file", f"evaluation data: {local}")
    on_hub = {k: v for k, v in evaluation.items() if k not in ("path", "label_field")} | hub
    candidate = RunSpec.model_validate({**spec, "evaluation": {**on_hub, "limit": 1}})
    assert candidate.evaluation is not None
    try:
        loaded = bool(load_evaluation(candidate.evaluation, candidate.task).examples)
        reason = "it has no usable rows"
    except EvaluationDataError as exc:
        loaded = False
        reason = _short_reason(exc)
    name = f"{hub['dataset']} ({hub['split']})"
    if loaded:
        spec["evaluation"] = on_hub
        return DemoData(spec, "hub", f"evaluation data: Hugging Face dataset {name}; {local} is absent")
    spec.pop("evaluation")
    return DemoData(
        spec,
        "none",
        f"no real-data accuracy: {local} is absent and {name} did not load from the Hugging Face hub "
        f"({reason}); to measure it, run `make demo HF_HUB_OFFLINE=0` where the hub is reachable, "
        f"or save that split as JSONL at {local}",
    )


def _short_reason(exc: EvaluationDataError) -> str:
    """The underlying library's exception name: the one-line message has no room for more."""
    cause = exc.__cause__
    if cause is None:
        return str(exc)
    if "offline" in str(cause).lower():
        return "offline: HF_HUB_OFFLINE=1"
    return type(cause).__name__


def demo_data() -> DemoData:
    return choose_evaluation(load_spec_file(DEMO_SPEC))


def interrupted_demo(runs: list[RunRead], name: str, owner: str | None = LOCAL_KEY_NAME) -> RunRead | None:
    """The newest unfinished run of the demo (its name, submitted with the local stack's key) among
    `runs`, or None. A finished, failed or cancelled one is never followed: the demo runs anew."""
    mine = [r for r in runs if r.name == name and r.owner == owner and r.status in UNFINISHED]
    return max(mine, key=lambda r: r.created_at, default=None)


def start_demo(client: Client, spec: dict[str, Any], stack: Stack | None = None) -> tuple[RunRead, str]:
    """The run `gold demo` follows, and one line saying which. An interrupted demo (Ctrl-C, a
    SIGTERM: the stack stopped with its run unfinished) resumes as the stack starts again, so the
    demo follows that run rather than queue a second one behind it; otherwise it submits the spec.

    The orchestrator's own list is the record (no file of ours to go stale): what is unfinished
    there is exactly what the driver resumes. The spec is not compared: the bundled demo's
    evaluation source may differ between two attempts (file, hub, none) and it is still the
    interrupted demo."""
    unfinished: list[RunRead] = []
    for status in UNFINISHED:
        unfinished += patiently(partial(client.list_runs, status), stack)
    earlier = interrupted_demo(unfinished, spec["name"])
    if earlier is not None:
        started = (earlier.started_at or earlier.created_at).astimezone()
        return earlier, f"resuming the interrupted demo run {earlier.id} (started {started:%Y-%m-%d %H:%M})"
    run = client.create_run(spec)
    return run, f"run {run.id}: {spec['name']}"


def console_lines(orchestrator_url: str, token_file: Path) -> list[str]:
    """Where to watch the run: the API and the web console, with how to sign in to the console."""
    return [
        f"API      {orchestrator_url}  (docs: {orchestrator_url}/docs)",
        f"console  {orchestrator_url}/ui  (sign in by pasting the key in {token_file})",
    ]
