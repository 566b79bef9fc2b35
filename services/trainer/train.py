"""`train(cfg) -> TrainResult`: one student, trained, evaluated and saved, top to bottom: first what
every rank runs (student, data, epochs), then what rank 0 alone runs (evaluation, checkpoint).

Called by the RQ job (services/trainer/jobs.py), by each rank of services/trainer/launcher.py, and
from the command line:
    python -m services.trainer.train --spec SPEC.yaml --train train.jsonl [--holdout h.jsonl] --output DIR
(JSONL rows: {"fields": {...}, "label": "..."} or the fields themselves)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from services.trainer import distributed
from services.trainer.checkpoints import model_card, publish
from services.trainer.config import get_trainer_settings
from services.trainer.losses import distill_kl, token_losses
from services.trainer.students import (
    ANSWER_TOKENS_LIMIT,
    Example,
    Student,
    batches,
    build_fresh,
    head_parameters,
    merged,
    resolve_model_name,
    with_lora,
)
from services.trainer.train_config import TrainConfig, config_from_spec, evaluation_items
from shared.checkpoints import (
    CheckpointMeta,
    CheckpointTask,
    CheckpointTraining,
    HoldoutCheck,
    write_metadata,
)
from shared.hardware import autocast
from shared.names import (
    EVAL_SECONDS_PER_EXAMPLE,
    EVALUATION_ERRORS,
    STUDENT_PARAMETERS,
    TRAIN_EXAMPLES_PER_S,
    TRAIN_LOSS,
    TRAINABLE_PARAMETERS,
    eval_metric,
    holdout_metric,
)
from shared.schemas.training import TrainResult
from shared.spec import RunSpec, load_spec_file
from shared.student_format import StudentFormat
from shared.student_models import load_checkpoint_model, student_device
from shared.task_metrics import task_scores, token_f1

logger = logging.getLogger(__name__)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _loss(
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


@torch.inference_mode()
def _holdout_scores(
    student: Student, inputs, targets, cfg: TrainConfig, device: torch.device
) -> tuple[float, float]:
    """(mean loss, accuracy); accuracy is NaN for seq2seq here (greedy decoding is kept for the end)."""
    student.model.eval()
    loss_sum = correct = 0.0
    for idx in batches(len(inputs), cfg.eval_batch_size):
        batch = _to(student.collate([inputs[i] for i in idx], [targets[i] for i in idx]), device)
        with autocast(device.type):
            logits = student.logits(batch)
        loss_sum += float(token_losses(logits, batch["labels"], cfg.loss, cfg.sce_alpha, cfg.sce_beta)) * len(
            idx
        )
        if student.kind == "classifier":
            correct += float((logits.argmax(-1) == batch["labels"]).sum())
    n = max(len(inputs), 1)
    return loss_sum / n, (correct / n if student.kind == "classifier" else math.nan)


@torch.inference_mode()
def _predict(student: Student, examples: list[Example], cfg: TrainConfig, device: torch.device) -> list[str]:
    student.model.eval()
    inputs = student.encode_inputs(examples)
    # Sorting by length keeps padding (and wasted compute) small; the order is restored after.
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]["input_ids"]))
    predictions: dict[int, str] = {}
    for idx in batches(len(order), cfg.eval_batch_size, order):
        batch = _to(student.collate([inputs[i] for i in idx], None), device)
        with autocast(device.type):
            predictions.update(zip(idx, student.predict(batch), strict=True))
    return [predictions[i] for i in range(len(inputs))]


def train(cfg: TrainConfig) -> TrainResult:
    """Train, evaluate and save one student. Inside a process group (services/trainer/launcher.py)
    every rank trains on its shard of each epoch; rank 0 alone then evaluates and writes the
    checkpoint, and the other ranks return their training figures only (no evaluation metrics)."""
    started = time.perf_counter()
    _seed(cfg)
    group = distributed.current()  # None in a single process
    device = group.device if group is not None else student_device()

    # Every rank: the student, the data, the epochs.
    student, base_model = _load_student(cfg, device)
    data = _prepare_data(cfg, student)
    fit = _fit(cfg, student, data, group, device)
    report = _process_report(group, fit, student)
    metrics = _training_metrics(student, data, fit)
    if group is not None and not group.is_main:
        return _result(cfg, metrics, fit, data, base_model, report, started)

    # Rank 0 (or the only process): the best epoch's weights, evaluated and saved.
    if fit.best_state is not None:
        student.model.load_state_dict(fit.best_state)
    student = dataclasses.replace(student, model=merged(student.model))
    metrics[STUDENT_PARAMETERS] = _parameters(student.model)
    scores, errors = _evaluate(cfg, student, data, device)
    metrics |= scores
    _save(cfg, student, _metadata(cfg, student, base_model, data, fit, metrics, report, device))
    result = _result(cfg, metrics, fit, data, base_model, report, started)
    result.extra[EVALUATION_ERRORS] = errors
    logger.info(
        "trained %s %s on %d examples in %.1fs (%.1f ex/s): %s",
        cfg.kind,
        base_model,
        len(data.train),
        result.seconds,
        result.examples_per_second,
        metrics,
    )
    return result


def _seed(cfg: TrainConfig) -> None:
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)


def _load_student(cfg: TrainConfig, device: torch.device) -> tuple[Student, str]:
    """Continued from a checkpoint, or fresh from an allowed base model; with its canonical name."""
    fmt = StudentFormat.from_task(cfg.input_fields, cfg.output_field, cfg.labels)
    base_model = resolve_model_name(cfg.model, cfg.kind, cfg.allowed_models)
    if cfg.init_from is not None:
        model, tokenizer = load_checkpoint_model(cfg.kind, cfg.init_from)
    else:
        model, tokenizer = build_fresh(cfg.kind, base_model, fmt, cfg.seed, cfg.models_dir)
    if cfg.lora_rank is not None:
        model = with_lora(model, cfg.kind, cfg.lora_rank)
    model.to(device)
    student = Student(cfg.kind, model, tokenizer, fmt, cfg.max_length, ANSWER_TOKENS_LIMIT)
    max_target_length = cfg.max_target_length or student.fitted_answer_length(cfg.train + cfg.holdout)
    return dataclasses.replace(student, max_target_length=max_target_length), base_model


@dataclasses.dataclass
class _Data:
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


def _prepare_data(cfg: TrainConfig, student: Student) -> _Data:
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
    return _Data(
        train=train_set,
        holdout=holdout_set,
        dropped=len(cfg.train) - len(train_set) + len(cfg.holdout) - len(holdout_set),
        distill=distill,
        train_inputs=student.encode_inputs(train_set),
        train_targets=train_targets,
        train_soft=student.encode_soft(train_set) if distill else None,
        class_weights=_class_weights(train_targets, len(cfg.labels or ())) if _balances(cfg) else None,
        holdout_inputs=student.encode_inputs(holdout_set) if holdout_set else [],
        holdout_targets=student.encode_targets(holdout_set) if holdout_set else [],
    )


def _balances(cfg: TrainConfig) -> bool:
    return cfg.balance_classes and cfg.kind == "classifier" and bool(cfg.labels)


def _class_weights(targets: list[int], width: int) -> torch.Tensor:
    """n / (k * n_c) for each of the k labels present (n_c examples of n): a label the teacher's
    relabelling made rare weighs as much in total as a common one (absent labels weigh 0)."""
    counts = torch.bincount(torch.tensor(targets, dtype=torch.long), minlength=width).float()
    present = counts > 0
    weights = torch.zeros(width)
    weights[present] = len(targets) / (int(present.sum()) * counts[present])
    return weights


@dataclasses.dataclass
class _Fit:
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


def _fit(
    cfg: TrainConfig, student: Student, data: _Data, group: distributed.Group | None, device: torch.device
) -> _Fit:
    """Every rank: the epochs. In a process group the forward pass goes through DDP, which
    all-reduces gradients, and every rank follows rank 0's early-stopping decision."""
    model = student.model
    # batch_size is per process: with N processes a step sees N * batch_size examples.
    shard_size = group.shard_size(len(data.train)) if group is not None else len(data.train)
    optimizer, scheduler = _optimizer(cfg, model, steps_per_epoch=math.ceil(shard_size / cfg.batch_size))
    trainee = student if group is None else dataclasses.replace(student, model=group.wrap(model))
    generator = torch.Generator().manual_seed(cfg.seed)
    fit = _Fit(early=_early_stopping_applies(cfg, data))
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


