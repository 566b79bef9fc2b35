"""The orchestrator reads a run's student from an artifact store behind a URL (a file:// directory
it only reaches through fsspec here): the model export archives it, DELETE removes it."""

from __future__ import annotations

import io
import tarfile
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from services.orchestrator.main import create_app
from shared.artifacts import ArtifactStore
from shared.checkpoints import CheckpointNotFound, write_metadata
from shared.db.models import Checkpoint
from tests.checkpoint_meta import checkpoint_meta

from .conftest import TOKEN


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"file://{tmp_path}/shared-store"


@pytest.fixture
def api(orchestrator_settings, session_factory, store_url, tmp_path) -> Iterator[TestClient]:
    settings = orchestrator_settings.model_copy(
        update={"artifacts_url": store_url, "artifact_cache_dir": tmp_path / "orchestrator-cache"}
    )
    with TestClient(
        create_app(settings, drive_runs=False), headers={"Authorization": f"Bearer {TOKEN}"}
    ) as c:
        yield c


def test_model_export_and_delete_go_through_the_store(api, spec, session_factory, store_url, tmp_path):
    run_id = api.post("/runs", json=spec).json()["id"]
    trainer = ArtifactStore(store_url, tmp_path / "trainer-host-cache")  # the trainer, elsewhere
    cid = uuid.uuid4()
    folder = trainer.local_folder(cid)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    write_metadata(folder, checkpoint_meta())
    relpath = trainer.publish(cid)
    with session_factory.begin() as session:
        session.add(
            Checkpoint(
                id=cid,
                run_id=uuid.UUID(run_id),
                iteration=3,
                role="final",
                path=relpath,
                student_model="m",
                student_kind="classifier",
            )
        )

    model = api.get(f"/runs/{run_id}/model")
    assert model.status_code == 200, model.text
    with tarfile.open(fileobj=io.BytesIO(model.content), mode="r:gz") as archive:
        config = archive.extractfile(f"gold-student-{run_id}/config.json")
        assert config is not None and config.read() == b'{"model_type": "bert"}'

    api.post(f"/runs/{run_id}/cancel")
    assert api.delete(f"/runs/{run_id}").status_code == 204
    with pytest.raises(CheckpointNotFound):
        trainer.read_metadata(cid)  # gone from the store, for every host
