"""`gold.Client`: the orchestrator's public API from Python, the one client the `gold` command uses too
(`gold.AsyncClient`, in gold/async_client.py, is the same API for asyncio code).

    from gold import Client
    with Client("http://127.0.0.1:8000", token="...") as gold:
        run = gold.create_run("examples/sst2.yaml")
        summary = gold.wait(run.id, on_progress=lambda r: print(r.stage, f"{r.progress:.0%}"))
        data = gold.dataset(run.id)  # a datasets.Dataset

Every call has a timeout; an answer of 400 or more raises the typed error of gold/client_errors.py
with the API's message. A 429 or 503 that says Retry-After is retried after that many seconds (up
to `max_retries` times, each wait at most `max_retry_wait_s`): it means the request was not handled,
so even a POST is safe to send again. Polling the run or its summary sends the last ETag as
If-None-Match, so an unchanged run costs a 304 without a body."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from gold.client_errors import error_from_response, retry_after_s, unreachable
from shared.names import TERMINAL_RUN_STATUSES
from shared.schemas.prediction import PredictRequest, PredictResponse
from shared.schemas.runs import IterationRead, MetricRead, RunRead, RunSummary, SamplePage
from shared.spec import RunSpec, load_spec_file

if TYPE_CHECKING:
    import datasets

ModelT = TypeVar("ModelT", bound=BaseModel)
RunId = str | uuid.UUID
# A spec as a RunSpec, a mapping of its fields, or the path of a YAML or JSON file.
SpecLike = RunSpec | Mapping[str, Any] | str | os.PathLike[str]
SampleKind = Literal["seed", "train", "ood"]
ProgressCallback = Callable[[RunRead], object]

DEFAULT_URL = "http://127.0.0.1:8000"
RUN_LIST = TypeAdapter(list[RunRead])
ITERATION_LIST = TypeAdapter(list[IterationRead])
METRIC_LIST = TypeAdapter(list[MetricRead])
# The statuses a retry is worth: 429 (rate limited) and 503 (not ready, the database restarting),
# when the answer says how long to wait.
RETRIED_STATUSES = (429, 503)
# Names inside an exported dataset folder (Client.export_dataset).
DATASET_FILE, DATASET_CARD = "data.parquet", "README.md"


def spec_body(spec: SpecLike) -> dict[str, Any]:
    """The JSON body POST /runs takes, from a RunSpec, a mapping or a spec file's path."""
    if isinstance(spec, RunSpec):
        return spec.model_dump(mode="json")
    if isinstance(spec, Mapping):
        return dict(spec)
    return load_spec_file(Path(spec))


def sample_params(
    iteration: int | None, kind: SampleKind | None, selected: bool | None, offset: int, limit: int
) -> dict[str, Any]:
    params: dict[str, Any] = {"offset": offset, "limit": limit}
    for name, value in (("iteration", iteration), ("kind", kind), ("selected", selected)):
        if value is not None:
            params[name] = str(value).lower() if isinstance(value, bool) else value
    return params


