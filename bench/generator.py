"""Generator benchmark: samples per second of `POST /v1/generate` against
(a) the reference implementation's approach, a transformers text-generation pipeline producing one
    sample per call, sequentially, and
(b) the raw vLLM engine called in-process,
on the same model, prompts and token budget. Also the parse yield, and /v1/classify throughput.

    .venv/bin/python bench/generator.py [--n 48] [--reference-samples 12] [--classify 500]

Runs one after another (never two engines at once). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from services.generator.config import GeneratorSettings  # noqa: E402
from services.generator.engines.protocol import derive_seed  # noqa: E402
from services.generator.prompts import STOP, assign_labels, plan_generation  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2" / "validation.jsonl"
SEED = 1234
TOKEN = "bench"


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings: GeneratorSettings) -> tuple[object, object, str]:
    import uvicorn

    from services.generator.main import create_app

    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(url + "/readyz", timeout=5)
            if ready.status_code == 200:
                return app, (server, thread), url
            if ready.json().get("status") == "failed":
                raise RuntimeError(ready.text)
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError("the generator did not become ready in 900 s")


def request_body(task: dict, n: int, max_tokens: int) -> dict:
    return {
        "task": task,
        "n": n,
        "sampling": {"seed": SEED, "temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_tokens": max_tokens},
    }


def bench_service(url: str, task: dict, n: int, max_tokens: int) -> dict:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=900) as http:
        http.post("/v1/generate", json=request_body(task, 4, 16)).raise_for_status()  # warm-up
        started = time.perf_counter()
        response = http.post("/v1/generate", json=request_body(task, n, max_tokens))
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    body = response.json()
    return {
        "seconds": elapsed,
        "completions": body["stats"]["completions"],
        "accepted": body["stats"]["accepted"],
        "rejected": body["stats"]["rejected"],
        "completion_tokens": body["usage"]["completion_tokens"],
        "samples": body["samples"],
    }


def same_prompts(task_spec, n: int, settings: GeneratorSettings):  # noqa: ANN001, ANN201
    """The prompts and per-prompt seeds the service builds for this request (same code, same seed)."""
    rng = random.Random(SEED)
    labels = assign_labels(task_spec, n, rng)
    plans = plan_generation(
        task_spec,
        list(task_spec.seed_examples),
        [],
        labels,
        mode="train",
        samples_per_prompt=settings.generator_samples_per_prompt,
        max_examples=settings.generator_max_examples_per_prompt,
        rng=rng,
    )
    return plans, [derive_seed(SEED, "train", i) for i in range(len(plans))]


def bench_raw_engine(app, task_spec, n: int, max_tokens: int, settings: GeneratorSettings, loop) -> dict:  # noqa: ANN001
    """The same prompts straight into the service's AsyncLLM, no HTTP, no parsing."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    engine = app.state.teachers.default.engine
    llm, tokenizer = engine._llm, engine._tokenizer
    plans, seeds = same_prompts(task_spec, n, settings)

    async def run() -> tuple[float, int, int]:
        async def one(plan, seed: int):  # noqa: ANN001, ANN202
            params = SamplingParams(
                n=plan.n,
                temperature=0.8,
                top_p=0.95,
                top_k=50,
                max_tokens=max_tokens,
                seed=seed,
                stop=list(STOP),
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            final = None
            ids = tokenizer(plan.text)["input_ids"]
            async for out in llm.generate({"prompt_token_ids": ids}, params, request_id=uuid.uuid4().hex):
                final = out
            return final

        started = time.perf_counter()
        outs = await asyncio.gather(*(one(p, s) for p, s in zip(plans, seeds, strict=True)))
        elapsed = time.perf_counter() - started
        return (
            elapsed,
            sum(len(o.outputs) for o in outs),
            sum(len(c.token_ids) for o in outs for c in o.outputs),
        )

    # The engine lives on the server's event loop: run there.
    elapsed, completions, tokens = asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=900)
    return {"seconds": elapsed, "completions": completions, "completion_tokens": tokens}


