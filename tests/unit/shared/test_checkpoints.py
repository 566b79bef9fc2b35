"""The checkpoint contract the trainer writes and the scorer reads (shared/checkpoints.py)."""

from __future__ import annotations

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
    write_metadata(folder, {"student_kind": "classifier", "metrics": {"eval_accuracy": 0.5}})
    assert read_metadata(folder) == {"student_kind": "classifier", "metrics": {"eval_accuracy": 0.5}}
    assert ArtifactStore(str(tmp_path), tmp_path / "cache").fetch(cid) == folder


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
