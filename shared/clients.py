"""Typed httpx clients for the internal services. Every call has a timeout; failures become
UpstreamError naming the service, so a run's error says which service failed and why."""

from __future__ import annotations

import logging
from typing import TypeVar

import httpx
from pydantic import BaseModel

from shared.errors import UpstreamError
from shared.schemas.generation import GenerateRequest, GenerateResponse
from shared.schemas.scoring import EnergyRequest, EnergyResponse, SelectRequest, SelectResponse

logger = logging.getLogger(__name__)
ResponseT = TypeVar("ResponseT", bound=BaseModel)


class ServiceClient:
    service = "service"

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 600.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(timeout_s, connect=5.0)
        )

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: BaseModel, response_type: type[ResponseT]) -> ResponseT:
        try:
            response = self._http.post(path, json=body.model_dump(mode="json"))
        except httpx.HTTPError as exc:
            raise UpstreamError(self.service, f"{type(exc).__name__} calling {path}: {exc}", 503) from exc
        if response.status_code >= 400:
            raise UpstreamError(
                self.service,
                f"{path} answered {response.status_code}: {response.text[:500]}",
                503 if response.status_code >= 500 else 502,
            )
        return response_type.model_validate(response.json())

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=5.0).status_code == 200
        except httpx.HTTPError:
            return False


class GeneratorClient(ServiceClient):
    service = "generator"

    def generate(self, request: GenerateRequest) -> GenerateResponse:
        return self._post("/v1/generate", request, GenerateResponse)


class ScorerClient(ServiceClient):
    service = "scorer"

    def energy(self, request: EnergyRequest) -> EnergyResponse:
        return self._post("/v1/energy", request, EnergyResponse)

    def select(self, request: SelectRequest) -> SelectResponse:
        return self._post("/v1/select", request, SelectResponse)
