"""Scoring a student: its loss and accuracy on the holdout (the early-stopping check), its decoded
answers, and its scores on the generated holdout and on the real evaluation data, with what it got
wrong there."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from services.trainer.losses import token_losses
from services.trainer.students import Example, Student, batches
from services.trainer.train_config import TrainConfig
from services.trainer.training_data import TrainingData, to_device
from shared.hardware import autocast
from shared.names import EVAL_SECONDS_PER_EXAMPLE, eval_metric, holdout_metric
from shared.task_metrics import task_scores, token_f1

# How many of the student's wrong answers on the real data a result carries (for the report).
SHOWN_ERRORS = 25


@torch.inference_mode()
def holdout_scores(
    student: Student,
    inputs: list[dict[str, list[int]]],
    targets: list[Any],
    cfg: TrainConfig,
    device: torch.device,
) -> tuple[float, float]:
    """(mean loss, accuracy); accuracy is NaN for seq2seq here (greedy decoding is kept for the end)."""
    student.model.eval()  # type: ignore[no-untyped-call]
    loss_sum = correct = 0.0
    for idx in batches(len(inputs), cfg.eval_batch_size):
        batch = to_device(student.collate([inputs[i] for i in idx], [targets[i] for i in idx]), device)
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
def predict(student: Student, examples: list[Example], cfg: TrainConfig, device: torch.device) -> list[str]:
    student.model.eval()  # type: ignore[no-untyped-call]
    inputs = student.encode_inputs(examples)
    # Sorting by length keeps padding (and wasted compute) small; the order is restored after.
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]["input_ids"]))
    predictions: dict[int, str] = {}
    for idx in batches(len(order), cfg.eval_batch_size, order):
        batch = to_device(student.collate([inputs[i] for i in idx], None), device)
        with autocast(device.type):
            predictions.update(zip(idx, student.predict(batch), strict=True))
    return [predictions[i] for i in range(len(inputs))]


def evaluate(
    cfg: TrainConfig, student: Student, data: TrainingData, device: torch.device
) -> tuple[dict[str, float], dict[str, Any]]:
    """Rank 0: the score on the generated holdout (decoded; shared/names.HOLDOUT_METRICS), then
    scores on the real evaluation data and what the student got wrong there."""
    metrics: dict[str, float] = {}
    if data.holdout:
        predictions = predict(student, data.holdout, cfg, device)
        targets = [(student.fmt.target(e.fields, e.label) or "").strip() for e in data.holdout]
        pairs = list(zip(predictions, targets, strict=True))
        scores = [float(p == t) if cfg.task_type == "classification" else token_f1(p, t) for p, t in pairs]
        metrics[holdout_metric(cfg.task_type)] = sum(scores) / len(scores)
    real, errors = real_data_scores(cfg, student, device)
    return metrics | real, errors


def real_data_scores(
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
    predictions = predict(student, eval_examples, cfg, device)
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
