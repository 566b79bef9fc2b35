"""The transformers fallback engine on the default teacher: generate and classify end to end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.main import create_app
from shared.spec import RunSpec, load_spec_file
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
