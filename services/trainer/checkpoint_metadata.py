"""What a trained student leaves behind: its gold_checkpoint.json (the contract in
shared/checkpoints.py), built from the config and what training did, and the checkpoint folder
written with it (published atomically by services/trainer/checkpoints.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from services.trainer.checkpoints import model_card, publish
from services.trainer.students import Student
from services.trainer.train_config import TrainConfig
from services.trainer.training_data import TrainingData
from services.trainer.training_loop import Fit
from shared.checkpoints import (
    CheckpointMeta,
    CheckpointTask,
    CheckpointTraining,
    HoldoutCheck,
    write_metadata,
)


def checkpoint_metadata(
    cfg: TrainConfig,
    student: Student,
    base_model: str,
    data: TrainingData,
    fit: Fit,
    metrics: dict[str, float],
    report: dict[str, Any],
    device: torch.device,
) -> CheckpointMeta:
    """The checkpoint's gold_checkpoint.json (shared/checkpoints.py): task, training and metrics."""
    training = CheckpointTraining(
        model=cfg.model,
        epochs=cfg.epochs,
        epochs_run=fit.epochs_run,
        best_epoch=fit.final_epoch,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        max_target_length=student.max_target_length,
        loss=cfg.loss,
        sce_alpha=cfg.sce_alpha,
        sce_beta=cfg.sce_beta,
        distill_weight=cfg.distill_weight if data.distill else 0.0,
        distill_temperature=cfg.distill_temperature,
        class_weights=data.class_weights.tolist() if data.class_weights is not None else None,
        lora_rank=cfg.lora_rank,
        seed=cfg.seed,
        early_stopping=fit.early,
        init_from=cfg.init_from.name if cfg.init_from else None,
        train_examples=len(data.train),
        holdout_examples=len(data.holdout),
        evaluation_examples=len(cfg.evaluation),
        dropped_examples=data.dropped,
        epoch_losses=fit.epoch_losses,
        holdout_history=[HoldoutCheck.model_validate(check) for check in fit.holdout_history],
        device=device.type,
        processes=report["processes"],
    )
    return CheckpointMeta(
        checkpoint_id=cfg.checkpoint_id,
        run_id=cfg.metadata.get("run_id"),
        iteration=cfg.metadata.get("iteration"),
        role=cfg.metadata.get("role"),
        student_kind=cfg.kind,
        base_model=base_model,
        task=CheckpointTask(
            type=cfg.task_type,
            input_fields=cfg.input_fields,
            output_field=cfg.output_field,
            labels=cfg.labels,
        ),
        training=training,
        metrics=metrics,
        created_at=datetime.now(UTC),
    )


def save_checkpoint(cfg: TrainConfig, student: Student, meta: CheckpointMeta) -> None:
    """Hugging Face folder + metadata + model card, published atomically at cfg.output_dir."""

    def write(folder: Path) -> None:
        student.model.save_pretrained(folder)
        student.tokenizer.save_pretrained(folder)
        write_metadata(folder, meta)
        (folder / "README.md").write_text(model_card(meta), encoding="utf-8")

    publish(cfg.output_dir, write)
