"""The checkpoint contract the trainer writes and the scorer reads (shared/checkpoints.py)."""

from __future__ import annotations

import json
import math
import uuid

import pytest

from shared.artifacts import ArtifactStore
from shared.checkpoints import (
    METADATA_FILE,
    CheckpointNotFound,
    checkpoint_dir,
    checkpoint_uuid,
    read_metadata,
    write_metadata,
)
from shared.errors import NotFound
from tests.checkpoint_meta import checkpoint_meta

# gold_checkpoint.json as the first trainer wrote it (2026-11-27): none of the keys added since.
FIRST_FORMAT = {
    "format_version": 1,
    "checkpoint_id": "7d0c1c52-5a55-4b1c-9d51-0a1f0b8e2f10",
    "run_id": "0b7e1f2a-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
    "iteration": 2,
    "role": "loop",
    "student_kind": "causal",
    "base_model": "smollm2-135m",
    "task": {
        "type": "seq2seq",
        "input_fields": ["context", "question"],
        "output_field": "answer",
        "labels": None,
    },
    "training": {
        "model": "default",
        "epochs": 3,
        "epochs_run": 3,
        "best_epoch": 3,
        "learning_rate": 0.0002,
        "batch_size": 16,
        "max_length": 96,
        "max_target_length": 64,
        "loss": "ce",
        "sce_alpha": 1.0,
        "sce_beta": 1.0,
        "seed": 44,
        "early_stopping": True,
        "init_from": None,
        "train_examples": 40,
        "holdout_examples": 8,
        "evaluation_examples": 0,
        "dropped_examples": 1,
        "epoch_losses": [2.1, 1.4, 1.2],
        "holdout_history": [{"epoch": 1, "loss": 1.9, "accuracy": float("nan")}],
        "device": "cpu",
    },
    "metrics": {"train_loss": 1.2, "holdout_f1": 0.4},
    "created_at": "2026-11-27T10:00:00.000000+00:00",
}


def test_checkpoints_live_under_artifacts_by_uuid_only(tmp_path):
    cid = checkpoint_uuid("run", 1, "loop")
    assert cid == checkpoint_uuid("run", 1, "loop") != checkpoint_uuid("run", 1, "final")
    assert (
        checkpoint_dir(tmp_path, cid)
        == checkpoint_dir(tmp_path, str(cid))
        == tmp_path / "checkpoints" / str(cid)
    )
    with pytest.raises(ValueError):
        checkpoint_dir(tmp_path, "../../etc")


def test_metadata_round_trips_and_a_published_folder_is_found(tmp_path):
    cid = uuid.uuid4()
    folder = checkpoint_dir(tmp_path, cid)
    folder.mkdir(parents=True)
    metrics = {"eval_accuracy": 0.5, "holdout_accuracy": math.nan}  # NaN: no accuracy (seq2seq)
    meta = checkpoint_meta(checkpoint_id=str(cid), metrics=metrics)
    write_metadata(folder, meta)
    read = read_metadata(folder)
    assert read.model_dump(exclude={"metrics"}) == meta.model_dump(exclude={"metrics"})
    assert read.metrics["eval_accuracy"] == 0.5 and math.isnan(read.metrics["holdout_accuracy"])
    assert ArtifactStore(str(tmp_path), tmp_path / "cache").fetch(cid) == folder


def test_the_first_format_still_loads_with_the_defaults_it_was_trained_under(tmp_path):
    (tmp_path / METADATA_FILE).write_text(json.dumps(FIRST_FORMAT), encoding="utf-8")
    meta = read_metadata(tmp_path)
    assert (
        meta.student_kind == "causal"
        and meta.task.student_format().causal_prompt({"context": "c", "question": "q"})
        == "context: c\nquestion: q\nanswer:"
    )
    assert (meta.training.max_length, meta.training.max_target_length) == (96, 64)
    training = meta.training
    assert (training.distill_weight, training.class_weights, training.lora_rank) == (0.0, None, None)
    assert (training.head_learning_rate, training.processes) == (None, 1)
    assert math.isnan(training.holdout_history[0].accuracy) and meta.created_at.tzinfo is not None


def test_keys_a_newer_trainer_adds_are_ignored(tmp_path):
    newer = {**FIRST_FORMAT, "tokenizer_revision": "abc", "training": {**FIRST_FORMAT["training"], "new": 1}}
    (tmp_path / METADATA_FILE).write_text(json.dumps(newer), encoding="utf-8")
    assert read_metadata(tmp_path).base_model == "smollm2-135m"


def test_metadata_without_a_field_the_readers_need_is_no_checkpoint(tmp_path):
    (tmp_path / METADATA_FILE).write_text(json.dumps({**FIRST_FORMAT, "student_kind": "ranker"}))
    with pytest.raises(CheckpointNotFound, match="is not GOLD checkpoint metadata .*student_kind"):
        read_metadata(tmp_path)
    training = {k: v for k, v in FIRST_FORMAT["training"].items() if k != "max_length"}
    (tmp_path / METADATA_FILE).write_text(json.dumps({**FIRST_FORMAT, "training": training}))
    with pytest.raises(CheckpointNotFound, match="training.max_length: Field required"):
        read_metadata(tmp_path)


def test_missing_metadata_is_a_not_found_error_naming_the_file(tmp_path):
    cid = uuid.uuid4()
    folder = checkpoint_dir(tmp_path, cid)
    store = ArtifactStore(str(tmp_path), tmp_path / "cache")
    for call in (lambda: read_metadata(folder), lambda: store.fetch(cid), lambda: store.read_metadata(cid)):
        with pytest.raises(CheckpointNotFound) as caught:
            call()
        assert isinstance(caught.value, NotFound) and caught.value.status_code == 404
        assert caught.value.path == folder / METADATA_FILE
        assert str(folder / METADATA_FILE) in str(caught.value) and str(cid) in str(caught.value)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\udcff"])
def test_unreadable_metadata_is_the_same_error(tmp_path, text):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / METADATA_FILE).write_text(text, encoding="utf-8", errors="surrogateescape")
    with pytest.raises(CheckpointNotFound, match="gold_checkpoint.json"):
        read_metadata(folder)
