"""The epochs every rank runs: AdamW with warm-up and decay, the distillation loss, and early
stopping on the holdout (rank 0 scores it, every rank follows its decision)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel

from services.trainer import distributed
from services.trainer.evaluation import holdout_scores
from services.trainer.losses import distill_kl, token_losses
from services.trainer.students import Student, batches, head_parameters
from services.trainer.train_config import TrainConfig
from services.trainer.training_data import TrainingData, to_device
from shared.hardware import autocast

logger = logging.getLogger(__name__)


def batch_loss(
    student: Student,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    logits = student.logits(batch)
    hard = token_losses(logits, batch["labels"], cfg.loss, cfg.sce_alpha, cfg.sce_beta, class_weights)
    if cfg.distill_weight <= 0 or "soft_targets" not in batch:
        return hard
    rows = class_weights[batch["labels"]] if class_weights is not None else None
    soft = distill_kl(logits, batch["soft_targets"], batch["soft_mask"], cfg.distill_temperature, rows)
    return (1.0 - cfg.distill_weight) * hard + cfg.distill_weight * soft


@dataclasses.dataclass
class Fit:
    """What the epochs did (the same on every rank, but best_state: rank 0 alone keeps it)."""

    early: bool  # early stopping on the holdout was on
    epochs_run: int = 0
    best_epoch: int = 0  # 0: no early stopping, the last epoch counts
    best_state: dict[str, torch.Tensor] | None = None
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    holdout_history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0  # in training steps only (not holdout checks)
    cpu_seconds: float = 0.0
    shards: list[list[int]] = dataclasses.field(default_factory=list)  # each epoch's indices of this rank

    @property
    def final_epoch(self) -> int:
        return self.best_epoch or self.epochs_run


def run_epochs(
    cfg: TrainConfig,
    student: Student,
    data: TrainingData,
    group: distributed.Group | None,
    device: torch.device,
    on_epoch: Callable[[int, int], None] | None = None,
) -> Fit:
    """Every rank: the epochs. In a process group the forward pass goes through DDP, which
    all-reduces gradients, and every rank follows rank 0's early-stopping decision.
    `on_epoch(epochs done, epoch budget)` is told after each epoch (rank 0 only)."""
    model = student.model
    # batch_size is per process: with N processes a step sees N * batch_size examples.
    shard_size = group.shard_size(len(data.train)) if group is not None else len(data.train)
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch=math.ceil(shard_size / cfg.batch_size))
    trainee = student
    if group is not None:  # the forward pass goes through DDP's wrapper, which hands it to the model
        trainee = dataclasses.replace(student, model=group.wrap(model))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(cfg.seed)
    fit = Fit(early=_early_stopping_applies(cfg, data))
    best_key: tuple[float, float] | None = None
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        tick, tick_cpu = time.perf_counter(), time.process_time()
        if group is None:
            order = torch.randperm(len(data.train), generator=generator).tolist()
        else:
            order = group.shard(len(data.train), cfg.seed, epoch)
            fit.shards.append(order)
        loss_sum = _train_epoch(cfg, student, trainee, data, order, optimizer, scheduler, device)
        fit.seconds += time.perf_counter() - tick
        fit.cpu_seconds += time.process_time() - tick_cpu
        fit.epochs_run = epoch
        if group is None:
            fit.epoch_losses.append(loss_sum / len(data.train))
        else:
            total_loss, total_seen = group.sum(loss_sum, len(order))
            fit.epoch_losses.append(total_loss / total_seen)
        if on_epoch is not None and (group is None or group.is_main):
            on_epoch(epoch, cfg.epochs)
        if not fit.early or epoch < cfg.min_epochs:
            continue
        h_loss, h_acc = _holdout_check(cfg, student, data, group, device)
        fit.holdout_history.append({"epoch": epoch, "loss": h_loss, "accuracy": h_acc})
        # Classifier: best holdout accuracy, ties to the lower loss. seq2seq: lowest holdout loss.
        key = (h_acc if cfg.kind == "classifier" else 0.0, -h_loss)
        if best_key is None or key > best_key:
            best_key, fit.best_epoch, stale = key, epoch, 0
            if group is None or group.is_main:
                fit.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= cfg.patience:
                logger.info("early stop after epoch %d (best epoch %d)", epoch, fit.best_epoch)
                break
    return fit


def build_optimizer(
    cfg: TrainConfig, model: PreTrainedModel, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with linear warm-up and decay over the whole epoch budget."""
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(total_steps * cfg.warmup_fraction)
    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    groups: list[dict[str, Any]] = [{"params": trainable}]
    if cfg.head_learning_rate is not None and cfg.kind == "classifier":
        head = head_parameters(model)
        in_head = {id(p) for p in head}
        groups = [
            {"params": [p for p in trainable if id(p) not in in_head]},
            {"params": head, "lr": cfg.head_learning_rate},
        ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / (warmup + 1)
            if step < warmup
            else max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        ),
    )
    return optimizer, scheduler


def _early_stopping_applies(cfg: TrainConfig, data: TrainingData) -> bool:
    early = cfg.early_stopping and len(data.holdout) >= cfg.min_holdout_for_early_stopping
    if cfg.early_stopping and not early:
        logger.info(
            "%d held-out examples (< %d): training all %d epochs without early stopping",
            len(data.holdout),
            cfg.min_holdout_for_early_stopping,
            cfg.epochs,
        )
    return early


def _train_epoch(
    cfg: TrainConfig,
    student: Student,
    trainee: Student,
    data: TrainingData,
    order: list[int],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
) -> float:
    """One pass over `order` (this rank's indices); the summed loss of its examples."""
    loss_sum = 0.0
    class_weights = data.class_weights.to(device) if data.class_weights is not None else None
    for idx in batches(len(order), cfg.batch_size, order):
        soft = [data.train_soft[i] for i in idx] if data.train_soft is not None else None
        inputs, targets = [data.train_inputs[i] for i in idx], [data.train_targets[i] for i in idx]
        batch = to_device(student.collate(inputs, targets, soft), device)
        with autocast(device.type):
            loss = batch_loss(trainee, batch, cfg, class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(student.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(idx)
    return loss_sum


def _holdout_check(
    cfg: TrainConfig,
    student: Student,
    data: TrainingData,
    group: distributed.Group | None,
    device: torch.device,
) -> tuple[float, float]:
    """(loss, accuracy) on the holdout, scored by rank 0 and shared with every rank, so that all
    take the same stop decision."""
    if group is None:
        return holdout_scores(student, data.holdout_inputs, data.holdout_targets, cfg, device)
    scores = (
        holdout_scores(student, data.holdout_inputs, data.holdout_targets, cfg, device)
        if group.is_main
        else None
    )
    shared: tuple[float, float] = group.broadcast(scores)
    return shared
