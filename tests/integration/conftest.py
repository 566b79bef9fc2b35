"""Real student checkpoints (MiniLM classifier, tiny T5, SmolLM2-135M causal) written by the
trainer's train(), the producer of the folder format the scorer reads. Trained once per session and
shared by the scorer's tests and the orchestrator's predictions."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from services.trainer.students import Example
from services.trainer.train import TrainConfig, train
from shared.checkpoints import checkpoint_dir

NLI = [
    ({"premise": "A man plays a guitar on stage.", "hypothesis": "A person makes music."}, "entailment"),
    ({"premise": "Two dogs run through the snow.", "hypothesis": "Animals are outside."}, "entailment"),
    (
        {"premise": "A woman reads a book in a cafe.", "hypothesis": "The woman is asleep at home."},
        "contradiction",
    ),
    ({"premise": "Children swim in a lake.", "hypothesis": "The kids are in a desert."}, "contradiction"),
]
QA = [
    ({"context": "The Eiffel Tower was finished in 1889.", "question": "When was it finished?"}, "1889"),
    ({"context": "Ada Lovelace wrote the first program.", "question": "Who wrote it?"}, "Ada Lovelace"),
    ({"context": "The Nile flows north into the sea.", "question": "Which way does it flow?"}, "north"),
]

# Tasks whose fields these students were trained on (a run spec's task).
NLI_TASK = {
    "type": "classification",
    "description": "Does the premise entail the hypothesis?",
    "input_fields": ["premise", "hypothesis"],
    "output_field": "label",
    "labels": ["entailment", "contradiction"],
    "seed_examples": [{**fields, "label": label} for fields, label in NLI],
}
QA_TASK = {
    "type": "seq2seq",
    "description": "Answer the question from the context.",
    "input_fields": ["context", "question"],
    "output_field": "answer",
    "seed_examples": [{**fields, "answer": answer} for fields, answer in QA],
}


def _train(artifacts: Path, kind: str, examples, fields, output, labels, max_length: int = 128) -> str:
    cid = str(uuid.uuid4())
    cfg = TrainConfig(
        checkpoint_id=cid,
        output_dir=checkpoint_dir(artifacts, cid),
        kind=kind,
        task_type="classification" if labels else "seq2seq",
        input_fields=fields,
        output_field=output,
        labels=labels,
        epochs=1,
        batch_size=4,
        max_length=max_length,  # the answer length is fitted to the answers (the spec's default)
        train=[
            Example(fields=f, label=y if labels else None) if labels else Example(fields={**f, output: y})
            for f, y in examples
        ],
    )
    train(cfg)
    return cid


@pytest.fixture(scope="session")
def scorer_artifacts(tmp_path_factory) -> dict:
    torch.set_num_threads(2)
    artifacts = tmp_path_factory.mktemp("artifacts")
    return {
        "artifacts": artifacts,
        "classifier": _train(
            artifacts, "classifier", NLI, ["premise", "hypothesis"], "label", ["entailment", "contradiction"]
        ),
        "seq2seq": _train(artifacts, "seq2seq", QA, ["context", "question"], "answer", None),
        # one training step of the real 135M model; prompts cut to 16 tokens exercise the truncation
        "causal": _train(artifacts, "causal", QA, ["context", "question"], "answer", None, max_length=16),
    }
