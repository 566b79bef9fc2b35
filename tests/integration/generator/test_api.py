"""The serving logic around an engine: auth, limits, errors, parse statistics, metrics and the
OpenAI-compatible contract. A scripted engine stands in for the model here; the real engine's own
tests are in test_vllm.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings, KeyPolicy
from services.generator.engines.protocol import Sampling, request_priority
from services.generator.main import create_app
from shared.schemas.generation import PRIORITY_HEADER
from tests.integration.generator.conftest import wait_ready
from tests.support import SENTIMENT_TASK
from tests.unit.generator.fakes import FakeEngine

TOKEN = "team-a-secret"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TASK = SENTIMENT_TASK
SEEDS = TASK["seed_examples"]


def make_client(engine: FakeEngine, **overrides: object) -> TestClient:
    settings = GeneratorSettings(
        api_keys={"team-a": TOKEN, "reader": "reader-secret", "tiny": "tiny-secret"},
        generator_key_policies={
            "reader": KeyPolicy(scopes=["classify"]),
            "tiny": KeyPolicy(requests_per_minute=2),
        },
        **overrides,
    )
    return TestClient(create_app(settings, engine=engine))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def client(engine: FakeEngine) -> Iterator[TestClient]:
    with make_client(engine, generator_max_n=64, generator_max_request_bytes=50_000) as client:
        wait_ready(client, 10)
        yield client


def generate(client: TestClient, headers: dict[str, str] = HEADERS, **body: object) -> httpx.Response:
    return client.post("/v1/generate", json={"task": TASK, **body}, headers=headers)


def test_generate_batches_one_request_with_a_seed_per_prompt(client: TestClient, engine: FakeEngine) -> None:
    response = generate(client, n=16, sampling={"seed": 3, "temperature": 0.7, "max_tokens": 40})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(engine.calls) == 1  # all prompts in one engine call: the engine batches them
    prompts, samplings = engine.calls[0]
    assert sum(s.n for s in samplings) == 16 and len(prompts) == 4
    assert len({s.seed for s in samplings}) == len(samplings)  # never one seed for several prompts
    assert body["stats"] == {"requested": 16, "completions": 16, "accepted": 16, "rejected": {}}
    labels = [s["label"] for s in body["samples"]]
    assert labels.count("positive") == labels.count("negative") == 8
    sample = body["samples"][0]
    assert set(sample["fields"]) == {"text", "label"} and sample["fields"]["label"] == sample["label"]
    assert len(sample["text_hash"]) == 64
    assert all(0 <= i < len(SEEDS) for s in body["samples"] for i in s["prompt"]["examples"])
    assert body["settings"] == {
        "model": "fake/model",
        "revision": "r1",
        "engine": "fake",
        "engine_version": "0",
        "prompt_format": "raw",
        "seed": 3,
        "temperature": 0.7,
        "top_p": 0.95,
        "top_k": 50,
        "max_tokens": 40,
        "structured": False,
    }
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["prompt_tokens"] > 0
    # The same seed gives the same samples; the engine saw the same per-prompt seeds.
    again = generate(client, n=16, sampling={"seed": 3, "temperature": 0.7, "max_tokens": 40}).json()
    assert [s["fields"] for s in again["samples"]] == [s["fields"] for s in body["samples"]]


def test_rejections_are_counted_with_reasons_and_earlier_hashes_are_excluded(engine: FakeEngine) -> None:
    def script(prompt: str, sampling: Sampling, j: int) -> str:
        return [
            " Too short",
            " A repeated sample text that appears twice.",
            " A repeated sample text that appears twice.",
            " " + SEEDS[0]["text"],
            " A new one about the harbour at night.",
        ][j % 5]

    engine.script = script
    with make_client(engine, generator_samples_per_prompt=5) as client:
        wait_ready(client, 10)
        body = generate(client, n=5, labels=["positive"] * 5, sampling={"seed": 1}).json()
        assert body["stats"]["rejected"] == {
            "too_short": 1,
            "duplicate_in_request": 1,
            "duplicate_of_example": 1,
        }
        assert sorted(r["reason"] for r in body["rejections"]) == sorted(
            ["too_short", "duplicate_in_request", "duplicate_of_example"]
        )
        assert body["stats"]["accepted"] == 2
        hashes = [s["text_hash"] for s in body["samples"]]
        later = generate(
            client, n=5, labels=["positive"] * 5, exclude_hashes=hashes[:1], sampling={"seed": 1}
        ).json()
        assert later["stats"]["rejected"]["duplicate_of_earlier_sample"] == 2  # both copies
        assert later["stats"]["accepted"] == 1


def test_feedback_and_ood_mode(client: TestClient, engine: FakeEngine) -> None:
    feedback = [{"text": "A sample fed back from the previous iteration.", "label": "negative"}]
    body = generate(client, n=8, mode="ood", feedback=feedback).json()
    assert all(s["prompt"]["feedback"] == [0] for s in body["samples"])
    assert all(
        "significantly different" in p or "unlike" in p or "different source" in p or "none of" in p
        for p in engine.calls[0][0]
    )


def test_auth_errors_say_what_to_change(client: TestClient) -> None:
    missing = generate(client, headers={})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["message"]
    assert generate(client, headers={"Authorization": "Bearer nope"}).status_code == 401
    forbidden = generate(client, headers={"Authorization": "Bearer reader-secret"})
    assert forbidden.status_code == 403 and "scopes" in forbidden.json()["message"]


def test_limits_and_bad_input(client: TestClient) -> None:
    too_many = generate(client, n=65)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["n"]
    assert "cap of 64" in too_many.json()["message"]
    huge = client.post("/v1/generate", content=b"{" + b" " * 60_000 + b"}", headers=HEADERS)
    assert huge.status_code == 413 and "send less" in huge.json()["message"]
    bad_label = generate(client, n=2, labels=["positive", "neutral"])
    assert bad_label.status_code == 422 and bad_label.json()["detail"][0]["loc"] == ["labels"]
    bad_example = generate(client, examples=[{"text": "no label"}])
    assert bad_example.status_code == 422 and bad_example.json()["detail"][0]["loc"] == ["examples", "0"]
    unknown_field = generate(client, temperature=0.5)
    assert unknown_field.status_code == 422 and unknown_field.json()["detail"][0]["loc"] == ["temperature"]
    structured = generate(client, structured=True)
    assert structured.status_code == 422 and "structured=false" in structured.json()["message"]
    tiny = {"Authorization": "Bearer tiny-secret"}
    assert [generate(client, headers=tiny, n=2).status_code for _ in range(3)] == [200, 200, 429]
    limited = generate(client, headers=tiny, n=2)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert "2 requests per minute" in limited.json()["message"]


def test_engine_failures_and_readiness() -> None:
    with make_client(FakeEngine(fail=True)) as client:
        wait_ready(client, 10)
        failed = generate(client, n=2)
        assert failed.status_code == 503 and "scripted failure" in failed.json()["message"]
    app = create_app(GeneratorSettings(), engine=FakeEngine())
    with TestClient(app) as client:  # no keys configured: authentication off
        app.state.teachers.default.engine = None  # as while the model loads
        assert client.get("/readyz").status_code == 503
        loading = generate(client, headers={}, n=2)
        assert loading.status_code == 503 and loading.headers["Retry-After"] == "10"
        assert client.get("/healthz").status_code == 200


def test_classify_returns_a_distribution_per_input(client: TestClient) -> None:
    body = {
        "task": TASK,
        "inputs": [{"text": "Loved every minute of it."}, {"text": "A tedious, boring mess."}],
    }
    response = client.post("/v1/classify", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model"] == "fake/model" and out["engine"] == "fake" and out["parameters"] == 1000
    for prediction in out["predictions"]:
        assert set(prediction["probabilities"]) == {"negative", "positive"}
        assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-6
        assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    missing = client.post("/v1/classify", json={"task": TASK, "inputs": [{"txt": "x"}]}, headers=HEADERS)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["inputs", "0"]
    seq = {**TASK, "type": "seq2seq", "labels": None}
    assert (
        client.post(
            "/v1/classify", json={"task": seq, "inputs": [{"text": "x"}]}, headers=HEADERS
        ).status_code
        == 422
    )
    assert (
        client.post("/v1/classify", json=body, headers={"Authorization": "Bearer reader-secret"}).status_code
        == 200
    )


def test_metrics_count_requests_samples_tokens_and_errors(client: TestClient) -> None:
    generate(client, n=4)
    generate(client, headers={})
    text = client.get("/metrics").text
    assert 'gold_generator_requests_total{method="POST",path="/v1/generate",status="200"} 1.0' in text
    assert 'gold_generator_errors_total{path="/v1/generate",status="401"} 1.0' in text
    assert 'gold_generator_samples_total{outcome="accepted"} 4.0' in text
    assert 'gold_generator_tokens_total{kind="completion"}' in text
    assert "gold_generator_request_seconds_bucket" in text


def test_prompts_and_completions_stay_out_of_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        generate(client, n=4)
    assert "A story about" not in caplog.text and SEEDS[0]["text"] not in caplog.text
    assert "accepted=4" in caplog.text


def test_openai_client_against_the_serving_layer(client: TestClient) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
    assert {m.id for m in oai.models.list().data} == {"fake/model", "default"}
    completion = oai.completions.create(model="default", prompt=["Once", "Twice"], n=2, max_tokens=8, seed=5)
    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    chat = oai.chat.completions.create(model="fake/model", messages=[{"role": "user", "content": "Hi"}])
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    pieces = list(oai.completions.create(model="default", prompt="Once", max_tokens=8, stream=True))
    assert "".join(p.choices[0].text for p in pieces).startswith(" A story")
    assert pieces[-1].choices[0].finish_reason == "stop"
    chunks = list(
        oai.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
        oai.completions.create(model="gpt-4", prompt="x")
    with pytest.raises(openai.BadRequestError, match="stream") as refused:
        oai.completions.create(model="default", prompt="x", n=2, stream=True)
    assert refused.value.param == "stream"
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=client)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_openai_errors_name_the_parameter_in_openai_shape(client: TestClient) -> None:
    """What the basic layer (engines without vLLM's serving code) cannot honour is a 400 naming the
    parameter, as is a value out of range or an unknown parameter; never a 422 or a 500."""
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
    refused = {
        "logprobs": {"prompt": "x", "logprobs": 2},
        "echo": {"prompt": "x", "echo": True},
        "frequency_penalty": {"prompt": "x", "frequency_penalty": 0.5},
        "prompt": {"prompt": [1, 2, 3]},
        "logit_bias": {"prompt": "x", "logit_bias": {"1": 2}},
    }
    for param, body in refused.items():
        raw = client.post("/v1/completions", headers=HEADERS, json={"model": "default", **body})
        assert raw.status_code == 400, raw.text
        assert (
            raw.json()["error"]["param"] == param and raw.json()["error"]["type"] == "invalid_request_error"
        )
    with pytest.raises(openai.BadRequestError) as json_mode:
        oai.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Hi"}],
            response_format={"type": "json_object"},
        )
    assert json_mode.value.param == "response_format"
    for body, param in [
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "best_of": 2}, "best_of"),
        ({"prompt": "x", "max_tokens": 10**6}, "max_tokens"),
    ]:
        raw = client.post("/v1/completions", headers=HEADERS, json={"model": "default", **body})
        assert raw.status_code == 400 and raw.json()["error"]["param"] == param, raw.text


def test_openai_chat_content_parts_user_and_usage_in_streams(client: TestClient, engine: FakeEngine) -> None:
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]
    chat = oai.chat.completions.create(
        model="default", messages=[{"role": "user", "content": parts}], user="team-b", max_completion_tokens=9
    )
    prompts, samplings = engine.calls[-1]
    assert "User: Say\nhello." in prompts[0] and samplings[0].max_tokens == 9
    assert chat.usage.completion_tokens > 0
    quiet = list(oai.completions.create(model="default", prompt="Once", max_tokens=8, stream=True))
    assert all(p.usage is None for p in quiet) and quiet[-1].choices
    counted = list(
        oai.completions.create(
            model="default", prompt="Once", max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    assert counted[-1].choices == [] and counted[-1].usage.completion_tokens > 0


class PriorBiasedEngine(FakeEngine):
    """Scores like a small base model: "negative" is favoured whatever the input."""

    async def score_continuations(self, prompts, continuations):
        def row(prompt: str) -> list[float]:
            text = prompt.splitlines()[-2].lower()
            positive = 0.8 if "nice" in text else (-1.0 if "boring" in text else 0.0)
            return [1.0 if c.strip() == "negative" else positive for c in continuations]

        return [row(p) for p in prompts]


def test_classify_calibrates_away_the_prompt_prior() -> None:
    body = {"task": TASK, "inputs": [{"text": "Quite nice."}, {"text": "So boring."}]}
    with make_client(PriorBiasedEngine()) as client:
        wait_ready(client, 10)
        calibrated = client.post("/v1/classify", json=body, headers=HEADERS).json()["predictions"]
        uncalibrated = {**body, "calibrate": False}
        raw = client.post("/v1/classify", json=uncalibrated, headers=HEADERS).json()["predictions"]
    assert [p["label"] for p in raw] == ["negative", "negative"]  # the prior wins without calibration
    assert [p["label"] for p in calibrated] == ["positive", "negative"]


def test_answer_decodes_greedily_one_line_per_input_from_one_shared_prefix() -> None:
    qa = {
        "type": "seq2seq",
        "description": "Answer a question about a passage with a span of it.",
        "input_fields": ["context", "question"],
        "output_field": "answer",
        "seed_examples": [
            {"context": "The bridge opened in 1932.", "question": "When did it open?", "answer": "1932"},
            {"context": "Ada lives in Oslo.", "question": "Where does Ada live?", "answer": "Oslo"},
        ],
    }
    engine = FakeEngine(script=lambda prompt, sampling, j: f" {prompt.split('Question: ')[-1][:4]}\n")
    inputs = [{"context": "It rained.", "question": "What happened?"}, {"context": "x", "question": "Why?"}]
    with make_client(engine) as client:
        wait_ready(client, 10)
        response = client.post("/v1/answer", json={"task": qa, "inputs": inputs}, headers=HEADERS)
        assert response.status_code == 200, response.text
        out = response.json()
        assert out["answers"] == ["What", "Why?"] and out["parameters"] == 1000
        prompts, sampling = engine.calls[-1]
        assert all(s.temperature == 0.0 and s.stop == ("\n",) and s.max_tokens == 64 for s in sampling)
        prefix = prompts[0][: prompts[0].index("Example 3")]
        assert all(p.startswith(prefix) for p in prompts) and prefix.count("Answer: ") == 2
        assert prompts[0].endswith("Context: It rained.\nQuestion: What happened?\nAnswer:")
        # Bad input names the field; the reader key (classify scope) may answer.
        missing = client.post("/v1/answer", json={"task": qa, "inputs": [{"context": "x"}]}, headers=HEADERS)
        assert missing.status_code == 422 and "inputs.0" in missing.text and "question" in missing.text
        too_long = client.post(
            "/v1/answer", json={"task": qa, "inputs": inputs, "max_tokens": 4096}, headers=HEADERS
        )
        assert too_long.status_code == 422 and "max_tokens" in too_long.text
        reader = {"Authorization": "Bearer reader-secret"}
        assert (
            client.post("/v1/answer", json={"task": qa, "inputs": inputs}, headers=reader).status_code == 200
        )


class DyingEngine(FakeEngine):
    """Serves, then its engine process dies (as vLLM's did to the OOM killer); a restart revives
    it once `revive` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.starts = 0
        self.dead = False
        self.revive = threading.Event()

    async def start(self) -> None:
        self.starts += 1
        if self.starts > 1:
            await asyncio.to_thread(self.revive.wait, 10)
        self.dead = False
        await super().start()

    def ready(self) -> bool:
        return super().ready() and not self.dead


def test_an_engine_that_dies_is_reloaded_and_says_so_meanwhile() -> None:
    engine = DyingEngine()
    with make_client(engine, generator_watch_s=0.05) as client:
        wait_ready(client, timeout_s=10)
        engine.dead = True
        deadline = time.monotonic() + 10
        while engine.starts < 2:
            assert time.monotonic() < deadline, "the dead engine was not reloaded"
            time.sleep(0.02)
        down = generate(client, n=2)
        assert down.status_code == 503 and "reloading after it died" in down.json()["message"]
        engine.revive.set()
        wait_ready(client, timeout_s=10)
        assert generate(client, n=2).status_code == 200
        assert client.app.state.teachers.default.restarts == 1


class FailingReloads(DyingEngine):
    """Dies, then its first two reloads fail (the host is still overloaded) before one loads."""

    async def start(self) -> None:
        self.starts += 1
        if self.starts in (2, 3):
            raise RuntimeError(f"reload {self.starts - 1} ran out of memory")
        self.dead = False
        self.started = True

    def death_cause(self) -> str:
        return "EngineCore (pid 42) was killed by SIGKILL"


def test_a_failed_reload_is_retried_with_backoff_and_answers_503_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = FailingReloads()
    with make_client(engine, generator_watch_s=0.1, generator_reload_backoff_max_s=1.0) as client:
        wait_ready(client, timeout_s=10)
        engine.dead = True
        deadline = time.monotonic() + 10
        while engine.starts < 2:
            assert time.monotonic() < deadline, "the dead engine was not reloaded"
            time.sleep(0.01)
        down = generate(client, n=2)
        assert down.status_code == 503 and "Retry-After" in down.headers
        assert "killed by SIGKILL" in down.json()["message"]
        readyz = client.get("/readyz").json()
        assert readyz["status"] == "loading" and readyz["teachers"]["default"] == "reloading"
        wait_ready(client, timeout_s=10)  # the third try loads: the generator did not give up
        assert generate(client, n=2).status_code == 200
    assert engine.starts == 4
    assert "died: EngineCore (pid 42) was killed by SIGKILL" in caplog.text
    assert "reloading the engine of 'default' failed (2 times)" in caplog.text


class PriorityRecorder(FakeEngine):
    """Records the priority each engine call ran with."""

    def __init__(self) -> None:
        super().__init__()
        self.priorities: list[str] = []

    async def generate(self, prompts, sampling):  # noqa: ANN001, ANN201
        self.priorities.append(request_priority.get())
        return await super().generate(prompts, sampling)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_loops_requests_are_marked_batch_and_others_interactive(enabled: bool) -> None:
    engine = PriorityRecorder()
    with make_client(engine, generator_interactive_priority=enabled) as client:
        wait_ready(client, 10)
        assert generate(client, n=2).status_code == 200
        batch = {**HEADERS, PRIORITY_HEADER: "batch"}
        assert generate(client, headers=batch, n=2).status_code == 200
    assert engine.priorities == ["interactive", "batch" if enabled else "interactive"]
