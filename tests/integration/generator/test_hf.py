"""The transformers fallback engine: the default teacher generates and classifies end to end, and a
causal student GOLD trained (SmolLM2, whose tokenizer adds no BOS) serves as a teacher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.generator.config import GeneratorSettings
from services.generator.main import create_app
from shared.spec import RunSpec, load_spec_file
from tests.integration.conftest import QA, _train
from tests.integration.generator.conftest import wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TASK = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump()


def test_hf_engine_generates_and_classifies() -> None:
    settings = GeneratorSettings(
        data_dir=Path(os.environ.get("GOLD_DATA_DIR", ROOT / ".gold")),
        generator_engine="hf",
        generator_samples_per_prompt=2,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client, 600)
        response = client.post(
            "/v1/generate", json={"task": TASK, "n": 2, "sampling": {"seed": 4, "max_tokens": 32}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["settings"]["engine"] == "hf" and body["stats"]["completions"] == 2
        assert body["stats"]["accepted"] + sum(body["stats"]["rejected"].values()) == 2
        assert body["stats"]["accepted"] >= 1, body["rejections"]
        texts = {s["fields"]["text"] for s in body["samples"]}
        assert len(texts) == len(body["samples"])  # one generate call, n=2: two different samples
        inputs = [
            {"text": "A wonderful, moving film, I loved it."},
            {"text": "Awful. Boring and far too long."},
        ]
        out = client.post("/v1/classify", json={"task": TASK, "inputs": inputs}).json()
        assert [p["label"] for p in out["predictions"]] == ["positive", "negative"]


def test_a_trained_causal_student_serves_without_bos(tmp_path: Path) -> None:
    """SmolLM2 declares a BOS token it never adds; a checkpoint trained with that tokenizer passes
    the engine's BOS guard and answers as transformers does on the same tokens (none added)."""
    torch.set_num_threads(2)
    cid = _train(tmp_path, "causal", QA, ["context", "question"], "answer", None)
    folder = tmp_path / "checkpoints" / cid
    settings = GeneratorSettings(
        data_dir=tmp_path,
        generator_engine="hf",
        generator_models={"default": str(folder)},
        generator_model_ids={"default": "gold-student"},
        generator_dtype="float32",  # as the reference below: greedy tokens flip between dtypes
    )
    prompt = "context: Paris is the capital of France.\nquestion: What is the capital of France?\nanswer:"
    with TestClient(create_app(settings)) as client:
        wait_ready(client, 300)
        response = client.post(
            "/v1/completions",
            json={"model": "gold-student", "prompt": prompt, "max_tokens": 8, "temperature": 0},
        )
        assert response.status_code == 200, response.text
        body = response.json()
    text = body["choices"][0]["text"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(prompt, return_tensors="pt")
    width = ids["input_ids"].shape[1]
    assert body["usage"]["prompt_tokens"] == width and ids["input_ids"][0, 0] != tokenizer.bos_token_id
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert text.strip() and text == tokenizer.decode(out[0, width:], skip_special_tokens=True)
