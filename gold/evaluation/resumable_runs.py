"""Submitting a run so that `gold eval` can be killed and run again: an Idempotency-Key derived from
the exact spec finds the run already finished or still going, and a failed one is tried again
under the next key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from shared.names import TERMINAL_RUN_STATUSES, RunStatus
from shared.schemas.runs import RunRead, RunSummary
from shared.spec import RunSpec

# A failed or cancelled run is tried again under its own key: twice per `gold eval` call, and up
# to MAX_ATTEMPTS over the calls (a machine running out of memory fails runs that are fine).
RETRIES_PER_CALL = 2
MAX_ATTEMPTS = 6


def idempotency_key(spec: dict[str, Any]) -> str:
    """The key a mode spec is submitted under: a hash of its canonical JSON with every default
    filled in, which encodes the mode, the repeat's seeds, the budget, any override and the
    defaults it ran under, so the same submission finds its run and a changed default does not.
    Unset (None) fields are left out: a new optional field, None by default, leaves every earlier
    key as it was, so adding one does not orphan the finished runs of an evaluation."""
    return f"gold-eval-{hashlib.sha256(canonical_spec(spec).encode()).hexdigest()[:32]}"


def canonical_spec(spec: dict[str, Any]) -> str:
    complete = RunSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
    return json.dumps(complete, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class RunClient(Protocol):
    def create_run(self, spec: dict[str, Any], idempotency_key: str | None = None) -> RunRead: ...

    def summary(self, run_id: str) -> RunSummary: ...


def resumable_run(
    spec: dict[str, Any],
    client: RunClient,
    follow: Callable[[str], RunSummary],
    say: Callable[[str], None],
) -> RunSummary:
    """Submit `spec` under its idempotency key and return the run's summary: a finished run is
    reused at once, an active one (say, after a restart) is followed, and a failed or cancelled
    one is retried under the next suffixed key (`-retry1`, ...), at most RETRIES_PER_CALL new
    attempts per call: so running a command again also retries what failed in an earlier one."""
    key = idempotency_key(spec)
    summary: RunSummary | None = None
    fresh = 0
    for attempt in range(MAX_ATTEMPTS):
        run = client.create_run(spec, key + (f"-retry{attempt}" if attempt else ""))
        if run.status == RunStatus.SUCCEEDED:
            say(f"reusing run {run.id}: {spec['name']} (finished)")
            return client.summary(str(run.id))
        if run.status in TERMINAL_RUN_STATUSES:  # an earlier call's attempt
            say(f"run {run.id}: {spec['name']} {run.status} earlier")
            summary = None
            continue
        say(f"run {run.id}: {spec['name']}" + ("" if run.status == RunStatus.QUEUED else f" ({run.status})"))
        summary = follow(str(run.id))
        if summary.run.status == RunStatus.SUCCEEDED:
            return summary
        fresh += 1
        if fresh == RETRIES_PER_CALL:
            break
        say(f"run {run.id}: {spec['name']} {summary.run.status}; retrying it")
    if summary is None:  # every attempt failed in earlier calls
        summary = client.summary(str(run.id))
    return summary
