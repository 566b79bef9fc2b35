"""The tracker: a background thread of the orchestrator that sends due runs (outbox.py) to MLflow.
A run's steps never wait for it; while the server is down or failing, each due run is tried again
with backoff and says on itself (run.tracking_lag) since when tracking lags and why."""

from __future__ import annotations

import copy
import logging
import os
import socket
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import yaml
from mlflow.tracking import MlflowClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.exports import best_checkpoint, dataset_lines
from services.orchestrator.report import build_report
from services.orchestrator.tracking.content import RunContent, run_content
from services.orchestrator.tracking.outbox import claim, due_runs, next_try
from services.orchestrator.tracking.sender import Sender, artifact_marker, artifacts_wanted
from shared.artifacts import ArtifactStore
from shared.auth import OPERATOR
from shared.db.base import utcnow
from shared.db.models import Run, RunTracking

logger = logging.getLogger(__name__)

# How long a tracker holds a run it sends (a student folder can take a while to upload).
LEASE_S = 600.0
# What a run sends at its start, and once it has ended.
START_ARTIFACTS = ["spec.yaml"]
END_ARTIFACTS = ["report.html", "dataset/samples.jsonl", "student"]


class Tracker:
    def __init__(
        self,
        settings: OrchestratorSettings,
        sessions: sessionmaker[Session],
        artifacts: ArtifactStore,
        poll_s: float = 1.0,
    ):
        assert settings.mlflow_tracking_uri, "the tracker needs GOLD_MLFLOW_TRACKING_URI"
        # MLflow's REST client reads these per request and has no per-client option. Its default
        # (7 retries, 120 s timeout) would hold the tracker for minutes on a server that is down;
        # the outbox is the one retry layer here, its backoff the one schedule.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, round(settings.mlflow_timeout_s))))
        # A service logs; it does not print a "View run" line to stdout for every run it ends.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.settings = settings
        self.uri = settings.mlflow_tracking_uri
        self.sessions = sessions
        self.artifacts = artifacts
        self.poll_s = poll_s
        self.sender = Sender(MlflowClient(tracking_uri=self.uri))
        self.owner = f"{socket.gethostname()}:{settings.orchestrator_port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.send_due()
            except OperationalError as exc:
                logger.warning("tracking: database unavailable (%s); retrying", exc.__class__.__name__)
            except Exception:  # a bug must not end tracking for every run; it is logged, and retried
                logger.exception("tracking: unexpected error")
            self._stop.wait(self.poll_s)

    def send_due(self) -> int:
        """Send every run that is due now; how many were sent in full."""
        with self.sessions() as session:
            runs = due_runs(session)
        return sum(self.send(run_id) for run_id in runs if not self._stop.is_set())

    def send(self, run_id: uuid.UUID) -> bool:
        """Send what the run has that MLflow does not; True when all went (or another holds it: False)."""
        with tempfile.TemporaryDirectory(prefix="gold-mlflow-") as tmp:
            with self.sessions() as session, session.begin():
                state = claim(session, run_id, LEASE_S)
                run = session.get(Run, run_id)
                if state is None or run is None:
                    return False
                upto, logged = state.due, copy.deepcopy(state.logged)
                content = run_content(session, run, self.settings.mlflow_experiment)
                files = self._write_artifacts(session, run, content, logged, Path(tmp))
            error: Exception | None = None
            try:
                self.sender.send(content, str(run_id), logged, files)
            except Exception as exc:  # down, refusing or failing: whichever, retried with backoff
                error = exc
        self._record(run_id, upto, logged, error)
        return error is None

    def _write_artifacts(
        self, session: Session, run: Run, content: RunContent, logged: dict[str, Any], folder: Path
    ) -> dict[str, Path]:
        names = START_ARTIFACTS + (END_ARTIFACTS if content.ended else [])
        files: dict[str, Path] = {}
        for name in artifacts_wanted(content, logged, names):
            try:
                files[name] = self._write_artifact(name, session, run, folder)
            except Exception as exc:  # e.g. a cancelled run has no student: sent without it
                logger.warning("run %s: no %s for MLflow: %s", run.id, name, exc)
                logged.setdefault("artifacts", {})[name] = artifact_marker(name, content)
                logged.setdefault("missing", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
        return files

    def _write_artifact(self, name: str, session: Session, run: Run, folder: Path) -> Path:
        path = folder / Path(name).name
        if name == "spec.yaml":
            path.write_text(yaml.safe_dump(run.spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
        elif name == "report.html":
            path.write_text(build_report(run.id, [], session=session, principal=OPERATOR), encoding="utf-8")
        elif name == "dataset/samples.jsonl":
            with path.open("w", encoding="utf-8") as out:
                out.writelines(dataset_lines(run.id, session=session, principal=OPERATOR))
        elif name == "student":
            checkpoint = best_checkpoint(run.id, session=session, principal=OPERATOR)
            return self.artifacts.fetch(checkpoint.id)
        else:
            raise ValueError(f"unknown artifact {name}")
        return path

    def _record(self, run_id: uuid.UUID, upto: int, logged: dict[str, Any], error: Exception | None) -> None:
        now = utcnow()
        with self.sessions() as session, session.begin():
            state = session.get(RunTracking, run_id, with_for_update=True)
            if state is None:  # the run was deleted meanwhile
                return
            state.logged, state.lease_until = logged, None
            lag: str | None = None
            if error is None:
                if state.lagging_since is not None:
                    logger.info(
                        "run %s: MLflow tracking caught up after %d failed tries", run_id, state.attempts
                    )
                state.synced = max(state.synced, upto)
                state.attempts, state.next_try_at, state.lagging_since = 0, None, None
            else:
                state.attempts += 1
                state.next_try_at = next_try(state.attempts, self.settings.mlflow_retry_max_s, now)
                state.lagging_since = state.lagging_since or now
                reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
                lag = (
                    f"MLflow tracking lags since {state.lagging_since:%Y-%m-%d %H:%M:%S} UTC "
                    f"({state.attempts} failed tries; the run goes on and is sent once {self.uri} "
                    f"answers): {reason}"
                )
                logger.warning("run %s: MLflow tracking lags (try %d): %s", run_id, state.attempts, reason)
            session.execute(
                update(Run)
                .where(
                    Run.id == run_id,
                    Run.mlflow_run_id.is_distinct_from(logged.get("mlflow_run_id"))
                    | Run.tracking_lag.is_distinct_from(lag),
                )
                .values(mlflow_run_id=logged.get("mlflow_run_id"), tracking_lag=lag)
            )
