"""The checkpoint contract between the trainer (the writer) and the scorer (the reader).

A checkpoint is a Hugging Face folder plus `gold_checkpoint.json` (task, training config, metrics), at
{artifacts}/checkpoints/{checkpoint_id}/ and nowhere else: the id is a parsed UUID, so it cannot carry a
path. The id is deterministic per (run, iteration, role), so a re-run lands in the same folder. A folder
counts as published once its metadata file is there; shared/artifacts.py finds it in the store.

The metadata file is one typed model, CheckpointMeta: the trainer writes it and every reader (the
scorer, the trainer continuing a student, the artifact store, the benches) reads it through it, so a
reader cannot fall back on defaults of its own. Every file written since the first trainer loads:
the keys added later (marked "since") default to what a trainer wrote before it had them, and keys a
newer trainer adds are ignored by an older reader."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ValidationError

from shared.errors import NotFound
from shared.student_format import StudentFormat, StudentKind

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


class CheckpointTask(BaseModel):
    """The task the student was trained on: what its input text is built from."""

    type: Literal["classification", "seq2seq"]
    input_fields: list[str]
    output_field: str
    labels: list[str] | None = None

    def student_format(self) -> StudentFormat:
        return StudentFormat.from_task(self.input_fields, self.output_field, self.labels)


class HoldoutCheck(BaseModel):
    epoch: int
    loss: float
    accuracy: float  # NaN for a generative student (its holdout is decoded once, at the end)


class CheckpointTraining(BaseModel):
    """How the student was trained. max_length and max_target_length are also how it is used: the
    scorer encodes and decodes with them."""

    model: str
    epochs: int
    epochs_run: int
    best_epoch: int
    learning_rate: float
    head_learning_rate: float | None = None  # since 2026-12-01
    batch_size: int
    max_length: int
    max_target_length: int
    loss: Literal["ce", "sce"]
    sce_alpha: float
    sce_beta: float
    distill_weight: float = 0.0  # since 2026-11-27 (soft-label distillation); none before
    distill_temperature: float = 2.0
    class_weights: list[float] | None = None  # since 2026-12-01 (balance_classes)
    lora_rank: int | None = None  # since 2026-12-01; the adapters are merged into the saved weights
    seed: int
    early_stopping: bool
    init_from: str | None = None  # the checkpoint id it continued from
    train_examples: int
    holdout_examples: int
    evaluation_examples: int
    dropped_examples: int
    epoch_losses: list[float]
    holdout_history: list[HoldoutCheck]
    device: str
    processes: int = 1  # since 2026-11-27 (distributed training); one process before


class CheckpointMeta(BaseModel):
    """gold_checkpoint.json. Field order is the file's key order."""

    format_version: int = FORMAT_VERSION
    checkpoint_id: str
    run_id: str | None = None  # None for a checkpoint trained from the CLI
    iteration: int | None = None
    role: str | None = None
    student_kind: StudentKind
    base_model: str
    task: CheckpointTask
    training: CheckpointTraining
    metrics: dict[str, float]
    created_at: datetime


def metadata_path(folder: Path) -> Path:
    return folder / METADATA_FILE


def read_metadata(folder: Path) -> CheckpointMeta:
    """The checkpoint's metadata; CheckpointNotFound (naming the file) when it is missing or unreadable."""
    path = metadata_path(folder)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointNotFound(path) from None
    return parse_metadata(data, path)


def parse_metadata(data: bytes, path: Path | str) -> CheckpointMeta:
    """The metadata in `data` (read from `path`); CheckpointNotFound naming `path` when it is no
    checkpoint metadata (not JSON, or not the fields a trainer writes)."""
    try:
        return CheckpointMeta.model_validate_json(data)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise CheckpointNotFound(path, f"is not valid JSON ({exc.errors()[0]['msg']})") from exc
        raise CheckpointNotFound(path, f"is not GOLD checkpoint metadata ({_fields(exc)})") from exc


def _fields(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:5])


def write_metadata(folder: Path, meta: CheckpointMeta) -> None:
    metadata_path(folder).write_text(json.dumps(meta.model_dump(mode="json"), indent=2), encoding="utf-8")
