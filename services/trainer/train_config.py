"""What one training job is: `TrainConfig`, and `config_from_spec()`, the one mapping from a run spec
and the trainer's settings to it (the RQ job and the `train` CLI both use it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from services.trainer.config import TrainerSettings
from services.trainer.students import Example
from shared.evaluation_data import load_evaluation
from shared.settings import DEFAULT_ALLOWED_STUDENTS, GoldSettings
from shared.spec import RunSpec
from shared.student_format import StudentKind

logger = logging.getLogger(__name__)


class EvalItem(BaseModel):
    fields: dict[str, str]
    references: list[str]


def evaluation_items(spec: RunSpec) -> list[EvalItem]:
    """The spec's real evaluation data, as a student is scored on it (none without `evaluation`);
    EvaluationDataError when its source cannot be read."""
    if spec.evaluation is None:
        return []
    data = load_evaluation(spec.evaluation, spec.task)
    if data.skipped:
        logger.info("evaluation rows skipped: %s", dict(data.skipped))
    return [EvalItem(fields=e.fields, references=list(e.references)) for e in data.examples]


class TrainConfig(BaseModel):
    checkpoint_id: str
    output_dir: Path  # the final folder; written atomically
    kind: StudentKind
    model: str = "default"
    task_type: Literal["classification", "seq2seq"]
    input_fields: list[str]
    output_field: str
    labels: list[str] | None = None
    init_from: Path | None = None  # continue from this checkpoint folder instead of a fresh student
    epochs: int = 3
    learning_rate: float = 2e-4
    head_learning_rate: float | None = None  # classifier: the head's rate (None: learning_rate)
    batch_size: int = 16
    max_length: int = 128
    max_target_length: int | None = None  # None: fitted to the answers in `train` and `holdout`
    loss: Literal["ce", "sce"] = "ce"
    sce_alpha: float = 1.0
    sce_beta: float = 1.0
    # Soft-label distillation (classifier): (1 - w) * hard loss + w * T^2 * KL(teacher_T || student_T).
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    # Classifier: weight each label's examples so that every label carries the same total weight.
    balance_classes: bool = False
    lora_rank: int | None = None  # LoRA adapters of this rank, merged at save; None = full fine-tuning
    seed: int = 44
    warmup_fraction: float = 0.06
    # Early stopping on the holdout (the final student): keep the best epoch, stop after `patience`.
    early_stopping: bool = False
    patience: int = 2
    # Epochs always trained before an epoch may count as the best: a held-out set of a few dozen noisy
    # generated samples can otherwise crown a barely-trained first epoch (seen: final loss 0.69).
    min_epochs: int = 1
    # Below this many held-out examples their accuracy is noise (teacher verification that drops
    # disagreements can leave 2-4): no early stopping then, the whole epoch budget is trained.
    min_holdout_for_early_stopping: int = 20
    train: list[Example]
    holdout: list[Example] = Field(default_factory=list)
    evaluation: list[EvalItem] = Field(default_factory=list)
    eval_batch_size: int = 64
    allowed_models: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_STUDENTS))
    # Where packaged students are converted once (GOLD_MODEL_DIR, shared with the teacher).
    models_dir: Path = Field(default_factory=lambda: GoldSettings().models_dir)
    torch_threads: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)  # run_id, iteration, role: for the card


def config_from_spec(
    spec: RunSpec,
    settings: TrainerSettings,
    *,
    checkpoint_id: str,
    output_dir: Path,
    train: list[Example],
    holdout: list[Example],
    evaluation: list[EvalItem],
    fresh: bool = False,
    early_stopping: bool | None = None,
    soft_labels: bool = True,
    init_from: Path | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainConfig:
    """The one mapping from a run spec and the trainer's settings to a TrainConfig (the job and the
    CLI both use it). A fresh student (final, reference) gets the final epoch budget and, unless
    `early_stopping` says otherwise, early stopping; soft_labels=False trains on hard labels only
    (real rows carry no teacher distribution)."""
    s = spec.student
    return TrainConfig(
        checkpoint_id=checkpoint_id,
        output_dir=output_dir,
        kind=spec.student_kind,
        model=s.model,
        task_type=spec.task.type,
        input_fields=spec.task.input_fields,
        output_field=spec.task.output_field,
        labels=spec.task.labels,
        init_from=init_from,
        epochs=(settings.final_max_epochs or s.final_epochs) if fresh else s.epochs,
        learning_rate=spec.fresh_student_learning_rate if fresh else s.learning_rate,
        head_learning_rate=s.head_learning_rate,
        batch_size=s.batch_size,
        max_length=s.max_length,
        max_target_length=s.max_target_length,
        loss=s.loss,
        sce_alpha=s.sce_alpha,
        sce_beta=s.sce_beta,
        distill_weight=s.distill_weight if soft_labels else 0.0,
        distill_temperature=s.distill_temperature,
        balance_classes=s.balance_classes,
        lora_rank=s.lora_rank,
        seed=s.seed,
        early_stopping=fresh if early_stopping is None else early_stopping,
        patience=settings.final_patience,
        min_holdout_for_early_stopping=settings.final_min_holdout,
        min_epochs=min(s.epochs, s.final_epochs),
        train=train,
        holdout=holdout,
        evaluation=evaluation,
        eval_batch_size=settings.eval_batch_size,
        allowed_models=settings.allowed_student_models,
        models_dir=settings.models_dir,
        torch_threads=settings.torch_threads,
        metadata=metadata or {},
    )
