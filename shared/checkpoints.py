"""The checkpoint contract between the trainer (the writer) and the scorer (the reader).

A checkpoint is a Hugging Face folder plus `gold_checkpoint.json` (task, training config, metrics), at
{artifacts}/checkpoints/{checkpoint_id}/ and nowhere else: the id is a parsed UUID, so it cannot carry a
path. The id is deterministic per (run, iteration, role), so a re-run lands in the same folder."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from shared.errors import NotFound

CHECKPOINT_NAMESPACE = uuid.UUID("4c91454a-0be8-4e5c-9344-a0c210548a2f")
METADATA_FILE = "gold_checkpoint.json"
FORMAT_VERSION = 1


class CheckpointNotFound(NotFound):
    """A checkpoint folder without readable metadata: never trained, removed, or not a checkpoint."""

    def __init__(self, path: Path, reason: str = "is missing"):
        super().__init__(f"checkpoint {path.parent.name} not found: {path} {reason}")
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


def existing_checkpoint_dir(artifacts: Path, checkpoint_id: uuid.UUID | str) -> Path:
    """The folder of a published checkpoint (folders are published whole, by a rename), or
    CheckpointNotFound."""
    folder = checkpoint_dir(artifacts, checkpoint_id)
    if not metadata_path(folder).is_file():
        raise CheckpointNotFound(metadata_path(folder))
    return folder


def read_metadata(folder: Path) -> dict[str, Any]:
    """The checkpoint's metadata; CheckpointNotFound (naming the file) when it is missing or unreadable."""
    path = metadata_path(folder)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointNotFound(path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointNotFound(path, f"is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointNotFound(path, "is not a JSON object")
    return meta


def write_metadata(folder: Path, meta: dict[str, Any]) -> None:
    metadata_path(folder).write_text(json.dumps(meta, indent=2), encoding="utf-8")
