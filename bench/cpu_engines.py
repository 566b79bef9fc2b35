"""The generator's engines on this CPU, against the CPU's own limit measured in the same run.

For each engine (llama.cpp on the GGUF; vLLM's CPU backend in bfloat16 and in float32), one after
another in its own process (never two engines at once), through the engine class the service uses:
- batched generation: the service's own generation prompts for the demo task, n samples each,
  completion tokens per second;
- prefill: prompt tokens per second of label scoring over few-shot prompts that share no prefix;
- classify: the same prompts as /v1/classify sends them (the few-shot prefix shared);
and the roofline: the model's FLOPs per token (2 x parameters for a generated token, 2 x the
parameters but the output head for a prompt token) against a large float32 matmul's GFLOP/s on
the same threads. Prints tokens/s, the roofline fraction of each and the speed ratios of
the engines in one run; the last line is one JSON object (--out writes it to a file as well).

    .venv/bin/python bench/cpu_engines.py [--engines llamacpp,vllm-bfloat16,vllm-float32] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.generator.config import GeneratorSettings  # noqa: E402
from services.generator.engines.protocol import Sampling, derive_seed  # noqa: E402
from services.generator.prompts import answer_prefix, answer_prompt, assign_labels, plan_generation  # noqa: E402
from shared.hardware import cpu_has_native_bf16, cpu_simd, usable_cores  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402

SEED = 1234
REVIEWS = [
    "A warm, funny film I would gladly watch again.",
    "Dull, slow and far too long.",
    "The acting is superb and the story moves along nicely.",
    "I walked out after an hour.",
    "A small gem with a big heart.",
    "Nothing in it works: not the jokes, not the plot.",
    "Beautifully shot, though the ending drags.",
    "One of the weakest sequels in years.",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def matmul_gflops(threads: int, size: int = 2048, seconds: float = 3.0) -> float:
    """float32 GEMM throughput on `threads` threads: the CPU's practical compute limit."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def output_head_parameters() -> int:
    """The teacher's vocabulary x hidden size: its output head (tied to the embedding), from the GGUF."""
    from gguf import GGUFReader

    from services.generator.teachers import resolve_teacher

    reader = GGUFReader(resolve_teacher(GeneratorSettings(), "default", gguf=True).path)
    arch = reader.fields["general.architecture"].contents()
    hidden = int(reader.fields[f"{arch}.embedding_length"].contents())
    return hidden * len(reader.fields["tokenizer.ggml.tokens"].data)