def bench_reference(
    model_path: str, task_spec, samples: int, max_tokens: int, settings: GeneratorSettings
) -> dict:  # noqa: ANN001
    """The reference code's approach: an HF text-generation pipeline, one sample per call."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16)
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    plans, seeds = same_prompts(task_spec, samples, settings)
    prompts = [p.text for p in plans for _ in range(p.n)][:samples]
    generator(prompts[0], max_new_tokens=4, do_sample=True)  # warm-up
    tokens = 0
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        torch.manual_seed(SEED + i)
        out = generator(
            prompt,
            max_new_tokens=max_tokens,
            do_sample=True,
            temperature=0.8,
            top_p=0.95,
            top_k=50,
            return_full_text=False,
            stop_strings=list(STOP),
            tokenizer=tokenizer,
        )
        tokens += len(tokenizer(out[0]["generated_text"], add_special_tokens=False)["input_ids"])
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "completions": len(prompts), "completion_tokens": tokens}


def bench_structured(url: str, n: int) -> dict:
    """Parse yield of free-text parsing against guided decoding (a regex of the field format) on a
    two-field task, where the format is harder to keep than on one field."""
    rte = RunSpec.model_validate(load_spec_file(ROOT / "examples/rte.yaml")).task.model_dump()
    out = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=900) as http:
        for structured in (False, True):
            body = {**request_body(rte, n, 96), "structured": structured}
            started = time.perf_counter()
            response = http.post("/v1/generate", json=body)
            response.raise_for_status()
            stats = response.json()["stats"]
            key = "structured" if structured else "free_text"
            out[f"{key}_parse_yield_rte"] = round(stats["accepted"] / n, 3)
            out[f"{key}_rejected_rte"] = stats["rejected"]
            out[f"{key}_seconds_rte"] = round(time.perf_counter() - started, 1)
    return out


def bench_classify(url: str, task: dict, limit: int) -> dict | None:
    if not SST2.exists():
        log(f"{SST2} not found: classify throughput skipped")
        return None
    rows = [json.loads(line) for line in SST2.read_text().splitlines()[:limit]]
    body = {"task": task, "inputs": [{"text": r["sentence"]} for r in rows]}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=1800) as http:
        started = time.perf_counter()
        response = http.post("/v1/classify", json=body)
        elapsed = time.perf_counter() - started
    response.raise_for_status()
    predictions = response.json()["predictions"]
    correct = sum(p["label"] == r["label_text"] for p, r in zip(predictions, rows, strict=True))
    return {"inputs": len(rows), "seconds": elapsed, "accuracy": correct / len(rows)}


def label_agreement(url: str, task: dict, samples: list[dict]) -> float | None:
    """Share of generated samples whose requested label the teacher itself prefers (a proxy for
    label fidelity: no human labels exist for generated text)."""
    if not samples:
        return None
    body = {"task": task, "inputs": [{"text": s["fields"]["text"]} for s in samples]}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=900) as http:
        response = http.post("/v1/classify", json=body)
    response.raise_for_status()
    predictions = response.json()["predictions"]
    return sum(p["label"] == s["label"] for p, s in zip(predictions, samples, strict=True)) / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=48, help="samples per /v1/generate request")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--reference-samples", type=int, default=12, help="samples for the sequential pipeline"
    )
    parser.add_argument(
        "--classify", type=int, default=500, help="SST-2 sentences for /v1/classify (0: skip)"
    )
    args = parser.parse_args()

    spec = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml"))
    task_spec, task = spec.task, spec.task.model_dump()
    settings = GeneratorSettings(api_keys={TOKEN: TOKEN}, generator_kv_cache_gib=1)

    started = time.perf_counter()
    app, (server, thread), url = start_server(settings)
    engine_start_s = time.perf_counter() - started
    log(f"engine ready in {engine_start_s:.1f} s")
    service = bench_service(url, task, args.n, args.max_tokens)
    # The engine lives on the server's event loop (its output task shows which): run the raw calls there.
    loop = app.state.teachers.default.engine._llm.output_handler.get_loop()
    service_rate = service["completions"] / service["seconds"]
    log(
        f"/v1/generate: {service['completions']} completions ({service['accepted']} accepted) in "
        f"{service['seconds']:.1f} s = {service_rate:.2f} samples/s, rejected {service['rejected']}"
    )
    raw = bench_raw_engine(app, task_spec, args.n, args.max_tokens, settings, loop)
    raw_rate = raw["completions"] / raw["seconds"]
    log(f"raw vLLM engine: {raw['completions']} completions in {raw['seconds']:.1f} s = {raw_rate:.2f}/s")
    agreement = label_agreement(url, task, service["samples"])
    structured = bench_structured(url, 16)
    log(f"free text vs structured on RTE: {structured}")
    classify = bench_classify(url, task, args.classify) if args.classify else None
    if classify:
        log(
            f"/v1/classify: {classify['inputs']} SST-2 inputs in {classify['seconds']:.1f} s, "
            f"accuracy {classify['accuracy']:.3f}"
        )
    model_path = app.state.teachers.default.engine.info.model.path
    server.should_exit = True
    thread.join(timeout=180)

    reference = bench_reference(model_path, task_spec, args.reference_samples, args.max_tokens, settings)
    reference_rate = reference["completions"] / reference["seconds"]
    log(
        f"reference pipeline: {reference['completions']} samples in {reference['seconds']:.1f} s = "
        f"{reference_rate:.3f} samples/s"
    )

    result = {
        "model": "google/gemma-3-270m",
        "n": args.n,
        "max_tokens": args.max_tokens,
        "engine_start_s": round(engine_start_s, 1),
        "service_samples_per_s": round(service_rate, 3),
        "service_accepted_per_s": round(service["accepted"] / service["seconds"], 3),
        "service_tokens_per_s": round(service["completion_tokens"] / service["seconds"], 1),
        "raw_engine_samples_per_s": round(raw_rate, 3),
        "reference_samples_per_s": round(reference_rate, 3),
        "reference_tokens_per_s": round(reference["completion_tokens"] / reference["seconds"], 2),
        "speedup_vs_reference": round(service_rate / reference_rate, 2),
        "ratio_vs_engine": round(service_rate / raw_rate, 3),
        "parse_yield": round(service["accepted"] / args.n, 3),
        "rejected": service["rejected"],
        **structured,
        "teacher_label_agreement": None if agreement is None else round(agreement, 3),
        "classify_inputs": classify["inputs"] if classify else 0,
        "classify_seconds": round(classify["seconds"], 1) if classify else None,
        "classify_inputs_per_s": round(classify["inputs"] / classify["seconds"], 2) if classify else None,
        "classify_accuracy_sst2": round(classify["accuracy"], 3) if classify else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
