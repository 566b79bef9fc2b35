"""Sentence embeddings from the scorer API (the real all-MiniLM-L6-v2), against a by-hand mean pooling
of the same model's token vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModel, AutoTokenizer

from services.scorer.config import ScorerSettings
from services.scorer.main import create_app
from shared.packaged_models import minilm_path
from shared.schemas.scoring import EmbedResponse

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUITAR, GUITAR_PARAPHRASE = "A man is playing a guitar on stage.", "Someone performs music with a guitar."
UNRELATED = "Interest rates rose again this quarter."
PANGRAM = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge every box"


def _app(tmp_path_factory):
    # Batches of 8: the 40 texts below span five of them, with different padding in each.
    settings = ScorerSettings(
        artifact_dir=tmp_path_factory.mktemp("artifacts"), scorer_batch_size=8, api_keys={"t": TOKEN}
    )
    return create_app(settings)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(_app(tmp_path_factory)) as c:
        yield c


def embed(client: TestClient, texts: list[str]) -> np.ndarray:
    response = client.post("/v1/embed", json={"texts": texts}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = EmbedResponse.model_validate(response.json())
    assert body.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert body.dimensions == 384 and len(body.embeddings) == len(texts)
    return np.asarray(body.embeddings)


def test_bad_input_is_rejected_without_loading_the_encoder(tmp_path_factory):
    with TestClient(_app(tmp_path_factory)) as client:
        assert client.post("/v1/embed", json={"texts": ["a"]}).status_code == 401
        for body, field in [
            ({"texts": []}, ["texts"]),
            ({}, ["texts"]),
            ({"texts": ["ok", 3]}, ["texts", "1"]),
            ({"texts": ["x" * 8001]}, ["texts", "0"]),
            ({"texts": ["a"], "extra": 1}, ["extra"]),
        ]:
            response = client.post("/v1/embed", json=body, headers=AUTH)
            assert response.status_code == 422, body
            assert [str(p) for p in response.json()["detail"][0]["loc"]][-len(field) :] == field
        assert not client.app.state.encoder.loaded  # loaded on first use only


def test_embeddings_match_mean_pooling_and_keep_meaning(client):
    texts = [GUITAR, GUITAR_PARAPHRASE, UNRELATED, "", GUITAR]
    vectors = embed(client, texts)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Independent recipe, one text at a time (no padding): mean of the token vectors, L2-normalised.
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()
    with torch.no_grad():
        expected = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in texts]
    expected = torch.nn.functional.normalize(torch.stack(expected), dim=-1).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    cosine = vectors @ vectors.T
    assert cosine[0, 1] > cosine[0, 2] + 0.3  # paraphrase much closer than an unrelated sentence
    np.testing.assert_allclose(vectors[4], vectors[0], atol=1e-6)  # identical texts, identical vectors
    shuffled = embed(client, [UNRELATED, GUITAR, GUITAR_PARAPHRASE])
    np.testing.assert_allclose(shuffled, vectors[[2, 0, 1]], atol=1e-5)  # request order is kept
    assert client.get("/readyz").json()["status"] == "ready"


def test_batching_does_not_change_embeddings(client):
    # 40 texts of 0 to 36 words in no length order, so the length-sorted batches regroup them.
    texts = [" ".join((PANGRAM.split() * 3)[i % 7 : i % 7 + (i * 13) % 37]) for i in range(40)]
    together = embed(client, texts)
    alone = np.concatenate([embed(client, [t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
