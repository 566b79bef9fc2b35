"""The generator's Prometheus metrics: the HTTP ones every service has (shared/metrics.py) and
samples, rejections and tokens."""

from __future__ import annotations

from prometheus_client import Counter

from shared.metrics import ServiceMetrics


class Metrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("generator")
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
