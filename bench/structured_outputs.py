"""Structured outputs in the loop: the loop's generation prompts through `POST /v1/generate` with
free-text parsing (structured=false) against guided decoding of the field format (structured=true),
same seeds, on the engine this host serves the default teacher with (llama.cpp on a CPU-only host:
a GBNF grammar; vLLM: a regex).

Per task (examples/sst2.yaml, examples/nl4opt.yaml) and mode (train; ood, steered by the teacher's own
attribute list as the loop does): parse yield (accepted / completions), rejections by reason,
distinct-2 of the accepted inputs, seconds per 100 accepted samples; for SST-2 label fidelity (the
teacher's /v1/classify gives back the requested label), for NL4OPT the share of accepted targets
that parse as a JSON object (json_valid) and that have the seed examples' top-level keys too
(json_targets).

    GOLD_DATA_DIR=.gold .venv/bin/python bench/structured_outputs.py \\
        [--sst2-n 48] [--nl4opt-n 12] [--out docs/results/structured-outputs.json] [--samples FILE]

The last line printed is one JSON object (also written to --out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from bench.generator import TOKEN, start_server  # noqa: E402
from services.generator.config import GeneratorSettings  # noqa: E402
from shared.diversity import distinct_n  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402

SEED = 20
TASKS = {"sst2": ROOT / "examples/sst2.yaml", "nl4opt": ROOT / "examples/nl4opt.yaml"}


def log(message: str) -> None:
    print(message, flush=True)


def json_keys(target: str) -> frozenset[str] | None:
    """The top-level keys of a target that is a JSON object, else None."""
    try:
        value = json.loads(target)
    except ValueError:
        return None
    return frozenset(value) if isinstance(value, dict) else None


def label_fidelity(http: httpx.Client, spec: RunSpec, samples: list[dict]) -> float | None:
    """Share of accepted samples the teacher itself labels as requested."""
    if not samples:
        return None
    field = spec.task.input_fields[0]
    body = {"task": spec.task.model_dump(), "inputs": [{field: s["fields"][field]} for s in samples]}
    response = http.post("/v1/classify", json=body)
    response.raise_for_status()
    predictions = response.json()["predictions"]
    return sum(p["label"] == s["label"] for p, s in zip(predictions, samples, strict=True)) / len(samples)


def measure(
    http: httpx.Client, spec: RunSpec, body: dict[str, Any], structured: bool
) -> tuple[dict[str, Any], list[dict]]:
    started = time.perf_counter()
    response = http.post("/v1/generate", json={**body, "structured": structured})
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    out = response.json()
    stats, samples = out["stats"], out["samples"]
    task = spec.task
    inputs = [" ".join(s["fields"][f] for f in task.input_fields) for s in samples]
    row: dict[str, Any] = {
        "engine": out["settings"]["engine"],
        "completions": stats["completions"],
        "accepted": stats["accepted"],
        "parse_yield": round(stats["accepted"] / max(stats["completions"], 1), 3),
        "rejected": stats["rejected"],
        "distinct_2": round(distinct_n(inputs, 2), 3) if inputs else None,
        "completion_tokens": out["usage"]["completion_tokens"],
        "seconds": round(elapsed, 1),
        "seconds_per_100_accepted": round(100 * elapsed / stats["accepted"], 1)
        if stats["accepted"]
        else None,
    }
    if task.type == "classification":
        fidelity = label_fidelity(http, spec, samples)
        row["label_fidelity"] = None if fidelity is None else round(fidelity, 3)
    else:
        expected = set.intersection(*(set(json_keys(e[task.output_field]) or ()) for e in task.seed_examples))
        good = [
            s for s in samples if (keys := json_keys(s["fields"][task.output_field])) and expected <= keys
        ]
        valid = [s for s in samples if json_keys(s["fields"][task.output_field]) is not None]
        row["json_valid"] = round(len(valid) / len(samples), 3) if samples else None
        row["json_targets"] = round(len(good) / len(samples), 3) if samples else None
    return row, [*samples, *({"rejected": r} for r in out["rejections"])]


def bench_task(http: httpx.Client, name: str, path: Path, n: int, dump: dict) -> dict[str, Any]:
    spec = RunSpec.model_validate(load_spec_file(path))
    teacher = spec.teacher
    sampling = {
        "temperature": teacher.temperature,
        "top_p": teacher.top_p,
        "top_k": teacher.top_k,
        "max_tokens": teacher.max_tokens,
        "seed": SEED,
    }
    task = spec.task.model_dump()
    listed = http.post(
        "/v1/attributes",
        json={
            "task": task,
            "n": spec.loop.ood_attributes,
            "sampling": {**sampling, "temperature": 0.9, "max_tokens": 96},
        },
    )
    listed.raise_for_status()
    attributes = listed.json()["attributes"]
    out: dict[str, Any] = {}
    train_body = {"task": task, "n": n, "mode": "train", "sampling": sampling}
    shown: list[dict] = []
    for mode in ("train", "ood"):
        body = train_body
        if mode == "ood":
            # As the loop does: the seeds and two of the training batch just generated, steered by attributes.
            body = {
                **train_body,
                "mode": "ood",
                "examples": [*(e for e in task["seed_examples"]), *shown[:2]],
                "attributes": attributes,
            }
        for structured in (False, True):
            key = f"{name}_{mode}_{'structured' if structured else 'free_text'}"
            row, samples = measure(http, spec, body, structured)
            dump[key] = samples
            out[key] = row
            log(f"{key}: {row}")
            if mode == "train" and not structured:
                shown = [s["fields"] for s in samples if "fields" in s]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sst2-n", type=int, default=48)
    parser.add_argument("--nl4opt-n", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON line here too")
    parser.add_argument("--samples", type=Path, default=None, help="write every sample and rejection here")
    args = parser.parse_args()
    settings = GeneratorSettings(api_keys={TOKEN: TOKEN})  # the default engine for this host
    _, (server, thread), url = start_server(settings)
    dump: dict[str, list[dict]] = {}
    result: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1800) as http:
            for name, n in (("sst2", args.sst2_n), ("nl4opt", args.nl4opt_n)):
                result.update(bench_task(http, name, TASKS[name], n, dump))
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=180)  # type: ignore[attr-defined]
    figures = {k: v for k, v in result.items() if isinstance(v, dict)}
    result = {"engine": sorted({row.pop("engine") for row in figures.values()}), **result}
    for name in TASKS:
        for mode in ("train", "ood"):
            free, guided = figures[f"{name}_{mode}_free_text"], figures[f"{name}_{mode}_structured"]
            result[f"{name}_{mode}_yield_gain"] = round(guided["parse_yield"] - free["parse_yield"], 3)
    if args.samples:
        args.samples.write_text(json.dumps(dump, indent=1))
    line = json.dumps(result)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
