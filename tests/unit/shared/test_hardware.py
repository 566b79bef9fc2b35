"""The dtype rule: bfloat16 only where matmuls take it natively."""

from __future__ import annotations

import pytest

from shared import hardware


@pytest.mark.parametrize(
    ("flags", "cuda", "expected"),
    [
        ({"avx2", "fma"}, False, "float32"),  # the AVX2 host where vLLM bf16 ran 2.3x slower
        ({"avx512f", "avx512_bf16"}, False, "bfloat16"),
        ({"avx512f", "amx_bf16"}, False, "bfloat16"),
        ({"asimd", "bf16"}, False, "bfloat16"),  # Arm with the BF16 extension
        ({"avx2"}, True, "bfloat16"),  # a GPU does the matmuls
    ],
)
def test_auto_dtype_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], cuda: bool, expected: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert hardware.resolve_dtype("auto", on_cuda=cuda) == expected
    assert hardware.resolve_dtype("float32", on_cuda=cuda) == "float32"  # an explicit dtype stays


def test_trainer_autocast_on_a_cpu_only_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    with hardware.autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    with hardware.autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with hardware.autocast("cpu", bf16_on_cpu=False):  # the scorer's: energies in float32 on a CPU
        assert not torch.is_autocast_enabled("cpu")


def test_the_cores_this_process_may_use() -> None:
    assert 1 <= hardware.usable_cores() <= (__import__("os").cpu_count() or 1)