def _optimizer(
    cfg: TrainConfig, model: torch.nn.Module, steps_per_epoch: int
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


def _early_stopping_applies(cfg: TrainConfig, data: _Data) -> bool:
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
    data: _Data,
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
        batch = _to(student.collate(inputs, targets, soft), device)
        with autocast(device.type):
            loss = _loss(trainee, batch, cfg, class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(idx)
    return loss_sum


def _holdout_check(
    cfg: TrainConfig, student: Student, data: _Data, group: distributed.Group | None, device: torch.device
) -> tuple[float, float]:
    """(loss, accuracy) on the holdout, scored by rank 0 and shared with every rank, so that all
    take the same stop decision."""
    if group is None:
        return _holdout_scores(student, data.holdout_inputs, data.holdout_targets, cfg, device)
    scores = (
        _holdout_scores(student, data.holdout_inputs, data.holdout_targets, cfg, device)
        if group.is_main
        else None
    )
    return group.broadcast(scores)


def _process_report(group: distributed.Group | None, fit: _Fit, student: Student) -> dict[str, Any]:
    if group is None:
        return {"processes": 1}
    return distributed.shard_report(group, fit.shards, student.model)


def _training_metrics(student: Student, data: _Data, fit: _Fit) -> dict[str, float]:
    seen = len(data.train) * fit.epochs_run
    return {
        TRAIN_LOSS: fit.epoch_losses[fit.final_epoch - 1],
        "train_examples": float(len(data.train)),
        "train_seconds": fit.seconds,
        TRAIN_EXAMPLES_PER_S: seen / fit.seconds if fit.seconds > 0 else 0.0,
        TRAINABLE_PARAMETERS: _parameters(student.model, trainable=True),
    }


def _parameters(model: torch.nn.Module, trainable: bool = False) -> float:
    """The student's size, reported beside the teacher's (the product's cost argument), or the part
    of it that trained (LoRA: the adapters)."""
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable))


