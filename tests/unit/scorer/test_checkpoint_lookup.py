"""The scorer finds checkpoints through the shared contract (shared/checkpoints.py): a checkpoint the
trainer never published is a 404, and the loader raises the same domain error."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from services.scorer.config import ScorerSettings
from services.scorer.engine import load_energy_model
from services.scorer.main import create_app
from shared.checkpoints import CheckpointNotFound, checkpoint_dir


def test_an_unpublished_checkpoint_is_a_404(tmp_path):
    cid = uuid.uuid4()
    checkpoint_dir(tmp_path, cid).mkdir(parents=True)  # a folder without metadata is not a checkpoint
    with TestClient(create_app(ScorerSettings(artifact_dir=tmp_path))) as client:
        answer = client.post("/v1/energy", json={"checkpoint_id": str(cid), "samples": [{"text": "x"}]})
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert str(cid) in answer.json()["message"]


def test_the_loader_raises_the_shared_error(tmp_path):
    with pytest.raises(CheckpointNotFound, match="gold_checkpoint.json"):
        load_energy_model(tmp_path / "nowhere")
