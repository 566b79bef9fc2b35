"""Prometheus metrics every GOLD HTTP service has: its own registry (so several apps can live in one
test process) with request counts, latency and errors by route, counted by one ASGI middleware.
A service subclasses ServiceMetrics to add its own metrics to the same registry."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"gold_{service}_requests", "HTTP requests", ["path", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            f"gold_{service}_request_seconds",
            "HTTP request latency",
            ["path"],
            registry=self.registry,
            buckets=REQUEST_BUCKETS,
        )
        self.errors = Counter(
            f"gold_{service}_errors",
            "responses with status >= 400",
            ["path", "status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            if status >= 400:
                self.metrics.errors.labels(path, str(status)).inc()