def one_engine(name: str, prompts: int, n: int, max_tokens: int, score_prompts: int) -> dict:
    """Measure one engine in this process (the parent runs each in a child)."""
    from services.generator.engines.factory import build_engine
    from services.generator.teachers import resolve_teacher

    kind, _, dtype = name.partition("-")
    settings = GeneratorSettings(generator_engine=kind, generator_dtype=dtype or "auto")  # type: ignore[arg-type]
    model = resolve_teacher(settings, "default", gguf=kind == "llamacpp")
    engine = build_engine(settings, model, kind)  # type: ignore[arg-type]
    task = RunSpec.model_validate(load_spec_file(ROOT / "gold/specs/demo.yaml")).task
    rng = random.Random(SEED)
    plans = plan_generation(
        task,
        list(task.seed_examples),
        [],
        assign_labels(task, prompts * n, rng),
        mode="train",
        samples_per_prompt=n,
        max_examples=settings.generator_max_examples_per_prompt,
        rng=rng,
    )
    sampling = [
        Sampling(n=p.n, max_tokens=max_tokens, seed=derive_seed(SEED, i)) for i, p in enumerate(plans)
    ]
    # /v1/classify's prompts: the seed examples as a shared prefix, one review each, the labels as
    # continuations. "prefill" scores the same prompts made distinct from their first token (no
    # shared prefix to reuse); "classify" as the service sends them.
    prefix = answer_prefix(task, list(task.seed_examples))
    reviews = [{"text": f"{REVIEWS[i % len(REVIEWS)]} ({i})"} for i in range(score_prompts)]
    shared = [answer_prompt(task, prefix, len(task.seed_examples), x) for x in reviews]
    distinct = [f"Batch {i}.\n{text}" for i, text in enumerate(shared)]
    labels = [f" {label}" for label in task.labels or []]

    async def scored(texts: list[str]) -> dict:
        started = time.perf_counter()
        await engine.score_continuations(texts, labels)
        seconds = time.perf_counter() - started
        tokens = sum(engine.count_tokens(t) for t in texts)
        return {
            "prompts": len(texts),
            "prompt_tokens": tokens,
            "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1),
        }

    async def run() -> dict:
        started = time.perf_counter()
        await engine.start()
        start_s = time.perf_counter() - started
        try:
            await engine.generate([plans[0].text], [Sampling(n=2, max_tokens=8, seed=1)])  # warm-up
            started = time.perf_counter()
            results = await engine.generate([p.text for p in plans], sampling)
            gen_s = time.perf_counter() - started
            tokens = sum(c.tokens for r in results for c in r.completions)
            prefill = await scored(distinct)
            classify = await scored(shared)
        finally:
            await engine.close()
        return {
            "engine": name,
            "parameters": engine.info.parameters,
            "start_s": round(start_s, 1),
            "generation": {
                "completions": sum(len(r.completions) for r in results),
                "tokens": tokens,
                "seconds": round(gen_s, 2),
                "tok_s": round(tokens / gen_s, 1),
            },
            "prefill": prefill,
            "classify": classify,
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="llamacpp,vllm-bfloat16,vllm-float32")
    parser.add_argument("--prompts", type=int, default=8, help="generation prompts per call")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--score-prompts", type=int, default=32, help="few-shot prompts label-scored")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure one engine
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_engine(args.one, args.prompts, args.n, args.max_tokens, args.score_prompts)))
        return

    threads = usable_cores()
    head = output_head_parameters()
    gflops = matmul_gflops(threads)
    log(
        f"roofline: float32 matmul {gflops:.1f} GFLOP/s on {threads} threads ({cpu_simd()}, "
        f"native bf16: {cpu_has_native_bf16()})"
    )
    rows = []
    for name in args.engines.split(","):
        log(f"measuring {name} ...")
        child = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--prompts",
            str(args.prompts),
            "--n",
            str(args.n),
            "--max-tokens",
            str(args.max_tokens),
            "--score-prompts",
            str(args.score_prompts),
        ]
        done = subprocess.run(child, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            log(f"{name} failed:\n{done.stderr[-2000:]}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        # A generated token runs every weight, the output head included (2 x parameters FLOPs); a
        # prompt token all but the head (its logits are read at the last position only).
        flops = {"generation": 2 * row["parameters"], "prefill": 2 * (row["parameters"] - head)}
        for part, per_token in flops.items():
            row[part]["roofline_fraction"] = round(row[part]["tok_s"] * per_token / (gflops * 1e9), 3)
        log(
            f"{name}: generation {row['generation']['tok_s']} tok/s "
            f"({row['generation']['roofline_fraction']:.0%} of the roofline), "
            f"prefill {row['prefill']['tok_s']} tok/s "
            f"({row['prefill']['roofline_fraction']:.0%}), classify with the shared prefix "
            f"{row['classify']['tok_s']} prompt tok/s, start {row['start_s']} s"
        )
        rows.append(row)
    base = next((r for r in rows if r["engine"].startswith("vllm")), None)
    ratios = {
        f"{r['engine']}/{base['engine']}": {
            part: round(r[part]["tok_s"] / base[part]["tok_s"], 2)
            for part in ("generation", "prefill", "classify")
        }
        for r in rows
        if base is not None and r is not base
    }
    result = {
        "host": {"simd": cpu_simd(), "native_bf16": cpu_has_native_bf16(), "threads": threads},
        "roofline_gflops": round(gflops, 1),
        "settings": {
            "prompts": args.prompts,
            "n": args.n,
            "max_tokens": args.max_tokens,
            "score_prompts": args.score_prompts,
        },
        "engines": rows,
        "ratios": ratios,
        "measured_at": time.strftime("%Y-%m-%d"),
    }
    for name, ratio in ratios.items():
        log(f"{name}: " + ", ".join(f"{part} x{value}" for part, value in ratio.items()))
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
