"""Predictions: a run's student through the orchestrator's `POST /runs/{id}/predict` (forwarded to
the scorer) against the teacher answering the same inputs few-shot through the generator
(`POST /v1/classify` for a classification task, `POST /v1/answer` otherwise), both over HTTP on the
whole local stack, started by `gold up`'s launcher (embedded PostgreSQL and Redis, vLLM teacher).

The student is trained in-process on the spec's seed examples (1 epoch: its speed, not its quality,
is measured here) into the stack's artifact store and recorded as a succeeded run's final student.
Both answer the spec's first `--inputs` evaluation rows: throughput in requests of `--batch` inputs,
then latency over `--latency-requests` one-input requests (p50). Warm-up calls first (model loads).
The last line is ONE JSON object; ratios are student / teacher for throughput, teacher / student
for latency (above 1: the student is faster).

    .venv/bin/python bench/predict.py [--spec examples/sst2.yaml] [--inputs 64] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import httpx  # noqa: E402

from bench.api_load import free_port  # noqa: E402
from gold.stack import Stack  # noqa: E402
from services.trainer.config import TrainerSettings  # noqa: E402
from shared.checkpoints import checkpoint_dir, read_metadata  # noqa: E402
from shared.evaluation_data import load_evaluation  # noqa: E402
from shared.settings import GoldSettings  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402


def log(message: str) -> None:
    print(message, flush=True)


def train_student(spec: RunSpec, artifacts: Path, threads: int) -> str:
    """The spec's student, as a run's job would build it (config_from_spec), for one epoch."""
    from services.trainer.students import Example
    from services.trainer.train import train
    from services.trainer.train_config import config_from_spec

    task = spec.task
    classifier = spec.student_kind == "classifier"
    examples = [
        Example(fields=dict(e), label=e.get(task.output_field) if classifier else None)
        for e in task.seed_examples
    ]
    cid = str(uuid.uuid4())
    settings = TrainerSettings(torch_threads=threads)
    cfg = config_from_spec(
        spec.model_copy(update={"student": spec.student.model_copy(update={"epochs": 1})}),
        settings,
        checkpoint_id=cid,
        output_dir=checkpoint_dir(artifacts, cid),
        train=examples,
        holdout=[],
        evaluation=[],
    )
    train(cfg)
    return cid


def record_run(database_url: str, spec: RunSpec, checkpoint_id: str) -> str:
    """A succeeded run whose final student is the checkpoint (what the run driver leaves)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from shared.db.models import Checkpoint, Run
    from shared.names import RunStatus

    engine = create_engine(database_url)
    run_id = uuid.uuid4()
    with Session(engine) as session, session.begin():
        spec_json = spec.model_dump(mode="json")
        session.add(Run(id=run_id, name=spec.name, spec=spec_json, status=RunStatus.SUCCEEDED))
        session.flush()
        session.add(
            Checkpoint(
                id=uuid.UUID(checkpoint_id),
                run_id=run_id,
                iteration=spec.loop.iterations,
                role="final",
                path=f"checkpoints/{checkpoint_id}",
                student_model=spec.student.model,
                student_kind=spec.student_kind,
            )
        )
    engine.dispose()
    return str(run_id)


def measure(answer: Callable[[list[dict]], None], inputs: list[dict], batch: int, singles: int) -> dict:
    answer(inputs[:2])  # warm-up: model load, first allocation
    batches = []
    for start in range(0, len(inputs), batch):
        tick = time.perf_counter()
        answer(inputs[start : start + batch])
        batches.append(time.perf_counter() - tick)
    log(f"  requests of {batch}: " + ", ".join(f"{s:.2f} s" for s in batches))
    rate = len(inputs) / sum(batches)
    latencies = []
    for row in inputs[:singles]:
        tick = time.perf_counter()
        answer([row])
        latencies.append(time.perf_counter() - tick)
    return {"inputs_per_s": rate, "p50_ms": 1000 * statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", default="examples/sst2.yaml")
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--latency-requests", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", help="the stack's data folder (default: a temporary one)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    os.chdir(ROOT)  # specs name their data relative to the project
    spec = RunSpec.model_validate(load_spec_file(args.spec))
    if spec.evaluation is None:
        raise SystemExit(f"{args.spec} has no evaluation data to answer")
    evaluation = spec.evaluation.model_copy(update={"limit": args.inputs})
    inputs = [e.fields for e in load_evaluation(evaluation, spec.task).examples]
    task = spec.task.model_dump(mode="json")
    with tempfile.TemporaryDirectory() as tmp:
        settings = GoldSettings(data_dir=Path(args.data_dir or tmp))
        ports = {"orchestrator": free_port(), "generator": free_port(), "scorer": free_port()}
        log(f"starting the stack in {settings.data_dir} (the teacher's engine takes a minute or two)")
        with Stack(settings, ports=ports) as stack:
            log(f"training a {spec.student_kind} student on the {len(spec.task.seed_examples)} seed examples")
            checkpoint = train_student(spec, settings.artifacts, args.threads)
            run_id = record_run(stack.env["GOLD_DATABASE_URL"], spec, checkpoint)
            # the answer length the student decodes at most, fitted to its answers when it trained
            meta = read_metadata(checkpoint_dir(settings.artifacts, checkpoint))
            answer_tokens = meta.training.max_target_length
            headers = {"Authorization": f"Bearer {stack.token}"}
            orchestrator = httpx.Client(base_url=stack.orchestrator_url, headers=headers, timeout=600)
            generator = httpx.Client(base_url=stack.generator_url, headers=headers, timeout=600)

            def student(rows: list[dict]) -> None:
                orchestrator.post(f"/runs/{run_id}/predict", json={"inputs": rows}).raise_for_status()

            def teacher(rows: list[dict]) -> None:
                if spec.task.type == "classification":
                    generator.post("/v1/classify", json={"task": task, "inputs": rows}).raise_for_status()
                else:
                    body = {"task": task, "inputs": rows, "max_tokens": answer_tokens}
                    generator.post("/v1/answer", json=body).raise_for_status()

            log(f"{len(inputs)} inputs, requests of {args.batch}; then {args.latency_requests} of one")
            measured = {
                "student": measure(student, inputs, args.batch, args.latency_requests),
                "teacher": measure(teacher, inputs, args.batch, args.latency_requests),
            }
            for who, figures in measured.items():
                log(f"{who}: {figures['inputs_per_s']:.1f} inputs/s, p50 {figures['p50_ms']:.0f} ms")
    s, t = measured["student"], measured["teacher"]
    print(
        json.dumps(
            {
                "bench": "predict",
                "spec": args.spec,
                "student_kind": spec.student_kind,
                "inputs": len(inputs),
                "batch": args.batch,
                "student_inputs_per_s": round(s["inputs_per_s"], 2),
                "teacher_inputs_per_s": round(t["inputs_per_s"], 2),
                "throughput_ratio_vs_teacher": round(s["inputs_per_s"] / t["inputs_per_s"], 2),
                "student_p50_ms": round(s["p50_ms"], 1),
                "teacher_p50_ms": round(t["p50_ms"], 1),
                "p50_speedup_vs_teacher": round(t["p50_ms"] / s["p50_ms"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