def evaluate_few_shot(cfg: TrainConfig) -> TrainResult:
    """The student before distillation: the pretrained causal LM answers the real evaluation data
    after the seed examples (cfg.train) written as solved prompts. Nothing is trained or saved."""
    started = time.perf_counter()
    _seed(cfg)
    device = student_device()
    student, base_model = _load_student(cfg, device)
    if student.kind != "causal":
        raise ValueError(f"a {student.kind} student cannot answer few-shot before training")
    student = dataclasses.replace(student, prefix=student.fmt.few_shot_prefix([e.fields for e in cfg.train]))
    metrics = {STUDENT_PARAMETERS: _parameters(student.model)}
    scores, errors = _real_data_scores(cfg, student, device)
    metrics |= scores
    logger.info("few-shot %s on %d examples: %s", base_model, len(cfg.evaluation), metrics)
    return TrainResult(
        checkpoint_id=cfg.checkpoint_id,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        examples_per_second=0.0,
        extra={"base_model": base_model, "shots": len(cfg.train), EVALUATION_ERRORS: errors},
    )


def _evaluate(
    cfg: TrainConfig, student: Student, data: _Data, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """Rank 0: the score on the generated holdout (decoded; shared/names.HOLDOUT_METRICS), then
    scores on the real evaluation data and what the student got wrong there."""
    metrics: dict[str, float] = {}
    if data.holdout:
        predictions = _predict(student, data.holdout, cfg, device)
        targets = [(student.fmt.target(e.fields, e.label) or "").strip() for e in data.holdout]
        pairs = list(zip(predictions, targets, strict=True))
        scores = [float(p == t) if cfg.task_type == "classification" else token_f1(p, t) for p, t in pairs]
        metrics[holdout_metric(cfg.task_type)] = sum(scores) / len(scores)
    real, errors = _real_data_scores(cfg, student, device)
    return metrics | real, errors


# How many of the student's wrong answers on the real data a result carries (for the report).
SHOWN_ERRORS = 25


def _real_data_scores(
    cfg: TrainConfig, student: Student, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """The task metrics on the real evaluation data and the latency per example (decoding
    included); and its errors: the first SHOWN_ERRORS wrong answers and, for classification, the
    confusion counts (expected label -> answered label)."""
    metrics: dict[str, float] = {}
    if not cfg.evaluation:
        return metrics, {}
    eval_examples = [Example(fields=item.fields) for item in cfg.evaluation]
    eval_started = time.perf_counter()
    predictions = _predict(student, eval_examples, cfg, device)
    metrics[EVAL_SECONDS_PER_EXAMPLE] = (time.perf_counter() - eval_started) / len(eval_examples)
    references = [item.references for item in cfg.evaluation]
    scores = task_scores(cfg.task_type, predictions, references, cfg.labels or [])
    metrics |= {eval_metric(name): value for name, value in scores.items()}
    wrong = [
        {"input": item.fields, "expected": item.references[0], "answered": answer}
        for item, answer in zip(cfg.evaluation, predictions, strict=True)
        if answer.strip() not in (r.strip() for r in item.references)
    ]
    errors: dict[str, Any] = {"wrong": len(wrong), "shown": wrong[:SHOWN_ERRORS]}
    if cfg.task_type == "classification":
        confusion: dict[str, dict[str, int]] = {}
        for item, answer in zip(cfg.evaluation, predictions, strict=True):
            row = confusion.setdefault(item.references[0], {})
            row[answer] = row.get(answer, 0) + 1
        errors["confusion"] = confusion
    return metrics, errors


def _metadata(
    cfg: TrainConfig,
    student: Student,
    base_model: str,
    data: _Data,
    fit: _Fit,
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


def _save(cfg: TrainConfig, student: Student, meta: CheckpointMeta) -> None:
    """Hugging Face folder + metadata + model card, published atomically at cfg.output_dir."""

    def write(folder: Path) -> None:
        student.model.save_pretrained(folder)
        student.tokenizer.save_pretrained(folder)
        write_metadata(folder, meta)
        (folder / "README.md").write_text(model_card(meta), encoding="utf-8")

    publish(cfg.output_dir, write)


def _result(
    cfg: TrainConfig,
    metrics: dict[str, float],
    fit: _Fit,
    data: _Data,
    base_model: str,
    report: dict[str, Any],
    started: float,
) -> TrainResult:
    return TrainResult(
        checkpoint_id=cfg.checkpoint_id,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        examples_per_second=metrics[TRAIN_EXAMPLES_PER_S],
        extra={
            "best_epoch": fit.final_epoch,
            "epochs_run": fit.epochs_run,
            "dropped_examples": data.dropped,
            "base_model": base_model,
            "train_cpu_seconds": fit.cpu_seconds,
            **report,
        },
    )


def _read_examples(path: Path) -> list[Example]:
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


def train_from_dataset(spec: RunSpec, dataset: Path, output_dir: Path) -> TrainResult:
    """A fresh student trained on a run's exported dataset as the run's final student was (same
    split, soft labels and early stopping), scored on the spec's real evaluation data: another
    student recipe on the same generated data, without paying for generation again."""
    train_rows, holdout_rows = read_run_dataset(dataset)
    return train(
        config_from_spec(
            spec,
            get_trainer_settings(),
            checkpoint_id=str(uuid.uuid4()),
            output_dir=output_dir.resolve(),
            train=train_rows,
            holdout=holdout_rows,
            evaluation=evaluation_items(spec),
            fresh=True,
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one GOLD student from JSONL data.")
    parser.add_argument("--spec", required=True, type=Path, help="run spec (YAML/JSON): task + student")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--train", type=Path)
    data.add_argument(
        "--dataset",
        type=Path,
        help="a run's GET /runs/{id}/dataset: a fresh student trained as the run's final student was",
    )
    parser.add_argument("--holdout", type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--early-stopping", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = RunSpec.model_validate(load_spec_file(args.spec))
    if args.dataset:
        result = train_from_dataset(spec, args.dataset, args.output)
    else:
        cfg = config_from_spec(
            spec,
            get_trainer_settings(),
            checkpoint_id=str(uuid.uuid4()),
            output_dir=args.output.resolve(),
            train=_read_examples(args.train),
            holdout=_read_examples(args.holdout) if args.holdout else [],
            evaluation=evaluation_items(spec),
            early_stopping=args.early_stopping,
        )
        result = train(cfg)
    print(result.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