def jsonl_rows(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parquet_dataset(body: bytes) -> datasets.Dataset:
    """The parquet export as an in-memory `datasets.Dataset` (nothing written to the datasets cache)."""
    import datasets  # imported here: pyarrow and pandas are slow to import
    import pyarrow.parquet as pq

    return datasets.Dataset(pq.read_table(io.BytesIO(body)))


def extract_model(archive: bytes, folder: Path) -> Path:
    """The model archive's folder unpacked under `folder`; its path. Members that would land outside
    `folder` (absolute paths, `..`, links) are refused by tarfile's "data" filter."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tops = {Path(name).parts[0] for name in tar.getnames() if name}
        tar.extractall(folder, filter="data")
    return folder / tops.pop() if len(tops) == 1 else folder


def retry_delay(response: httpx.Response, attempt: int, max_retries: int, max_wait_s: float) -> float | None:
    """Seconds to wait before sending the request again, or None to answer with this response."""
    if response.status_code not in RETRIED_STATUSES or attempt >= max_retries:
        return None
    wait = retry_after_s(response)
    if wait is None:
        # 429 without Retry-After: back off anyway (1, 2, 4 s...); a 503 without it is an error.
        return min(2.0**attempt, max_wait_s) if response.status_code == 429 else None
    return wait if wait <= max_wait_s else None  # longer than the caller allows: theirs to decide


class ETagCache:
    """The last body read from each polled path with its ETag, sent back as If-None-Match so an
    unchanged run answers 304 without a body. Bounded: enough for a program following a few runs."""

    size = 64

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, bytes]] = {}  # path -> (ETag, body), oldest first

    def headers(self, path: str) -> dict[str, str]:
        last = self._last.get(path)
        return {"If-None-Match": last[0]} if last else {}

    def read(self, path: str, response: httpx.Response, response_type: type[ModelT]) -> ModelT:
        """A fresh model of the response, or of the remembered body on 304 (callers may change it)."""
        last = self._last.get(path)
        if response.status_code == 304 and last is not None:
            return response_type.model_validate_json(last[1])
        body = response.content
        model = response_type.model_validate_json(body)
        self._last.pop(path, None)
        if etag := response.headers.get("ETag"):
            self._last[path] = (etag, body)
            if len(self._last) > self.size:
                self._last.pop(next(iter(self._last)), None)
        return model


def http_options(token: str | None, timeout_s: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"headers": headers, "timeout": httpx.Timeout(timeout_s, connect=5.0)}


class Client:
    """The orchestrator's API, one method per call. Use it as a context manager, or call close().

    base_url: where the orchestrator answers (`gold up` prints it). token: the API key, sent as a
    Bearer token (`gold up` writes the local one to {data_dir}/api_token). timeout_s: per request.
    max_retries and max_retry_wait_s bound the retries of a 429 or 503 with Retry-After."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.max_retry_wait_s = max_retries, max_retry_wait_s
        self._http = httpx.Client(
            base_url=self.base_url, transport=transport, **http_options(token, timeout_s)
        )
        self._etags = ETagCache()
        self._sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs ---------------------------------------------------------------------------------

    def create_run(self, spec: SpecLike, idempotency_key: str | None = None) -> RunRead:
        """Submit a run. The same idempotency_key (with the same spec) answers with the same run, so
        a retried submission never starts a second one."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._model("POST", "/runs", RunRead, json=spec_body(spec), headers=headers)

    def get_run(self, run_id: RunId) -> RunRead:
        """The run's status, stage, progress and what it waits for."""
        return self._conditional(f"/runs/{run_id}", RunRead)

    def list_runs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[RunRead]:
        """The caller's runs (every tenant's for an admin key), newest first."""
        params: dict[str, Any] = {"limit": limit, "offset": offset} | ({"status": status} if status else {})
        return RUN_LIST.validate_json(self._send("GET", "/runs", params=params).content)

    def summary(self, run_id: RunId) -> RunSummary:
        """The run with its iterations (metrics, timings, sample counts)."""
        return self._conditional(f"/runs/{run_id}/summary", RunSummary)

    def wait(
        self,
        run_id: RunId,
        *,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> RunSummary:
        """Poll until the run ends (succeeded, failed or cancelled); its summary. `on_progress(run)` is
        called with the run whenever it changed since the last poll. TimeoutError after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last: RunRead | None = None
        while True:
            run = self.get_run(run_id)
            if on_progress is not None and run != last:
                on_progress(run)
            last = run
            if run.status in TERMINAL_RUN_STATUSES:
                return self.summary(run_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout_s} s")
            self._sleep(poll_s)

    def iterations(self, run_id: RunId) -> list[IterationRead]:
        return ITERATION_LIST.validate_json(self._send("GET", f"/runs/{run_id}/iterations").content)

    def samples(
        self,
        run_id: RunId,
        *,
        iteration: int | None = None,
        kind: SampleKind | None = None,
        selected: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[SamplePage]:
        """The run's samples, a page at a time (each page says the total), fetched as iterated."""
        offset = 0
        while True:
            params = sample_params(iteration, kind, selected, offset, page_size)
            page = self._model("GET", f"/runs/{run_id}/samples", SamplePage, params=params)
            yield page
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def metrics(self, run_id: RunId) -> list[MetricRead]:
        """Every metric of every iteration (name, iteration, value)."""
        return METRIC_LIST.validate_json(self._send("GET", f"/runs/{run_id}/metrics").content)

    def cancel(self, run_id: RunId) -> RunRead:
        return self._model("POST", f"/runs/{run_id}/cancel", RunRead)

    def delete(self, run_id: RunId) -> None:
        """Delete the run, its samples and its artifacts (a running run: cancel it first)."""
        self._send("DELETE", f"/runs/{run_id}")

    def report(self, run_id: RunId, compare: Sequence[RunId] = ()) -> str:
        """The run's HTML report, with up to four other runs plotted beside it."""
        params = {"compare": [str(c) for c in compare]}
        return self._send("GET", f"/runs/{run_id}/report", params=params).text

    # --- what a run produced ------------------------------------------------------------------

    def dataset_rows(self, run_id: RunId) -> list[dict[str, Any]]:
        """The generated data as a list of rows (the JSONL export; columns in docs/python-client.md)."""
        return jsonl_rows(self._send("GET", f"/runs/{run_id}/dataset").text)

    def dataset(self, run_id: RunId) -> datasets.Dataset:
        """The generated data as a `datasets.Dataset` (the parquet export, read in memory)."""
        return parquet_dataset(self._dataset_file(run_id))

    def dataset_card(self, run_id: RunId) -> str:
        """The dataset card (README.md): task, teacher, student, counts, licence note."""
        return self._send("GET", f"/runs/{run_id}/dataset/card").text

    def export_dataset(self, run_id: RunId, folder: str | os.PathLike[str]) -> Path:
        """data.parquet and its card README.md written to `folder` (a dataset folder the hub and
        `datasets.load_dataset("parquet", data_files=...)` read); the folder."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / DATASET_FILE).write_bytes(self._dataset_file(run_id))
        (out / DATASET_CARD).write_text(self.dataset_card(run_id), encoding="utf-8")
        return out

    def download_model(self, run_id: RunId, folder: str | os.PathLike[str]) -> Path:
        """The student (the final one where there is one) unpacked under `folder`: the path of its
        Hugging Face folder, for `from_pretrained`."""
        return extract_model(self._send("GET", f"/runs/{run_id}/model").content, Path(folder))

    def predict(self, run_id: RunId, inputs: Sequence[Mapping[str, str]]) -> PredictResponse:
        """The run's student answers each input (a mapping of the task's input fields)."""
        body = PredictRequest(inputs=[dict(i) for i in inputs]).model_dump(mode="json")
        return self._model("POST", f"/runs/{run_id}/predict", PredictResponse, json=body)

    # --- plumbing -----------------------------------------------------------------------------

    def _dataset_file(self, run_id: RunId) -> bytes:
        return self._send("GET", f"/runs/{run_id}/dataset", params={"format": "parquet"}).content

    def _model(self, method: str, path: str, response_type: type[ModelT], **kwargs: Any) -> ModelT:
        return response_type.model_validate_json(self._send(method, path, **kwargs).content)

    def _conditional(self, path: str, response_type: type[ModelT]) -> ModelT:
        response = self._send("GET", path, headers=self._etags.headers(path))
        return self._etags.read(path, response, response_type)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer below 400 (a 304 included), after the retries a 429/503 with Retry-After gets;
        a GoldError otherwise."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise unreachable(exc, f"{self.base_url}{path}") from exc
            delay = retry_delay(response, attempt, self.max_retries, self.max_retry_wait_s)
            if delay is None:
                break
            attempt += 1
            self._sleep(delay)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response
