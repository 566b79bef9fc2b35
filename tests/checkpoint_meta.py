"""A valid gold_checkpoint.json for tests that need a published checkpoint but no trained model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.checkpoints import CheckpointMeta, CheckpointTask, CheckpointTraining

TRAINING: dict[str, Any] = {
    "model": "default",
    "epochs": 1,
    "epochs_run": 1,
    "best_epoch": 1,
    "learning_rate": 2e-4,
    "batch_size": 16,
    "max_length": 128,
    "max_target_length": 1,
    "loss": "ce",
    "sce_alpha": 1.0,
    "sce_beta": 1.0,
    "seed": 44,
    "early_stopping": False,
    "train_examples": 2,
    "holdout_examples": 0,
    "evaluation_examples": 0,
    "dropped_examples": 0,
    "epoch_losses": [0.7],
    "holdout_history": [],
    "device": "cpu",
}


def checkpoint_meta(**changes: Any) -> CheckpointMeta:
    """A classifier checkpoint's metadata, with `changes` to its top-level fields."""
    fields: dict[str, Any] = {
        "checkpoint_id": "00000000-0000-0000-0000-000000000001",
        "student_kind": "classifier",
        "base_model": "minilm",
        "task": CheckpointTask(
            type="classification", input_fields=["text"], output_field="label", labels=["no", "yes"]
        ),
        "training": CheckpointTraining.model_validate(TRAINING),
        "metrics": {"eval_accuracy": 0.5},
        "created_at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return CheckpointMeta.model_validate(fields | changes)
