"""Prometheus metrics of one app instance (its own registry, so several apps can live in a test)."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gold_generator_requests", "HTTP requests", ["path", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gold_generator_request_seconds",
            "HTTP request latency",
            ["path"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.errors = Counter(
            "gold_generator_errors",
            "responses with status >= 400",
            ["path", "status"],
            registry=self.registry,
        )
        self.samples = Counter(
            "gold_generator_samples", "generated samples by outcome", ["outcome"], registry=self.registry
        )
        self.rejections = Counter(
            "gold_generator_rejections", "rejected completions by reason", ["reason"], registry=self.registry
        )
        self.tokens = Counter("gold_generator_tokens", "engine tokens", ["kind"], registry=self.registry)
        self.classified = Counter(
            "gold_generator_classified_inputs", "inputs classified", registry=self.registry
        )
        self.answered = Counter("gold_generator_answered_inputs", "inputs answered", registry=self.registry)

    def record_generation(
        self, accepted: int, rejected: dict[str, int], prompt_tokens: int, completion_tokens: int
    ) -> None:
        self.samples.labels("accepted").inc(accepted)
        self.samples.labels("rejected").inc(sum(rejected.values()))
        for reason, count in rejected.items():
            self.rejections.labels(reason).inc(count)
        self.record_tokens(prompt_tokens, completion_tokens)

    def record_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens.labels("prompt").inc(prompt_tokens)
        self.tokens.labels("completion").inc(completion_tokens)

    def record_classification(self, inputs: int) -> None:
        self.classified.inc(inputs)

    def record_answers(self, inputs: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.answered.inc(inputs)
        self.record_tokens(prompt_tokens, completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
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
