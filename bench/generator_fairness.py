"""Fairness of the generator: does another team's small completion wait behind the loop's batches?

While a loop-sized generation runs (`--loop-n` samples as the orchestrator sends them: requests of
16 samples, one after another, marked `X-Gold-Priority: batch`), another client sends small
completions (`POST /v1/completions`, `--max-tokens` tokens, one at a time with a short pause) and
times them; the same completions on the idle generator are the baseline. The generator runs as
its own process (engine auto: llama.cpp for the default teacher on a CPU host, vLLM on a GPU),
twice: first come, first served (GOLD_GENERATOR_INTERACTIVE_PRIORITY=false: before) and with
interactive requests first (true: after).

    .venv/bin/python bench/generator_fairness.py [--loop-n 48] [--small 16] [--max-tokens 16]

The last line printed is one JSON object; --out also writes it to a file
(docs/results/generator-fairness.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from bench.api_load import free_port, p50_p99_ms  # noqa: E402
from bench.generator import start_process, stop_process  # noqa: E402
from services.generator.config import DEFAULT_TEACHER_SOURCE  # noqa: E402
from services.generator.engines.choice import auto_engine  # noqa: E402
from shared.schemas.generation import PRIORITY_HEADER  # noqa: E402
from shared.settings import GoldSettings  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402

TOKEN = "bench-fairness"
MODEL = "google/gemma-3-270m"  # the default teacher's id
CHUNK = 16  # samples per loop request (services/orchestrator/stages/generate.py GENERATE_CHUNK)
PROMPTS = [
    "Write one sentence about the sea:",
    "The best thing about trains is",
    "Q: What is the capital of France?\nA:",
    "A short review of a film I liked:",
]


def log(message: str) -> None:
    print(message, flush=True)


def small_latencies(
    url: str, count: int, max_tokens: int, stop: threading.Event | None = None
) -> list[float]:
    """`count` small completions one after another (a pause of 0.2 s between), their latencies in
    seconds; stops early when `stop` is set (the loop finished: what follows would be idle)."""
    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=900) as http:
        for i in range(count):
            if stop is not None and stop.is_set():
                break
            body = {"model": MODEL, "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "seed": i}
            started = time.perf_counter()
            http.post("/v1/completions", json=body).raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.2)
    return latencies


def loop_generation(
    url: str, task: dict, n: int, max_tokens: int, figures: dict, done: threading.Event
) -> None:
    """The loop's generation of `n` samples, chunk by chunk as the orchestrator sends it."""
    headers = {"Authorization": f"Bearer {TOKEN}", PRIORITY_HEADER: "batch"}
    started = time.perf_counter()
    accepted = 0
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=1800) as http:
            for k, first in enumerate(range(0, n, CHUNK)):
                body = {
                    "task": task,
                    "n": min(CHUNK, n - first),
                    "sampling": {"seed": 1234 + k, "max_tokens": max_tokens},
                }
                response = http.post("/v1/generate", json=body)
                response.raise_for_status()
                accepted += response.json()["stats"]["accepted"]
    finally:
        figures["loop_seconds"] = time.perf_counter() - started
        figures["loop_accepted"] = accepted
        done.set()


def measure(url: str, task: dict, args: argparse.Namespace) -> dict:
    small_latencies(url, 2, args.max_tokens)  # warm-up, not timed
    idle = small_latencies(url, args.small, args.max_tokens)
    figures: dict = {}
    done = threading.Event()
    loop = threading.Thread(
        target=loop_generation, args=(url, task, args.loop_n, args.loop_max_tokens, figures, done)
    )
    loop.start()
    time.sleep(2.0)  # the loop's first request is in the engine
    busy = small_latencies(url, args.small, args.max_tokens, stop=done)
    loop.join()
    idle_p50, idle_p99 = p50_p99_ms(idle)
    busy_p50, busy_p99 = p50_p99_ms(busy)
    return {
        "idle_p50_ms": round(idle_p50),
        "idle_p99_ms": round(idle_p99),
        "busy_p50_ms": round(busy_p50),
        "busy_p99_ms": round(busy_p99),
        "busy_requests": len(busy),
        "p50_ratio_busy_vs_idle": round(busy_p50 / idle_p50, 2),
        "p99_ratio_busy_vs_idle": round(busy_p99 / idle_p99, 2),
        "loop_seconds": round(figures["loop_seconds"], 1),
        "loop_samples_per_s": round(figures["loop_accepted"] / figures["loop_seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loop-n", type=int, default=48, help="samples the loop generates")
    parser.add_argument("--loop-max-tokens", type=int, default=96, help="tokens per loop sample")
    parser.add_argument("--small", type=int, default=16, help="small completions per phase")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per small completion")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args()

    task = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task.model_dump(mode="json")
    engine, why = auto_engine(DEFAULT_TEACHER_SOURCE)
    log(f"engine auto -> {engine}: {why}")
    work = Path(tempfile.mkdtemp(prefix="gold-bench-fairness-"))
    results = {}
    for name, priority in (("fifo", "false"), ("priority", "true")):
        port = free_port()
        env = {
            **os.environ,
            "GOLD_DATA_DIR": str(work),
            "GOLD_MODEL_DIR": os.environ.get("GOLD_MODEL_DIR", str(GoldSettings().models_dir)),
            "GOLD_API_KEYS": json.dumps({"bench": TOKEN}),
            "GOLD_GENERATOR_HOST": "127.0.0.1",
            "GOLD_GENERATOR_PORT": str(port),
            "GOLD_GENERATOR_INTERACTIVE_PRIORITY": priority,
        }
        url = f"http://127.0.0.1:{port}"
        process = start_process(
            [sys.executable, "-m", "services.generator"], env, url + "/readyz", work / f"{name}.log"
        )
        try:
            results[name] = measure(url, task, args)
        finally:
            stop_process(process)
        log(f"{name}: {json.dumps(results[name])}")
    before, after = results["fifo"], results["priority"]
    summary = {
        "engine": engine,
        "cores": len(os.sched_getaffinity(0)),
        "loop_n": args.loop_n,
        "loop_max_tokens": args.loop_max_tokens,
        "small_max_tokens": args.max_tokens,
        **{f"{name}_{key}": value for name, figures in results.items() for key, value in figures.items()},
        "busy_p99_ratio_priority_vs_fifo": round(after["busy_p99_ms"] / before["busy_p99_ms"], 2),
        "loop_throughput_ratio_priority_vs_fifo": round(
            after["loop_samples_per_s"] / before["loop_samples_per_s"], 2
        ),
    }
    line = json.dumps(summary)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line, flush=True)


if __name__ == "__main__":
    main()
