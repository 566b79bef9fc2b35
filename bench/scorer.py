"""Scorer throughput: the scorer SERVICE (uvicorn, HTTP, JSON, POST /v1/energy) against the raw
model forward pass on the same batches (tokenise + forward + logsumexp, in-process, no HTTP).

A student checkpoint is written by the trainer (1 short epoch) into a temporary artifact folder,
the service is started as `python -m services.scorer` on a free port, and both paths score the
same samples with the same batch size and thread count, alternating for `--repeats` rounds (best of
each kept: another process may share the cores). Ends with ONE JSON object on its last line.

    .venv/bin/python bench/scorer.py [--samples 512] [--threads 2] [--kind classifier|seq2seq]
    .venv/bin/python bench/scorer.py --kind causal --samples 64 --batch-size 16 --threads 1

The causal student (SmolLM2-135M, the label as its answer) is scored as the scorer does it: prompt,
answer and end token left-padded, logits kept for the answer positions only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.trainer import _data  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _checkpoint(artifacts: Path, kind: str, threads: int) -> str:
    from services.trainer.students import Example
    from services.trainer.train import TrainConfig, train
    from shared.checkpoints import checkpoint_dir

    rows = _data(8 if kind == "causal" else 32)  # 135M parameters: a few steps are enough to save one
    cid = str(uuid.uuid4())
    examples = [
        Example(fields={"text": t, "label": y}, label=y if kind == "classifier" else None) for t, y in rows
    ]
    train(
        TrainConfig(
            checkpoint_id=cid,
            output_dir=checkpoint_dir(artifacts, cid),
            kind=kind,
            task_type="classification",
            input_fields=["text"],
            output_field="label",
            labels=["negative", "positive"],
            epochs=1,
            batch_size=4 if kind == "causal" else 16,
            max_length=64,
            max_target_length=16,
            train=examples,
            torch_threads=threads,
        )
    )
    return cid


def _raw_energies(folder: Path, kind: str, samples: list[dict], batch_size: int) -> float:
    """Seconds for the raw forward pass over the same length-sorted batches the service uses."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

    if kind == "causal":
        return _raw_causal_energies(folder, samples, batch_size)
    tok = AutoTokenizer.from_pretrained(folder)
    auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(folder).eval()
    key = (lambda s: s["text"]) if kind == "classifier" else (lambda s: s["text"] + s["label"])
    order = sorted(range(len(samples)), key=lambda i: len(key(samples[i])))
    tick = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [samples[i] for i in order[start : start + batch_size]]
            enc = tok(
                [s["text"] for s in batch], truncation=True, max_length=64, padding=True, return_tensors="pt"
            )
            if kind == "classifier":
                logits = model(**enc).logits
                (-torch.logsumexp(logits, -1)).tolist()
            else:
                tgt = tok(
                    text_target=[s["label"] for s in batch],
                    padding=True,
                    truncation=True,
                    max_length=16,
                    return_tensors="pt",
                )
                dec = model.prepare_decoder_input_ids_from_labels(labels=tgt["input_ids"])
                logits = model(**enc, decoder_input_ids=dec).logits
                e = -torch.logsumexp(logits.float(), -1)
                m = tgt["attention_mask"].float()
                ((e * m).sum(1) / m.sum(1)).tolist()
    return time.perf_counter() - tick


def _raw_causal_energies(folder: Path, samples: list[dict], batch_size: int) -> float:
    """Prompt + answer + end token, left-padded with explicit positions, logits for the answer
    positions only (logits_to_keep), mean free energy over the answer tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.truncation_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["text"] + samples[i]["label"]))
    tick = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = [samples[i] for i in order[start : start + batch_size]]
            prompts = tok([f"text: {s['text']}\nlabel:" for s in batch], truncation=True, max_length=64)
            answers = tok([f" {s['label']}" for s in batch], add_special_tokens=False)["input_ids"]
            targets = [a[:15] + [tok.eos_token_id] for a in answers]
            rows = [p + t for p, t in zip(prompts["input_ids"], targets, strict=True)]
            width, keep = max(len(r) for r in rows), max(len(t) for t in targets) + 1
            ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            answer = torch.tensor([[0] * (keep - 1 - len(t)) + [1] * len(t) + [0] for t in targets]).float()
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
            e = -torch.logsumexp(logits.float(), -1)
            ((e * answer).sum(1) / answer.sum(1)).tolist()
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["classifier", "seq2seq", "causal"], default="classifier")
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import logging

    import torch

    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    rows = _data(args.samples)
    samples = [{"text": f"{t} ({i})", "label": y} for i, (t, y) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = Path(tmp)
        cid = _checkpoint(artifacts, args.kind, args.threads)
        port = _free_port()
        env = {
            **os.environ,
            "GOLD_ARTIFACT_DIR": str(artifacts),
            "GOLD_SCORER_PORT": str(port),
            "GOLD_TORCH_THREADS": str(args.threads),
            "GOLD_SCORER_BATCH_SIZE": str(args.batch_size),
            "GOLD_API_KEYS": "{}",
            "GOLD_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": str(args.threads),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "services.scorer"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
            deadline = time.time() + 60
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("scorer did not start")
                time.sleep(0.3)
            body = {"checkpoint_id": cid, "samples": samples}
            client.post(
                "/v1/energy", json={"checkpoint_id": cid, "samples": samples[:8]}
            ).raise_for_status()  # load
            folder = artifacts / "checkpoints" / cid
            _raw_energies(folder, args.kind, samples[:8], args.batch_size)  # warm-up
            service_s, raw_s = [], []
            for _ in range(args.repeats):
                raw_s.append(_raw_energies(folder, args.kind, samples, args.batch_size))
                tick = time.perf_counter()
                client.post("/v1/energy", json=body).raise_for_status()
                service_s.append(time.perf_counter() - tick)
                print(f"raw {raw_s[-1]:.2f} s, service {service_s[-1]:.2f} s", file=sys.stderr)
            # OOD batches of a run are small: one request of 16 samples, as the orchestrator sends.
            small = min(128, args.samples)
            tick = time.perf_counter()
            for start in range(0, small, 16):
                client.post(
                    "/v1/energy", json={"checkpoint_id": cid, "samples": samples[start : start + 16]}
                ).raise_for_status()
            small_rate = small / (time.perf_counter() - tick)
            status = Path(f"/proc/{server.pid}/status").read_text()
            peak_mb = int(status.split("VmHWM:")[1].split()[0]) / 1024
        finally:
            server.terminate()
            server.wait(timeout=30)
    service_rate = args.samples / min(service_s)
    raw_rate = args.samples / min(raw_s)
    print(
        json.dumps(
            {
                "bench": "scorer",
                "student": args.kind,
                "samples": args.samples,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "service_samples_per_s": round(service_rate, 1),
                "raw_forward_samples_per_s": round(raw_rate, 1),
                "ratio_vs_raw_forward": round(service_rate / raw_rate, 3),
                "service_samples_per_s_16_per_request": round(small_rate, 1),
                "service_peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
