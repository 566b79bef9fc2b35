from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi.testclient import TestClient

from services.generator.config import GeneratorSettings
from services.generator.main import create_app

# What the real teacher engines are asked in their tests (test_vllm.py, test_llamacpp.py).
SENTIMENT_CASES = [
    ("An absolute delight from start to finish, I loved every minute.", "positive"),
    ("A wonderful, moving film with brilliant acting.", "positive"),
    ("One of the best movies I have seen this year.", "positive"),
    ("Boring, predictable and far too long. I regret watching it.", "negative"),
    ("The worst film of the decade: awful acting and a stupid plot.", "negative"),
    ("A tedious mess that wastes a good cast.", "negative"),
]
SQUAD_CASES = [
    (
        "The museum on Hale Street opened in 1958 and moved to the harbour in 1990.",
        "When did the museum open?",
        "1958",
    ),
    (
        "Tomas Berg plays the cello in the city orchestra and teaches on weekends.",
        "What instrument does Tomas Berg play?",
        "cello",
    ),
    (
        "The village of Orrin lies at the foot of Mount Caddo, beside a cold lake.",
        "Which mountain is Orrin at the foot of?",
        "Mount Caddo",
    ),
    (
        "Green tea leaves are steamed soon after picking, while black tea leaves are left to oxidise.",
        "What happens to green tea leaves after picking?",
        "steamed",
    ),
]


def wait_ready(client: TestClient, timeout_s: float = 900.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return
        body = response.json()
        assert body.get("status") != "failed", body
        assert time.monotonic() < deadline, f"engine not ready after {timeout_s} s: {body}"
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(settings: GeneratorSettings, timeout_s: float = 900.0) -> Iterator[str]:
    """A real generator over real HTTP (uvicorn in a thread), its URL once /readyz answers 200."""
    app = create_app(settings)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=10) as http:
        while True:
            try:
                ready = http.get("/readyz")
                if ready.status_code == 200:
                    break
                assert ready.json().get("status") != "failed", ready.json()
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the engine did not start in {timeout_s:g} s"
            time.sleep(1)
    try:
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=120)


LM_EVAL_TASK = """
task: gold_sentiment
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: label
metric_list:
  - metric: acc
"""


def run_lm_eval(server: str, tokenizer: str, tmp_path: Path) -> None:
    """lm-evaluation-harness's local-completions against the generator at `server`: log-likelihoods
    of each choice by prompt token ids with echo and logprobs, on a four-row JSONL task. The bearer
    token is OPENAI_API_KEY's (the caller sets it)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    rows = [
        ("A warm, funny film I would gladly watch again.", 1),
        ("A dull, lifeless mess from start to finish.", 0),
        ("The best thing I have seen all year.", 1),
        ("Boring and far too long; I walked out.", 0),
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gold_sentiment.yaml").write_text(LM_EVAL_TASK.format(data=data, cache=tmp_path / "hf"))
    out = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={
            "model": "default",
            "base_url": f"{server}/v1/completions",
            "tokenizer_backend": "huggingface",
            "tokenizer": tokenizer,
            "max_retries": 1,
        },
        tasks=["gold_sentiment"],
        task_manager=TaskManager(include_path=str(tasks)),
        log_samples=True,
    )
    result = out["results"]["gold_sentiment"]
    assert result["sample_len"] == len(rows) and 0.0 <= result["acc,none"] <= 1.0
    for sample in out["samples"]["gold_sentiment"]:
        negative, positive = (lp for lp, _ in sample["filtered_resps"])
        # two different continuations of one context: real probabilities that sum to at most 1
        assert negative < 0 and positive < 0 and math.exp(negative) + math.exp(positive) <= 1.0
