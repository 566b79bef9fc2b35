"""The real llama.cpp engine (llama-cpp-python) with the default teacher's GGUF, as auto picks it on a
CPU-only host: generation (diverse, seeded), label scoring, few-shot answers and OpenAI's routes.

One module-scoped app (the GGUF loads in seconds); few, small requests.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.engines.choice import auto_engine
from services.generator.engines.llamacpp import LlamaCppEngine
from services.generator.engines.protocol import Sampling
from services.generator.field_format import FieldFormat, FieldSlot
from services.generator.main import create_app
from services.generator.parsing import normalise
from services.generator.prompts import STOP
from services.generator.start_check import PROBE, PROBE_SAMPLING, check_generation, degenerate
from services.generator.teachers import resolve_teacher
from shared.hardware import cuda_available
from shared.spec import RunSpec, load_spec_file
from tests.integration.generator.conftest import SENTIMENT_CASES, SQUAD_CASES, run_lm_eval, serve, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TASK = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump()
PROBE_REVIEW = "Example 1\nLabel: positive\nText: A warm, funny film.\n\nExample 2\nLabel: negative\nText:"


def data_dir() -> Path:
    return Path(os.environ.get("GOLD_DATA_DIR", ROOT / ".gold"))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = GeneratorSettings(data_dir=data_dir(), generator_engine="llamacpp")
    with TestClient(create_app(settings)) as client:
        wait_ready(client, 300)
        yield client


@pytest.mark.skipif(cuda_available(), reason="auto picks vLLM where a GPU is visible")
def test_auto_picks_llamacpp_for_the_packaged_gguf_on_a_cpu_host() -> None:
    kind, why = auto_engine(GeneratorSettings().generator_models["default"])
    assert kind == "llamacpp", why


def _generate(client: TestClient, seed: int) -> dict:
    response = client.post(
        "/v1/generate", json={"task": TASK, "n": 16, "sampling": {"seed": seed, "max_tokens": 64}}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_generate_gives_well_formed_diverse_balanced_seeded_samples(client: TestClient) -> None:
    body = _generate(client, 11)
    assert body["settings"]["engine"] == "llamacpp" and body["settings"]["model"] == "google/gemma-3-270m"
    assert body["stats"]["completions"] == 16
    assert body["stats"]["accepted"] >= 12, body["stats"]
    samples = body["samples"]
    labels = Counter(s["label"] for s in samples)
    assert set(labels) == {"negative", "positive"} and min(labels.values()) >= 4
    texts = [normalise(s["fields"]["text"]) for s in samples]
    # Diversity, not only format: a seed bug gives identical samples, a missing BOS near-copies
    # of the last example.
    assert len(set(texts)) == len(texts)
    assert len({" ".join(t.split()[:3]) for t in texts}) >= 0.6 * len(texts)
    assert not {normalise(e["text"]) for e in TASK["seed_examples"]} & set(texts)
    # A seed gives the same samples; another seed others.
    assert [s["fields"] for s in _generate(client, 11)["samples"]] == [s["fields"] for s in samples]
    assert {normalise(s["fields"]["text"]) for s in _generate(client, 12)["samples"]} != set(texts)


def test_structured_generation_gives_parseable_samples_only(client: TestClient) -> None:
    body = {"task": TASK, "n": 4, "structured": True, "sampling": {"seed": 5, "max_tokens": 64}}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["settings"]["structured"] is True
    # Every completion is in the field format: none is lost to parsing (duplicates may still go).
    parse_failures = {"missing_field", "too_short", "label_not_in_label_set"}
    assert not parse_failures & set(out["stats"]["rejected"]), out["stats"]
    assert out["stats"]["accepted"] >= 3, out["stats"]
    # The grammar does constrain: a marker the model would never write on its own, and a JSON value.
    engine = client.app.state.teachers.engine(None)  # type: ignore[attr-defined]
    unusual = FieldFormat((FieldSlot("", 10), FieldSlot("Zebra count", 1, json_object=True)))
    sampling = Sampling(n=2, seed=3, max_tokens=96, stop=STOP, field_format=unusual)
    (result,) = client.portal.call(engine.generate, [PROBE_REVIEW], [sampling])  # type: ignore[union-attr]
    finished = [c.text for c in result.completions if c.finish_reason == "stop"]
    assert finished, [c.text for c in result.completions]
    for text in finished:
        review, value = text.split("\nZebra count: ")
        assert len(review.strip()) >= 10 and isinstance(json.loads(value), dict), text


def test_a_teacher_prompted_in_its_chat_template_writes_parseable_samples() -> None:
    """generator_prompt_formats chat: the prompt through the GGUF's own chat template (an instruct
    teacher's format), the new example's opening in the model's turn; read back by the same parser."""
    settings = GeneratorSettings(
        data_dir=data_dir(), generator_engine="llamacpp", generator_prompt_formats={"default": "chat"}
    )
    with TestClient(create_app(settings)) as chat:
        wait_ready(chat, 300)
        response = chat.post(
            "/v1/generate", json={"task": TASK, "n": 8, "sampling": {"seed": 5, "max_tokens": 64}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["settings"]["prompt_format"] == "chat" and body["stats"]["completions"] == 8
        assert body["stats"]["accepted"] >= 2, body
        attributes = chat.post("/v1/attributes", json={"task": TASK, "n": 6, "sampling": {"seed": 5}})
        assert attributes.status_code == 200 and attributes.json()["attributes"], attributes.text


def test_teacher_classifies_few_shot_by_label_likelihood(client: TestClient) -> None:
    inputs = SENTIMENT_CASES
    response = client.post("/v1/classify", json={"task": TASK, "inputs": [{"text": t} for t, _ in inputs]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["engine"] == "llamacpp" and 2.5e8 < body["parameters"] < 3e8
    correct = sum(p["label"] == gold for p, (_, gold) in zip(body["predictions"], inputs, strict=True))
    assert correct >= 5, body["predictions"]


def test_scores_with_a_shared_prefix_equal_scores_alone() -> None:
    """The prompts of a call share their few-shot prefix's KV cells: that changes no score."""
    settings = GeneratorSettings(data_dir=data_dir(), generator_engine="llamacpp")
    engine = LlamaCppEngine(settings, resolve_teacher(settings, "default", gguf=True))
    prefix = (
        "Review: A warm, funny film.\nSentiment: positive\n\nReview: A dull mess.\nSentiment: negative\n\n"
    )
    prompts = [prefix + f"Review: {t}\nSentiment:" for t in ("Loved it.", "Hated every minute of it.")]
    labels = [" positive", " negative", " very mixed feelings"]

    async def scores() -> tuple[list[list[float]], list[list[float]]]:
        await engine.start()
        try:
            together = await engine.score_continuations(prompts, labels)
            alone = [(await engine.score_continuations([p], labels))[0] for p in prompts]
            return together, alone
        finally:
            await engine.close()

    together, alone = asyncio.run(scores())
    # Equal up to llama.cpp's batch numerics (one prompt three times in one batch: +-0.05 seen).
    for row, expected in zip(together, alone, strict=True):
        assert row == pytest.approx(expected, rel=0.05, abs=0.1)
    assert together[0][0] > together[0][1] and together[1][1] > together[1][0]


def test_the_packaged_teacher_passes_its_start_check() -> None:
    """The registry's start check (the generator runs it before serving a packaged teacher) on the
    real default teacher: its greedy answer to the probe is text."""
    settings = GeneratorSettings(data_dir=data_dir(), generator_engine="llamacpp")
    engine = LlamaCppEngine(settings, resolve_teacher(settings, "default", gguf=True))

    async def probe() -> str:
        await engine.start()
        try:
            await check_generation(engine)
            (result,) = await engine.generate([PROBE], [PROBE_SAMPLING])
            return result.completions[0].text
        finally:
            await engine.close()

    answer = asyncio.run(probe())
    assert degenerate(answer) is None, answer


def test_teacher_answers_questions_few_shot(client: TestClient) -> None:
    squad = RunSpec.model_validate(load_spec_file(ROOT / "examples/squad.yaml")).task.model_dump()
    cases = SQUAD_CASES
    inputs = [{"context": c, "question": q} for c, q, _ in cases]
    response = client.post("/v1/answer", json={"task": squad, "inputs": inputs, "max_tokens": 16})
    assert response.status_code == 200, response.text
    answers = response.json()["answers"]
    assert all("\n" not in a for a in answers)
    assert sum(e.lower() in a.lower() for a, (_, _, e) in zip(answers, cases, strict=True)) >= 2, answers


def test_openai_completions_and_chat(client: TestClient) -> None:
    few_shot = "Review: A warm, funny film.\nSentiment: positive\n\nReview: A dull mess.\nSentiment:"
    body = {"model": "google/gemma-3-270m", "prompt": few_shot, "max_tokens": 3, "n": 2, "seed": 1}
    done = client.post("/v1/completions", json=body).json()
    assert len(done["choices"]) == 2 and all(c["text"] for c in done["choices"])
    assert done["usage"]["prompt_tokens"] > 10
    assert client.post("/v1/completions", json=body).json()["choices"] == done["choices"]
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] is not None
    refused = client.post("/v1/completions", json={**body, "frequency_penalty": 0.5})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "frequency_penalty"


def test_openai_completion_logprobs_with_echo_score_the_prompt(client: TestClient) -> None:
    """What lm-evaluation-harness's local-completions sends for log-likelihoods: token ids, echo,
    logprobs, one greedy token; and the same number from the generation side."""
    context, continuation = "The capital of France is", " Paris"
    ids = client.post("/tokenize", json={"prompt": context + continuation}).json()["tokens"]
    n_context = client.post("/tokenize", json={"prompt": context}).json()["count"]
    body = {
        "model": "default",
        "prompt": [ids],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": 1,
        "echo": True,
    }
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    logprobs = response.json()["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(ids) + 1
    assert logprobs["token_logprobs"][0] is None  # nothing predicts the first (BOS) token
    assert logprobs["text_offset"][:2] == [0, len(logprobs["tokens"][0])]
    cont_logprob = sum(logprobs["token_logprobs"][n_context : len(ids)])
    assert -6 < cont_logprob < 0  # " Paris" is likely after this context
    assert all(len(top) >= 1 for top in logprobs["top_logprobs"][1:])
    greedy = client.post(
        "/v1/completions",
        json={"model": "default", "prompt": context, "max_tokens": 1, "temperature": 0, "logprobs": 5},
    ).json()["choices"][0]
    top = greedy["logprobs"]["top_logprobs"][0]
    assert 5 <= len(top) <= 6 and abs(top.get(continuation, -99) - cont_logprob) < 0.1
    assert greedy["logprobs"]["tokens"] == [greedy["text"]]


def test_lm_evaluation_harness_scores_a_local_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-evaluation-harness's local-completions on the llama.cpp engine: the Hugging Face tokenizer
    of the same model gives the token ids (Gemma's are the GGUF's), the engine scores them."""
    settings = GeneratorSettings(
        data_dir=data_dir(), generator_engine="llamacpp", api_keys={"tests": "lm-eval-key"}
    )
    monkeypatch.setenv("OPENAI_API_KEY", "lm-eval-key")
    with serve(settings, timeout_s=300) as url:
        run_lm_eval(url, resolve_teacher(settings, "default").path, tmp_path)
