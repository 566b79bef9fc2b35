"""Sending a run's content (content.py) to an MLflow tracking server, idempotently: `logged` (the
outbox row's record of what MLflow holds) says what went already, and is updated after each call
that succeeded, so a send cut short by a server going down resumes where it stopped and a resumed
run never logs a metric point twice."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from services.orchestrator.tracking.content import RunContent

# log_batch's limits per call (MLflow's REST API refuses bigger batches).
MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000
T = TypeVar("T")


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def artifact_marker(name: str, content: RunContent) -> str:
    """When an artifact was last sent for: the spec once, the others for the run's end (a run
    resumed after it ended, then ended again, sends its report, dataset and student again)."""
    return "once" if name == "spec.yaml" else f"ended {content.end_ms}"


def artifacts_wanted(content: RunContent, logged: Mapping[str, Any], names: list[str]) -> list[str]:
    sent = logged.get("artifacts", {})
    return [name for name in names if sent.get(name) != artifact_marker(name, content)]


class Sender:
    def __init__(self, client: MlflowClient):
        self.client = client
        self._experiments: dict[str, str] = {}

    def experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                self._experiments[name] = experiment.experiment_id
            else:
                try:
                    self._experiments[name] = self.client.create_experiment(name)
                except MlflowException as exc:  # another orchestrator made it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    made = self.client.get_experiment_by_name(name)
                    assert made is not None
                    self._experiments[name] = made.experiment_id
        return self._experiments[name]

    def mlflow_run_id(self, content: RunContent, gold_run_id: str, logged: dict[str, Any]) -> str:
        """The run's MLflow run: the one recorded, else one tagged with its id (made by a send
        whose record was lost), else a new one."""
        if "mlflow_run_id" not in logged:
            experiment = self.experiment_id(content.experiment)
            found = self.client.search_runs(
                [experiment], filter_string=f"tags.`gold.run_id` = '{gold_run_id}'", max_results=1
            )
            if found:
                logged["mlflow_run_id"] = found[0].info.run_id
            else:
                made = self.client.create_run(
                    experiment,
                    start_time=content.start_ms,
                    tags={"gold.run_id": gold_run_id},
                    run_name=content.run_name,
                )
                logged["mlflow_run_id"] = made.info.run_id
        return str(logged["mlflow_run_id"])

    def send(
        self, content: RunContent, gold_run_id: str, logged: dict[str, Any], artifacts: Mapping[str, Path]
    ) -> None:
        """Everything in `content` that `logged` does not hold yet, then `artifacts` (name in the
        run's artifacts -> a local file or folder), then the run's status. `logged` is updated as
        each call succeeds; an error (the server down) leaves it saying how far the send got."""
        run = self.mlflow_run_id(content, gold_run_id, logged)
        sent_params = set(logged.setdefault("params", []))
        params = [Param(k, v) for k, v in sorted(content.params.items()) if k not in sent_params]
        for params_chunk in _chunks(params, MAX_PARAMS):
            self.client.log_batch(run, params=params_chunk, synchronous=True)
            logged["params"] = sorted(sent_params | {p.key for p in params_chunk})
            sent_params = set(logged["params"])

        sent_tags: dict[str, str] = logged.setdefault("tags", {})
        tags = [RunTag(k, v) for k, v in sorted(content.tags.items()) if sent_tags.get(k) != v]
        for tags_chunk in _chunks(tags, MAX_TAGS):
            self.client.log_batch(run, tags=tags_chunk, synchronous=True)
            sent_tags.update({t.key: t.value for t in tags_chunk})
        for gone in sorted(set(sent_tags) - set(content.tags)):  # e.g. gold.error of a run resumed since
            self.client.delete_tag(run, gone)
            del sent_tags[gone]

        sent_points: dict[str, float] = logged.setdefault("metrics", {})
        points = [p for p in content.metrics if sent_points.get(p.key) != p.value]
        for chunk in _chunks(points, MAX_METRICS):
            metrics = [Metric(p.name, p.value, p.timestamp_ms, p.step) for p in chunk]
            self.client.log_batch(run, metrics=metrics, synchronous=True)
            sent_points.update({p.key: p.value for p in chunk})

        sent_artifacts: dict[str, str] = logged.setdefault("artifacts", {})
        for name, path in artifacts.items():
            if path.is_dir():
                self.client.log_artifacts(run, str(path), name)
            else:
                folder = str(Path(name).parent)  # the file keeps its own name (path.name == name's)
                self.client.log_artifact(run, str(path), None if folder == "." else folder)
            sent_artifacts[name] = artifact_marker(name, content)

        if logged.get("status") != content.status:
            if content.ended:
                self.client.set_terminated(run, content.status, content.end_ms)
            else:  # a run resumed after it ended runs again
                self.client.update_run(run, status="RUNNING")
            logged["status"] = content.status
