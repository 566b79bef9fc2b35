"""`gold.AsyncClient`: `gold.Client`'s API for asyncio code (a notebook's event loop, a web app), the
same methods awaited, with the same errors, retries and conditional polling (gold/client.py)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from gold.client import (
    DATASET_CARD,
    DATASET_FILE,
    DEFAULT_URL,
    ITERATION_LIST,
    METRIC_LIST,
    RUN_LIST,
    ETagCache,
    ModelT,
    ProgressCallback,
    RunId,
    SampleKind,
    SpecLike,
    extract_model,
    http_options,
    jsonl_rows,
    parquet_dataset,
    retry_delay,
    sample_params,
    spec_body,
)
from gold.client_errors import error_from_response, unreachable
from shared.names import TERMINAL_RUN_STATUSES
from shared.schemas.prediction import PredictRequest, PredictResponse
from shared.schemas.runs import IterationRead, MetricRead, RunRead, RunSummary, SamplePage

if TYPE_CHECKING:
    import datasets


class AsyncClient:
    """See gold.Client: the same arguments and methods, each a coroutine (`samples` an async
    iterator). Use it as `async with AsyncClient(...) as gold:`, or await aclose()."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.max_retry_wait_s = max_retries, max_retry_wait_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, **http_options(token, timeout_s)
        )
        self._etags = ETagCache()
        self._sleep = asyncio.sleep

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def create_run(self, spec: SpecLike, idempotency_key: str | None = None) -> RunRead:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._model("POST", "/runs", RunRead, json=spec_body(spec), headers=headers)

    async def get_run(self, run_id: RunId) -> RunRead:
        return await self._conditional(f"/runs/{run_id}", RunRead)

    async def list_runs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> list[RunRead]:
        params: dict[str, Any] = {"limit": limit, "offset": offset} | ({"status": status} if status else {})
        return RUN_LIST.validate_json((await self._send("GET", "/runs", params=params)).content)

    async def summary(self, run_id: RunId) -> RunSummary:
        return await self._conditional(f"/runs/{run_id}/summary", RunSummary)

    async def wait(
        self,
        run_id: RunId,
        *,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
    ) -> RunSummary:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        last: RunRead | None = None
        while True:
            run = await self.get_run(run_id)
            if on_progress is not None and run != last:
                on_progress(run)
            last = run
            if run.status in TERMINAL_RUN_STATUSES:
                return await self.summary(run_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout_s} s")
            await self._sleep(poll_s)

    async def iterations(self, run_id: RunId) -> list[IterationRead]:
        return ITERATION_LIST.validate_json((await self._send("GET", f"/runs/{run_id}/iterations")).content)

    async def samples(
        self,
        run_id: RunId,
        *,
        iteration: int | None = None,
        kind: SampleKind | None = None,
        selected: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[SamplePage]:
        offset = 0
        while True:
            params = sample_params(iteration, kind, selected, offset, page_size)
            page = await self._model("GET", f"/runs/{run_id}/samples", SamplePage, params=params)
            yield page
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    async def metrics(self, run_id: RunId) -> list[MetricRead]:
        return METRIC_LIST.validate_json((await self._send("GET", f"/runs/{run_id}/metrics")).content)

    async def cancel(self, run_id: RunId) -> RunRead:
        return await self._model("POST", f"/runs/{run_id}/cancel", RunRead)

    async def delete(self, run_id: RunId) -> None:
        await self._send("DELETE", f"/runs/{run_id}")

    async def report(self, run_id: RunId, compare: Sequence[RunId] = ()) -> str:
        params = {"compare": [str(c) for c in compare]}
        return (await self._send("GET", f"/runs/{run_id}/report", params=params)).text

    async def dataset_rows(self, run_id: RunId) -> list[dict[str, Any]]:
        return jsonl_rows((await self._send("GET", f"/runs/{run_id}/dataset")).text)

    async def dataset(self, run_id: RunId) -> datasets.Dataset:
        return parquet_dataset(await self._dataset_file(run_id))

    async def dataset_card(self, run_id: RunId) -> str:
        return (await self._send("GET", f"/runs/{run_id}/dataset/card")).text

    async def export_dataset(self, run_id: RunId, folder: str | os.PathLike[str]) -> Path:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        (out / DATASET_FILE).write_bytes(await self._dataset_file(run_id))
        (out / DATASET_CARD).write_text(await self.dataset_card(run_id), encoding="utf-8")
        return out

    async def download_model(self, run_id: RunId, folder: str | os.PathLike[str]) -> Path:
        return extract_model((await self._send("GET", f"/runs/{run_id}/model")).content, Path(folder))

    async def predict(self, run_id: RunId, inputs: Sequence[Mapping[str, str]]) -> PredictResponse:
        body = PredictRequest(inputs=[dict(i) for i in inputs]).model_dump(mode="json")
        return await self._model("POST", f"/runs/{run_id}/predict", PredictResponse, json=body)

    async def _dataset_file(self, run_id: RunId) -> bytes:
        return (await self._send("GET", f"/runs/{run_id}/dataset", params={"format": "parquet"})).content

    async def _model(self, method: str, path: str, response_type: type[ModelT], **kwargs: Any) -> ModelT:
        return response_type.model_validate_json((await self._send(method, path, **kwargs)).content)

    async def _conditional(self, path: str, response_type: type[ModelT]) -> ModelT:
        response = await self._send("GET", path, headers=self._etags.headers(path))
        return self._etags.read(path, response, response_type)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise unreachable(exc, f"{self.base_url}{path}") from exc
            delay = retry_delay(response, attempt, self.max_retries, self.max_retry_wait_s)
            if delay is None:
                break
            attempt += 1
            await self._sleep(delay)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response
