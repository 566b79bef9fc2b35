"""Typed httpx clients for the internal services (the orchestrator's public API: gold.Client). Every
call has a timeout; failures become UpstreamError naming the service, so a run's error says which
service failed and why."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from shared.balancing import Replicas
from shared.errors import UpstreamError
from shared.schemas.generation import (
    PRIORITY_HEADER,
    AnswerRequest,
    AnswerResponse,
    AttributesRequest,
    AttributesResponse,
    ClassifyRequest,
    ClassifyResponse,
    GenerateRequest,
    GenerateResponse,
    ServedModels,
)
from shared.schemas.prediction import CheckpointPredictRequest, CheckpointPredictResponse
from shared.schemas.scoring import (
    EmbedRequest,
    EmbedResponse,
    EnergyRequest,
    EnergyResponse,
    SelectRequest,
    SelectResponse,
)

logger = logging.getLogger(__name__)
ResponseT = TypeVar("ResponseT", bound=BaseModel)


class ServiceClient:
    """One service, at one base URL or several interchangeable replicas (shared/balancing.py)."""

    service = "service"

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        timeout_s: float = 600.0,
        retry_after_s: float = 10.0,
    ):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0))
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.replicas = Replicas(urls, self._answers_ready, retry_after_s)

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: BaseModel, response_type: type[ResponseT]) -> ResponseT:
        return self._request("POST", path, response_type, json=body.model_dump(mode="json"))

    def _request(self, method: str, path: str, response_type: type[ResponseT], **kwargs: Any) -> ResponseT:
        return response_type.model_validate(self._exchange(method, path, **kwargs).json())

    def _exchange(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Sent to one replica; to the next one only when the request cannot have been handled (the
        connection failed, or a 503: not ready). Errors name the URL that failed; any answer below
        400 is returned."""
        unreached: list[str] = []
        for base in self.replicas.candidates():
            url = f"{base}{path}"
            try:
                response = self._http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                self.replicas.failed(base, type(exc).__name__)
                unreached.append(f"{type(exc).__name__} calling {url}: {exc}")
                continue
            except httpx.HTTPError as exc:
                self.replicas.failed(base, type(exc).__name__)
                raise UpstreamError(
                    self.service, f"{type(exc).__name__} calling {url}: {exc}", 503, retryable=True
                ) from exc
            if response.status_code == 503:
                self.replicas.failed(base, "503")
                unreached.append(f"{url} answered 503: {response.text[:300]}")
                continue
            if response.status_code >= 400:
                transient = response.status_code >= 500 or response.status_code in (408, 429)
                if response.status_code >= 500:
                    self.replicas.failed(base, str(response.status_code))
                raise UpstreamError(
                    self.service,
                    f"{url} answered {response.status_code}: {response.text[:500]}",
                    503 if transient else 502,
                    retryable=transient,
                )
            self.replicas.succeeded(base)
            return response
        raise UpstreamError(self.service, "; ".join(unreached), 503, retryable=True)

    def _answers_ready(self, base: str) -> bool:
        try:
            return self._http.get(f"{base}/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        """Whether a replica answers /readyz."""
        return any(self._answers_ready(base) for base in self.replicas.urls)


class GeneratorClient(ServiceClient):
    """The loop's client: its requests are bulk work, served after interactive ones."""

    service = "generator"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http.headers[PRIORITY_HEADER] = "batch"

    def generate(self, request: GenerateRequest) -> GenerateResponse:
        return self._post("/v1/generate", request, GenerateResponse)

    def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        return self._post("/v1/classify", request, ClassifyResponse)

    def answer(self, request: AnswerRequest) -> AnswerResponse:
        return self._post("/v1/answer", request, AnswerResponse)

    def attributes(self, request: AttributesRequest) -> AttributesResponse:
        return self._post("/v1/attributes", request, AttributesResponse)

    def models(self, timeout_s: float = 10.0) -> list[str]:
        """The names the generator serves (GET /v1/models)."""
        return [m.id for m in self._request("GET", "/v1/models", ServedModels, timeout=timeout_s).data]


class ScorerClient(ServiceClient):
    service = "scorer"

    def energy(self, request: EnergyRequest) -> EnergyResponse:
        return self._post("/v1/energy", request, EnergyResponse)

    def select(self, request: SelectRequest) -> SelectResponse:
        return self._post("/v1/select", request, SelectResponse)

    def embed(self, request: EmbedRequest) -> EmbedResponse:
        return self._post("/v1/embed", request, EmbedResponse)

    def predict(self, request: CheckpointPredictRequest) -> CheckpointPredictResponse:
        return self._post("/v1/predict", request, CheckpointPredictResponse)
