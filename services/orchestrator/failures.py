"""A failed run's error in words: which service failed, what it said, what to do next. The run
report and the console both lead a failed run's page with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICES = ("generator", "scorer", "trainer", "orchestrator")

_ADVICE = {
    "generator": "Check that the generator is up and serves the teacher (`gold status`, its log under "
    "the data folder's logs/), then submit the run again.",
    "scorer": "Check that the scorer is up (`gold status`, its log under the data folder's logs/), "
    "then submit the run again.",
    "trainer": "Read the trainer's log (logs/ under the data folder) for the training error; a "
    "student too large for the machine needs a smaller student or batch size in the spec.",
}
_WAITED = re.compile(r"\(gave up after (\d+) s of waiting; GOLD_DEPENDENCY_PATIENCE_S\)")


@dataclass(frozen=True)
class Failure:
    service: str  # generator | scorer | trainer | orchestrator
    said: str
    todo: str

    @property
    def headline(self) -> str:
        return f"The run failed in the {self.service}"


def explain(error: str) -> Failure:
    """`error` as the driver stores it (run.error): "<service>: <message>" for a service's failure,
    else the orchestrator's own message."""
    head, sep, rest = error.partition(": ")
    service = head if sep and head in SERVICES else "orchestrator"
    said = rest if service != "orchestrator" else error
    if waited := _WAITED.search(said):
        said = _WAITED.sub("", said).rstrip()
        todo = (
            f"The {service} did not answer for {waited.group(1)} s. "
            + _ADVICE.get(service, "")
            + " A longer outage can be waited out with a larger GOLD_DEPENDENCY_PATIENCE_S."
        )
    elif "stored run spec is not valid" in error:
        todo = "Submit the spec again: this version of GOLD reads it differently."
    elif error.startswith("internal error"):
        todo = "This is a bug in GOLD: report it with the orchestrator's log."
    elif service in _ADVICE:
        todo = _ADVICE[service]
    else:
        todo = "Fix what the message names in the spec or the data, then submit the run again."
    return Failure(service, said, todo)
