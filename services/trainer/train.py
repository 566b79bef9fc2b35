"""`train(cfg) -> TrainResult`: one student, trained, evaluated and saved, top to bottom: first what
every rank runs (student, data, epochs), then what rank 0 alone runs (evaluation, checkpoint). The
parts live beside it: training_data.py (the examples), training_loop.py (the epochs), evaluation.py
(the scores) and checkpoint_metadata.py (the folder it writes).

Called by the RQ job (services/trainer/jobs.py), by each rank of services/trainer/launcher.py, and
from the command line:
    python -m services.trainer.train --spec SPEC.yaml --train train.jsonl [--holdout h.jsonl] --output DIR
(JSONL rows: {"fields": {...}, "label": "..."} or the fields themselves)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from services.trainer import distributed
from services.trainer.checkpoint_metadata import checkpoint_metadata, save_checkpoint
from services.trainer.config import get_trainer_settings
from services.trainer.evaluation import evaluate, real_data_scores
from services.trainer.students import (
    ANSWER_TOKENS_LIMIT,
    Student,
    build_fresh,
    merged,
    resolve_model_name,
    with_lora,
)
from services.trainer.train_config import TrainConfig, config_from_spec, evaluation_items
from services.trainer.training_data import TrainingData, prepare_data, read_examples, read_run_dataset
from services.trainer.training_loop import Fit, run_epochs
from shared.names import (
    EVALUATION_ERRORS,
    STUDENT_PARAMETERS,
    TRAIN_EXAMPLES_PER_S,
    TRAIN_LOSS,
    TRAINABLE_PARAMETERS,
)
from shared.schemas.training import TrainResult
from shared.spec import RunSpec, load_spec_file
from shared.student_format import StudentFormat
from shared.student_models import load_checkpoint_model, student_device

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, on_epoch: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train, evaluate and save one student. Inside a process group (services/trainer/launcher.py)
    every rank trains on its shard of each epoch; rank 0 alone then evaluates and writes the
    checkpoint, and the other ranks return their training figures only (no evaluation metrics).
    `on_epoch(epochs done, epoch budget)` is told after each epoch (the job's progress)."""
    started = time.perf_counter()
    _seed(cfg)
    group = distributed.current()  # None in a single process
    device = group.device if group is not None else student_device()

    # Every rank: the student, the data, the epochs.
    student, base_model = _load_student(cfg, device)
    data = prepare_data(cfg, student)
    fit = run_epochs(cfg, student, data, group, device, on_epoch)
    report = _process_report(group, fit, student)
    metrics = _training_metrics(student, data, fit)
    if group is not None and not group.is_main:
        return _result(cfg, metrics, fit, data, base_model, report, started)

    # Rank 0 (or the only process): the best epoch's weights, evaluated and saved.
    if fit.best_state is not None:
        student.model.load_state_dict(fit.best_state)
    student = dataclasses.replace(student, model=merged(student.model))
    metrics[STUDENT_PARAMETERS] = _parameters(student.model)
    scores, errors = evaluate(cfg, student, data, device)
    metrics |= scores
    save_checkpoint(
        cfg, student, checkpoint_metadata(cfg, student, base_model, data, fit, metrics, report, device)
    )
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


def _process_report(group: distributed.Group | None, fit: Fit, student: Student) -> dict[str, Any]:
    if group is None:
        return {"processes": 1}
    return distributed.shard_report(group, fit.shards, student.model)


def _training_metrics(student: Student, data: TrainingData, fit: Fit) -> dict[str, float]:
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
    scores, errors = real_data_scores(cfg, student, device)
    metrics |= scores
    logger.info("few-shot %s on %d examples: %s", base_model, len(cfg.evaluation), metrics)
    return TrainResult(
        checkpoint_id=cfg.checkpoint_id,
        metrics=metrics,
        seconds=time.perf_counter() - started,
        examples_per_second=0.0,
        extra={"base_model": base_model, "shots": len(cfg.train), EVALUATION_ERRORS: errors},
    )


def _result(
    cfg: TrainConfig,
    metrics: dict[str, float],
    fit: Fit,
    data: TrainingData,
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
            train=read_examples(args.train),
            holdout=read_examples(args.holdout) if args.holdout else [],
            evaluation=evaluation_items(spec),
            early_stopping=args.early_stopping,
        )
        result = train(cfg)
    print(result.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
