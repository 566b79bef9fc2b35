"""Predictions from the scorer API on real checkpoints: a classifier's labels and probabilities
against the model's own softmax, seq2seq and causal answers against the trainer's decoding (what
the run's evaluation counted)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.scorer.config import ScorerSettings
from services.scorer.main import create_app
from services.trainer.students import Example, Student
from shared.checkpoints import read_metadata
from shared.schemas.prediction import MAX_PREDICT_INPUTS
from shared.student_models import load_checkpoint_model
from tests.integration.conftest import NLI, QA

pytestmark = pytest.mark.slow

NEW_QA = [
    *(f for f, _ in QA),
    {"context": "The library opens at nine and closes at five.", "question": "When does it open?"},
    # longer than the causal checkpoint's 16-token prompts: cut at its start, as in training
    {"context": "A long story about many things " * 4, "question": "What is it about?"},
]


@pytest.fixture(scope="module")
def client(scorer_artifacts):
    # Batches of 2: rows of different lengths share a batch, so padding is exercised.
    settings = ScorerSettings(artifact_dir=scorer_artifacts["artifacts"], scorer_batch_size=2)
    with TestClient(create_app(settings)) as c:
        yield c


def _predict(client: TestClient, cid: str, inputs: list[dict]) -> dict:
    response = client.post("/v1/predict", json={"checkpoint_id": cid, "inputs": inputs})
    assert response.status_code == 200, response.text
    return response.json()


def _trainer_answers(scorer_artifacts, kind: str, inputs: list[dict]) -> list[str]:
    """The trainer's own decoding of the same checkpoint, one batch, as its evaluation runs it."""
    folder = scorer_artifacts["artifacts"] / "checkpoints" / scorer_artifacts[kind]
    meta = read_metadata(folder)
    model, tokenizer = load_checkpoint_model(kind, folder)
    student = Student(
        kind=kind,
        model=model.eval(),
        tokenizer=tokenizer,
        fmt=meta.task.student_format(),
        max_length=meta.training.max_length,
        max_target_length=meta.training.max_target_length,
    )
    examples = [Example(fields=f) for f in inputs]
    with torch.inference_mode():
        return student.predict(student.collate(student.encode_inputs(examples), None))


def test_classifier_predicts_the_argmax_label_with_its_softmax(client, scorer_artifacts):
    cid = scorer_artifacts["classifier"]
    folder = scorer_artifacts["artifacts"] / "checkpoints" / cid
    # other keys (here a label) are ignored
    inputs = [f for f, _ in NLI] + [{"premise": "Prices fell sharply.", "hypothesis": "x", "label": "y"}]
    body = _predict(client, cid, inputs)
    assert body["student_kind"] == "classifier" and body["checkpoint_id"] == cid
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    labels = ["entailment", "contradiction"]
    for fields, prediction in zip(inputs, body["predictions"], strict=True):
        with torch.no_grad():  # one at a time, no padding: the batched answer must not depend on it
            logits = model(**tok(fields["premise"], fields["hypothesis"], return_tensors="pt")).logits
        expected = torch.softmax(logits, -1)[0].numpy()
        probabilities = prediction["probabilities"]
        assert list(probabilities) == labels
        np.testing.assert_allclose([probabilities[k] for k in labels], expected, rtol=1e-4, atol=1e-5)
        assert prediction["output"] == labels[int(expected.argmax())]


def test_seq2seq_answers_as_the_trainer_decodes(client, scorer_artifacts):
    body = _predict(client, scorer_artifacts["seq2seq"], NEW_QA)
    assert body["student_kind"] == "seq2seq"
    assert all(p["probabilities"] is None for p in body["predictions"])
    assert [p["output"] for p in body["predictions"]] == _trainer_answers(scorer_artifacts, "seq2seq", NEW_QA)


def test_causal_answers_as_the_trainer_decodes(client, scorer_artifacts):
    ready = client.get("/readyz").json()["models_loaded"]
    cid = scorer_artifacts["causal"]
    body = _predict(client, cid, NEW_QA)
    assert body["student_kind"] == "causal"
    answers = [p["output"] for p in body["predictions"]]
    assert answers == _trainer_answers(scorer_artifacts, "causal", NEW_QA)
    assert all("\n" not in a for a in answers) and any(answers)  # one line each, not all empty
    # Energies reuse the copy predictions loaded: one model more in the cache, not two.
    energy = client.post(
        "/v1/energy", json={"checkpoint_id": cid, "samples": [{**QA[0][0], "answer": QA[0][1]}]}
    )
    assert energy.status_code == 200
    assert client.get("/readyz").json()["models_loaded"] == ready + 1


def test_predict_errors_name_the_field(client, scorer_artifacts):
    cid = scorer_artifacts["classifier"]
    missing = client.post(
        "/v1/predict", json={"checkpoint_id": cid, "inputs": [NLI[0][0], {"premise": "only one field"}]}
    )
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["inputs", "1", "hypothesis"]
    too_many = client.post(
        "/v1/predict", json={"checkpoint_id": cid, "inputs": [NLI[0][0]] * (MAX_PREDICT_INPUTS + 1)}
    )
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["inputs"]
    unknown = client.post("/v1/predict", json={"checkpoint_id": str(uuid.uuid4()), "inputs": [NLI[0][0]]})
    assert unknown.status_code == 404
