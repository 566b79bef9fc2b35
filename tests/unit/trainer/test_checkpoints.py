"""Checkpoint folders in an artifact directory that cannot be written: a clear error naming the
directory, and nothing left behind that could pass for a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.checkpoints import publish
from shared.artifacts import UnwritableArtifacts, require_writable
from tests.support import unwritable


def test_an_unwritable_artifact_directory_is_named_before_and_while_publishing(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    written: list[Path] = []
    with unwritable(checkpoints):
        with pytest.raises(UnwritableArtifacts, match=f"artifact directory {checkpoints} is not writable"):
            require_writable(checkpoints)
        with pytest.raises(UnwritableArtifacts, match=f"artifact directory {checkpoints} is not writable"):
            publish(checkpoints / "abc", written.append)
    assert written == [] and list(checkpoints.iterdir()) == []
    require_writable(checkpoints)  # writable again: the check leaves no file behind
    assert list(checkpoints.iterdir()) == []


def test_require_writable_creates_a_missing_directory(tmp_path: Path) -> None:
    require_writable(tmp_path / "artifacts" / "checkpoints")
    assert (tmp_path / "artifacts" / "checkpoints").is_dir()
