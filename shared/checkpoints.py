"""The checkpoint contract between the trainer (the writer) and the scorer (the reader).

A checkpoint is a Hugging Face folder plus `gold_checkpoint.json` (task, training config, metrics), at
{artifacts}/checkpoints/{checkpoint_id}/ and nowhere else: the id is a parsed UUID, so it cannot carry a
path. The id is deterministic per (run, iteration, role), so a re-run lands in the same folder. A folder
counts as published once its metadata file is there; shared/artifacts.py finds it in the store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from shared.errors import NotFound

CHECKPOINT_NAMESPACE = uuid.UUID("4c91454a-0be8-4e5c-9344-a0c210548a2f")
METADATA_FILE = "gold_checkpoint.json"
FORMAT_VERSION = 1


class CheckpointNotFound(NotFound):
    """A checkpoint folder without readable metadata: never trained, removed, or not a checkpoint."""

    def __init__(self, path: Path | str, reason: str = "is missing"):
        # a str for a file behind a URL (Path would fold its "//")
        super().__init__(f"checkpoint {PurePosixPath(str(path)).parent.name} not found: {path} {reason}")
        self.path = path


def checkpoint_uuid(run_id: str, iteration: int, role: str) -> uuid.UUID:
    """Deterministic, so a re-run of the same (run, iteration, role) lands in the same place."""
    return uuid.uuid5(CHECKPOINT_NAMESPACE, f"{run_id}/{iteration}/{role}")


def checkpoints_root(artifacts: Path) -> Path:
    return artifacts / "checkpoints"


def checkpoint_dir(artifacts: Path, checkpoint_id: uuid.UUID | str) -> Path:
    return checkpoints_root(artifacts) / str(uuid.UUID(str(checkpoint_id)))


def metadata_path(folder: Path) -> Path:
    return folder / METADATA_FILE


def read_metadata(folder: Path) -> dict[str, Any]:
    """The checkpoint's metadata; CheckpointNotFound (naming the file) when it is missing or unreadable."""
    path = metadata_path(folder)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointNotFound(path) from None
    return parse_metadata(data, path)


def parse_metadata(data: bytes, path: Path | str) -> dict[str, Any]:
    """The metadata in `data` (read from `path`); CheckpointNotFound naming `path` when it is no
    JSON object."""
    try:
        meta = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointNotFound(path, f"is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointNotFound(path, "is not a JSON object")
    return meta


def write_metadata(folder: Path, meta: dict[str, Any]) -> None:
    metadata_path(folder).write_text(json.dumps(meta, indent=2), encoding="utf-8")
