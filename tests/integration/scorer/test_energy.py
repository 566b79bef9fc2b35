"""Energies from the scorer API against an independent NumPy computation on the same model's logits."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from services.scorer.config import ScorerSettings
from services.scorer.main import create_app
from shared.artifacts import ArtifactStore
from tests.integration.conftest import NLI, QA

pytestmark = pytest.mark.slow


def np_free_energy(logits: np.ndarray, t: float) -> np.ndarray:
    z = logits.astype(np.float64) / t
    m = z.max(axis=-1, keepdims=True)
    return -t * (m[..., 0] + np.log(np.exp(z - m).sum(axis=-1)))


@pytest.fixture(scope="module")
def client(scorer_artifacts):
    settings = ScorerSettings(artifact_dir=scorer_artifacts["artifacts"], scorer_batch_size=2)
    with TestClient(create_app(settings)) as c:
        yield c


def test_classifier_energy_matches_numpy(client, scorer_artifacts):
    cid = scorer_artifacts["classifier"]
    folder = scorer_artifacts["artifacts"] / "checkpoints" / cid
    samples = [f for f, _ in NLI] + [{"premise": "Stock prices fell sharply today.", "hypothesis": "x"}]
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    for t in (1.0, 2.5):
        response = client.post(
            "/v1/energy", json={"checkpoint_id": cid, "samples": samples, "temperature": t}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["student_kind"] == "classifier"
        expected = []
        for s in samples:  # one at a time: no padding, pair encoding as in shared/student_format
            with torch.no_grad():
                logits = model(**tok(s["premise"], s["hypothesis"], return_tensors="pt")).logits.numpy()
            expected.append(np_free_energy(logits, t)[0])
        np.testing.assert_allclose(body["energies"], expected, rtol=1e-4, atol=1e-4)


def _np_seq2seq_energy(model, tok, sample, t, pad_to=None):
    source = f"context: {sample['context']}\nquestion: {sample['question']}"
    enc = tok(source, return_tensors="pt")
    labels = tok(text_target=sample["answer"])["input_ids"]
    n_real = len(labels)
    if pad_to is not None:
        labels = labels + [tok.pad_token_id] * (pad_to - len(labels))
    decoder_input = [model.config.decoder_start_token_id] + labels[:-1]  # teacher forcing, by hand
    with torch.no_grad():
        logits = model(**enc, decoder_input_ids=torch.tensor([decoder_input])).logits[0].numpy()
    per_position = np_free_energy(logits, t)
    return per_position.mean() if pad_to is not None else per_position[:n_real].mean()


def test_seq2seq_energy_masks_padding_and_matches_numpy(client, scorer_artifacts):
    cid = scorer_artifacts["seq2seq"]
    folder = scorer_artifacts["artifacts"] / "checkpoints" / cid
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    # Different target lengths in one batch: padding must not change the masked energy.
    samples = [{**f, "answer": a} for f, a in QA] + [
        {"context": "Nothing here.", "question": "What?", "answer": "a"}
    ]
    max_target = json.loads((folder / "gold_checkpoint.json").read_text())["training"]["max_target_length"]
    for t in (1.0, 2.0):
        masked = client.post(
            "/v1/energy", json={"checkpoint_id": cid, "samples": samples, "temperature": t}
        ).json()
        expected = [_np_seq2seq_energy(model, tok, s, t) for s in samples]
        np.testing.assert_allclose(masked["energies"], expected, rtol=1e-4, atol=1e-4)
    ref = client.post(
        "/v1/energy", json={"checkpoint_id": cid, "samples": samples, "pad_mode": "reference"}
    ).json()
    expected_ref = [_np_seq2seq_energy(model, tok, s, 1.0, pad_to=max_target) for s in samples]
    np.testing.assert_allclose(ref["energies"], expected_ref, rtol=1e-4, atol=1e-4)
    assert ref["student_kind"] == "seq2seq"
    assert not np.allclose(ref["energies"], expected)  # the reference mode really averages over pads


def _np_causal_energy(model, tok, sample, t, max_length):
    """One unpadded row: the logits at the positions that predict the answer and the end token."""
    prompt = tok(f"context: {sample['context']}\nquestion: {sample['question']}\nanswer:")["input_ids"]
    prompt = prompt[-max_length:]  # a long prompt keeps its end
    target = tok(" " + sample["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0].numpy()
    return np_free_energy(logits[len(prompt) - 1 : len(prompt) + len(target) - 1], t).mean()


def test_causal_energy_covers_the_answer_only_and_matches_numpy(client, scorer_artifacts):
    cid = scorer_artifacts["causal"]
    folder = scorer_artifacts["artifacts"] / "checkpoints" / cid
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    training = json.loads((folder / "gold_checkpoint.json").read_text())["training"]
    max_length = training["max_length"]
    # Fitted to the longest answer it trained on and its end token, twice that or 8 tokens more.
    longest = max(len(tok(" " + a, add_special_tokens=False)["input_ids"]) for _, a in QA) + 1
    assert training["max_target_length"] == max(2 * longest, longest + 8)
    # Prompts and answers of different lengths share batches (left padding must not change a value);
    # the long context is truncated at its start.
    samples = [{**f, "answer": a} for f, a in QA] + [
        {"context": "Nothing here at all, " * 6, "question": "What?", "answer": "nothing here at all"}
    ]
    energies = {}
    for t in (1.0, 2.0):
        request = {"checkpoint_id": cid, "samples": samples, "temperature": t}
        body = client.post("/v1/energy", json=request).json()
        assert body["student_kind"] == "causal"
        expected = [_np_causal_energy(model, tok, s, t, max_length) for s in samples]
        np.testing.assert_allclose(body["energies"], expected, rtol=1e-4, atol=1e-4)
        energies[t] = body["energies"]
    # The answer decides the energy: the same prompt with another answer scores differently.
    other = client.post(
        "/v1/energy", json={"checkpoint_id": cid, "samples": [{**samples[0], "answer": "a purple giraffe"}]}
    ).json()
    assert abs(other["energies"][0] - energies[1.0][0]) > 1e-3


def test_energy_errors(client, scorer_artifacts):
    unknown = client.post(
        "/v1/energy", json={"checkpoint_id": str(uuid.uuid4()), "samples": [{"premise": "x"}]}
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    not_a_uuid = client.post("/v1/energy", json={"checkpoint_id": "../../etc", "samples": [{"premise": "x"}]})
    assert not_a_uuid.status_code == 422
    cid = scorer_artifacts["classifier"]
    missing = client.post(
        "/v1/energy", json={"checkpoint_id": cid, "samples": [{"premise": "only one field"}]}
    )
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["samples", "0", "hypothesis"]
    empty = client.post("/v1/energy", json={"checkpoint_id": cid, "samples": []})
    assert empty.status_code == 422
    seq = client.post(
        "/v1/energy", json={"checkpoint_id": scorer_artifacts["seq2seq"], "samples": [QA[0][0]]}
    )
    assert seq.status_code == 422 and seq.json()["detail"][0]["loc"][-1] == "answer"  # target needed
    assert client.get("/readyz").json()["models_loaded"] >= 1


def test_a_scorer_on_another_host_downloads_the_checkpoint_from_the_store(client, scorer_artifacts, tmp_path):
    """The trainer's folder uploaded to a store behind a URL (memory://, shared by this process only);
    a scorer that sees no trainer disk downloads it into its cache and gives the same energies."""
    cid = scorer_artifacts["classifier"]
    url = f"memory://gold-scorer-{uuid.uuid4().hex}"
    ArtifactStore(url, scorer_artifacts["artifacts"]).publish(cid)  # the trainer host's copy
    settings = ScorerSettings(
        artifact_dir=tmp_path / "not-used", artifacts_url=url, artifact_cache_dir=tmp_path / "cache"
    )
    samples = [f for f, _ in NLI]
    with TestClient(create_app(settings)) as remote:
        response = remote.post("/v1/energy", json={"checkpoint_id": cid, "samples": samples})
        assert response.status_code == 200, response.text
        unknown = remote.post("/v1/energy", json={"checkpoint_id": str(uuid.uuid4()), "samples": samples})
        assert unknown.status_code == 404 and url in unknown.json()["message"]
    local = client.post("/v1/energy", json={"checkpoint_id": cid, "samples": samples}).json()
    np.testing.assert_allclose(response.json()["energies"], local["energies"], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "cache" / "checkpoints" / cid / "model.safetensors").is_file()
    assert not (tmp_path / "not-used").exists()
