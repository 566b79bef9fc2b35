"""What the host can do, read once: a visible CUDA GPU, native bf16 matmuls on the CPU, the cores
this process may use. Every service picks its engine, dtype and threads from here, so the rules
live in one place (docs/platform.md, "Engines: which runs where", has the measurements behind them).

The rule for dtype: bfloat16 only where the hardware multiplies it natively (a CUDA GPU; an x86 CPU
with AVX512-BF16 or AMX-BF16; an Arm CPU with the BF16 extension). Elsewhere bf16 weights are
converted on every matmul: on an AVX2 host vLLM ran 2.3x slower in bf16 than in float32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags that mean bf16 matmuls run natively (x86: AVX512-BF16, AMX; Arm: BF16).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`); empty where /proc/cpuinfo is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def cpu_simd() -> str:
    """The widest x86 vector extension, for logs and benchmark tables ("avx512", "avx2", ...)."""
    flags = cpu_flags()
    for name in ("avx512f", "avx2", "avx", "sse4_2"):
        if name in flags:
            return name.removesuffix("f")
    return platform.machine() or "unknown"


@functools.cache
def cuda_available() -> bool:
    """A CUDA GPU is visible to torch (False where torch is missing)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# The dtypes a dtype setting names; "auto" stands for one of them (auto_dtype).
DType = Literal["bfloat16", "float16", "float32"]


def auto_dtype(on_cuda: bool | None = None) -> DType:
    """bfloat16 where matmuls take it natively, float32 elsewhere (see the module's docstring)."""
    cuda = cuda_available() if on_cuda is None else on_cuda
    return "bfloat16" if cuda or cpu_has_native_bf16() else "float32"


def resolve_dtype(setting: DType | Literal["auto"], on_cuda: bool | None = None) -> DType:
    """A dtype setting ("auto" or a torch dtype name) as the dtype to use, logged when chosen."""
    if setting != "auto":
        return setting
    cuda = cuda_available() if on_cuda is None else on_cuda
    chosen = auto_dtype(cuda)
    logger.info(
        "dtype auto -> %s (%s)",
        chosen,
        "CUDA GPU" if cuda else f"CPU {cpu_simd()}, native bf16: {cpu_has_native_bf16()}",
    )
    return chosen


def autocast(device_type: str, *, bf16_on_cpu: bool = True) -> AbstractContextManager[object]:
    """A student's mixed precision: bf16 autocast where matmuls take bf16 natively (a CUDA GPU; a
    CPU with AVX512-BF16 or AMX, where it measured 1.4x the training and 1.6x the inference speed of
    float32 for MiniLM), full float32 elsewhere (emulated bf16 is slower than float32).
    bf16_on_cpu=False keeps a CPU in float32 anyway: the scorer's, where bf16 logits would round
    energies that differ in the second decimal, and scoring is ~1% of a run's time."""
    import torch

    if device_type == "cuda" or (device_type == "cpu" and bf16_on_cpu and cpu_has_native_bf16()):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
