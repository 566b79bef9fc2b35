"""`gold retrain`: the final student of finished runs trained again on each run's own generated
data, once with the run's spec (read under this version's defaults: a field the run's version did
not have takes today's default) and once with spec overrides, paired by run. Training the same
data twice with one seed is deterministic, so the difference is the recipe's alone, with no
generation noise and no generation paid for again."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Protocol

from gold.evaluation.intervals import paired_statistics, t_interval
from gold.evaluation.overrides import apply_overrides
from services.trainer.train import train_from_dataset
from shared.names import RunStatus, eval_metric, holdout_metric
from shared.schemas.runs import RunRead
from shared.spec import RunSpec


class RunData(Protocol):
    """What retraining reads of a run (the CLI retries each read while the orchestrator restarts)."""

    def get_run(self, run_id: str) -> RunRead: ...

    def dataset_rows(self, run_id: str) -> list[dict[str, Any]]: ...


def retrain_run(client: RunData, run_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """One run's final student trained as the run did (`as_run`) and with the overrides (`changed`)."""
    run = client.get_run(run_id)
    if run.status != RunStatus.SUCCEEDED:  # its pool is not the one a final student was trained on
        raise ValueError(f"run {run_id} is {run.status}: retrain needs a run that succeeded")
    spec = run.spec
    changed = RunSpec.model_validate(apply_overrides(spec, overrides))
    headline = eval_metric(changed.headline_metric)
    row: dict[str, Any] = {"run_id": run_id, "spec": spec["name"], "metric": headline}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "dataset.jsonl"
        rows = client.dataset_rows(run_id)
        dataset.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        for name, chosen in (("as_run", RunSpec.model_validate(spec)), ("changed", changed)):
            result = train_from_dataset(chosen, dataset, Path(tmp) / name)
            row[name] = result.metrics[headline]
            row[f"{name}_epochs"] = result.extra.get("epochs_run")
            # The generated holdout's verdict: would it have chosen the recipe the real data prefers?
            row[f"{name}_holdout"] = result.metrics.get(holdout_metric(chosen.task.type))
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and interval of each recipe over the runs, and changed - as_run paired by run."""
    out: dict[str, Any] = {}
    for name in ("as_run", "changed"):
        values = [r[name] for r in rows]
        out[name] = {"mean": statistics.fmean(values), "ci95": t_interval(values), "values": values}
    out["paired"] = paired_statistics([r["changed"] - r["as_run"] for r in rows])
    return out
