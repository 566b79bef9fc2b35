"""The examples a student trains on: read from JSONL files (a run's exported dataset included),
filtered to the usable ones, tokenised once, and moved to the device batch by batch."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, cast

import torch

from services.trainer.students import Example, Student
from services.trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainingData:
    """The usable examples, tokenised once."""

    train: list[Example]
    holdout: list[Example]
    dropped: int
    distill: bool  # soft-label distillation applies (a classifier with distill_weight > 0)
    train_inputs: list[dict[str, list[int]]]
    train_targets: list[Any]
    train_soft: list[list[float] | None] | None
    # Classifier with balance_classes: each label's weight in the loss, so that every label present
    # carries the same total weight (None: every example weighs the same).
    class_weights: torch.Tensor | None
    holdout_inputs: list[dict[str, list[int]]]
    holdout_targets: list[Any]


def prepare_data(cfg: TrainConfig, student: Student) -> TrainingData:
    """A classifier cannot learn from a label outside the label set: such examples are counted and
    dropped (a seq2seq example without a target too)."""
    fmt = student.fmt

    def usable(examples: list[Example]) -> list[Example]:
        if cfg.kind != "classifier":
            return [e for e in examples if fmt.target(e.fields, e.label)]
        return [e for e in examples if fmt.label_index(e.fields, e.label) is not None]

    train_set, holdout_set = usable(cfg.train), usable(cfg.holdout)
    if not train_set:
        raise ValueError("no usable training examples")
    distill = cfg.distill_weight > 0 and cfg.kind == "classifier"
    if cfg.distill_weight > 0 and not distill:
        logger.warning("soft-label distillation applies to classifier students only: ignored")
    train_targets = student.encode_targets(train_set)
    return TrainingData(
        train=train_set,
        holdout=holdout_set,
        dropped=len(cfg.train) - len(train_set) + len(cfg.holdout) - len(holdout_set),
        distill=distill,
        train_inputs=student.encode_inputs(train_set),
        train_targets=train_targets,
        train_soft=student.encode_soft(train_set) if distill else None,
        # A classifier's targets are label indices (balancing applies to classifiers alone).
        class_weights=balanced_class_weights(cast(list[int], train_targets), len(cfg.labels or ()))
        if _balances(cfg)
        else None,
        holdout_inputs=student.encode_inputs(holdout_set) if holdout_set else [],
        holdout_targets=student.encode_targets(holdout_set) if holdout_set else [],
    )


def _balances(cfg: TrainConfig) -> bool:
    return cfg.balance_classes and cfg.kind == "classifier" and bool(cfg.labels)


def balanced_class_weights(targets: list[int], width: int) -> torch.Tensor:
    """n / (k * n_c) for each of the k labels present (n_c examples of n): a label the teacher's
    relabelling made rare weighs as much in total as a common one (absent labels weigh 0)."""
    counts = torch.bincount(torch.tensor(targets, dtype=torch.long), minlength=width).float()
    present = counts > 0
    weights = torch.zeros(width)
    weights[present] = len(targets) / (int(present.sum()) * counts[present])
    return weights


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def read_examples(path: Path) -> list[Example]:
    """JSONL rows: {"fields": {...}, "label": "..."} or the fields themselves."""
    return [Example(**r) if "fields" in r else Example(fields=r) for r in _jsonl(path)]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_run_dataset(path: Path) -> tuple[list[Example], list[Example]]:
    """A run's exported dataset (GET /runs/{id}/dataset) as the final student saw it: the seed
    examples and the generated samples verification kept, with the teacher's soft labels, split
    by their hold-out flag."""
    train_rows: list[Example] = []
    holdout_rows: list[Example] = []
    for row in _jsonl(path):
        if "gold_teacher_probs" not in row:  # an export older than the soft labels in it
            raise ValueError(f"{path}: rows carry no gold_teacher_probs; export the dataset again")
        if row["gold_excluded"]:
            continue
        example = Example(
            fields={k: v for k, v in row.items() if not k.startswith("gold_")},
            label=row["label"],
            teacher_probs=row["gold_teacher_probs"],
        )
        (holdout_rows if row["gold_holdout"] else train_rows).append(example)
    return train_rows, holdout_rows
