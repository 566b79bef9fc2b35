"""Dependencies of the generator's routes: settings, the teachers, metrics and per-key access."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, Request

from services.generator.config import GeneratorSettings, Scope
from services.generator.engines.protocol import request_priority
from services.generator.limits import KeyLimiter, Quota
from services.generator.metrics import Metrics
from services.generator.teachers import Teachers
from shared.auth import Caller
from shared.schemas.generation import PRIORITY_HEADER


def get_settings(request: Request) -> GeneratorSettings:
    return request.app.state.settings


def get_teachers(request: Request) -> Teachers:
    return request.app.state.teachers


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _access(scope: Scope) -> Callable[[Request, Caller], AsyncIterator[Quota]]:
    async def dependency(request: Request, caller: Caller) -> AsyncIterator[Quota]:
        """The caller's quota for this request, once its key may call `scope`; what the request
        reserves is settled when the response is done (a yield dependency ends after it)."""
        limiter: KeyLimiter = request.app.state.limiter
        limiter.check_scope(caller, scope)
        settings: GeneratorSettings = request.app.state.settings
        if settings.generator_interactive_priority and request.headers.get(PRIORITY_HEADER) == "batch":
            request_priority.set("batch")  # the route runs in this context: its engine calls wait
        async with limiter.quota(caller) as quota:
            yield quota

    return dependency


SettingsDep = Annotated[GeneratorSettings, Depends(get_settings)]
TeachersDep = Annotated[Teachers, Depends(get_teachers)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
GenerateAccess = Annotated[Quota, Depends(_access("generate"))]
ClassifyAccess = Annotated[Quota, Depends(_access("classify"))]
OpenAIAccess = Annotated[Quota, Depends(_access("openai"))]
