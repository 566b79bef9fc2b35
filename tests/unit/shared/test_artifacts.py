"""The artifact store (shared/artifacts.py) behind fsspec URLs: a checkpoint written on one "host"
(a cache directory) is uploaded, metadata last, and another host's cache downloads it before loading;
a local directory is used in place; an unwritable store is named."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from shared.artifacts import ArtifactStore, UnwritableArtifacts, relative
from shared.checkpoints import (
    METADATA_FILE,
    CheckpointMeta,
    CheckpointNotFound,
    checkpoint_dir,
    write_metadata,
)
from tests.checkpoint_meta import checkpoint_meta


def _write(folder: Path, meta: CheckpointMeta, weights: bytes = b"weights") -> None:
    """What the trainer's publish leaves: a Hugging Face folder with the metadata file."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    write_metadata(folder, meta)


@pytest.fixture(params=["memory", "file"])
def url(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://gold-tests-{uuid.uuid4().hex}/artifacts"
    return f"file://{tmp_path}/store"  # a directory the "hosts" reach only through the URL


def test_a_checkpoint_travels_from_one_host_to_another(url, tmp_path):
    trainer = ArtifactStore(url, tmp_path / "trainer-cache")
    scorer = ArtifactStore(url, tmp_path / "scorer-cache")
    assert not trainer.in_place
    cid = uuid.uuid4()
    _write(trainer.local_folder(cid), checkpoint_meta(base_model="first"))
    assert trainer.local_folder(cid) == checkpoint_dir(tmp_path / "trainer-cache", cid)

    trainer.require_writable()
    assert trainer.publish(cid) == f"checkpoints/{cid}"
    assert scorer.read_metadata(cid) == checkpoint_meta(base_model="first")
    folder = scorer.fetch(cid)
    assert folder == checkpoint_dir(tmp_path / "scorer-cache", cid)
    assert (folder / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((folder / METADATA_FILE).read_text())["base_model"] == "first"

    # Unchanged in the store: the cached copy is used as it is (not downloaded again).
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert scorer.fetch(cid) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp

    # Re-published (a re-run): the next fetch brings the new files.
    other = ArtifactStore(url, tmp_path / "rerun-cache")
    _write(other.local_folder(cid), checkpoint_meta(base_model="second"), b"new weights")
    other.publish(cid)
    assert (scorer.fetch(cid) / "model.safetensors").read_bytes() == b"new weights"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_the_metadata_file_is_uploaded_last(tmp_path, monkeypatch):
    store = ArtifactStore(f"memory://gold-tests-{uuid.uuid4().hex}", tmp_path / "cache")
    cid = uuid.uuid4()
    _write(store.local_folder(cid), checkpoint_meta())
    order: list[str] = []
    put_file = store.fs.put_file

    def recorded(lpath, rpath, **kwargs):
        order.append(Path(rpath).name)
        return put_file(lpath, rpath, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", recorded)
    store.publish(cid)
    assert sorted(order) == sorted(["config.json", "model.safetensors", METADATA_FILE])
    assert order[-1] == METADATA_FILE


def test_a_missing_checkpoint_is_not_found_naming_its_url(url, tmp_path):
    store = ArtifactStore(url, tmp_path / "cache")
    cid = uuid.uuid4()
    for call in (store.fetch, store.read_metadata):
        with pytest.raises(CheckpointNotFound) as caught:
            call(cid)
        assert f"{url}/checkpoints/{cid}/{METADATA_FILE}" in str(caught.value)
        assert caught.value.status_code == 404
    # Files without metadata (an upload cut short) are no checkpoint either.
    folder = f"{store.fs._strip_protocol(url)}/{store.checkpoint_relpath(cid)}"
    store.fs.makedirs(folder, exist_ok=True)
    store.fs.pipe_file(f"{folder}/model.safetensors", b"half")
    with pytest.raises(CheckpointNotFound):
        store.fetch(cid)


def test_an_unwritable_store_is_named_with_its_setting(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    url = f"file://{tmp_path}/a-file/store"  # even root cannot create a directory under a file
    with pytest.raises(UnwritableArtifacts) as caught:
        ArtifactStore(url, tmp_path / "cache").require_writable()
    message = str(caught.value)
    assert f"artifact store {url}/checkpoints is not writable" in message
    assert "GOLD_ARTIFACTS_URL" in message


def test_archive_and_remove(url, tmp_path):
    store = ArtifactStore(url, tmp_path / "cache")
    cid = uuid.uuid4()
    _write(store.local_folder(cid), checkpoint_meta())
    relpath = store.publish(cid)
    with tarfile.open(fileobj=io.BytesIO(store.archive(relpath, "student")), mode="r:gz") as archive:
        names = sorted(archive.getnames())
        weights = archive.extractfile("student/model.safetensors")
        assert weights is not None and weights.read() == b"weights"
    assert names == sorted(f"student/{n}" for n in ("config.json", "model.safetensors", METADATA_FILE))
    with pytest.raises(NotADirectoryError):
        store.archive("checkpoints/nothing-here", "student")
    store.remove([relpath, "checkpoints/nothing-here"])
    with pytest.raises(CheckpointNotFound):
        store.read_metadata(cid)


def test_a_local_directory_is_used_in_place(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"), tmp_path / "cache")
    cid = uuid.uuid4()
    assert store.in_place and store.local_folder(cid) == checkpoint_dir(tmp_path / "artifacts", cid)
    _write(store.local_folder(cid), checkpoint_meta())
    assert store.publish(cid) == f"checkpoints/{cid}"
    assert store.fetch(cid) == store.local_folder(cid)
    assert not (tmp_path / "cache").exists()  # nothing copied


@pytest.mark.parametrize("bad", ["../etc", "/etc/passwd", "checkpoints/../../x", ""])
def test_paths_stay_inside_the_store(bad):
    with pytest.raises(ValueError):
        relative(bad)


def test_the_cache_keeps_to_its_size_by_removing_the_least_recently_used_copies(url, tmp_path):
    """Three checkpoints through a cache that holds two and a half: fetching the third removes the
    copy used least recently, not the one just fetched again; a copy in use (idle less than
    min_idle_s) is never removed."""
    trainer = ArtifactStore(url, tmp_path / "trainer-cache")
    ids = [uuid.uuid4() for _ in range(3)]
    for cid in ids:
        _write(trainer.local_folder(cid), checkpoint_meta(), b"w" * 1000)
        trainer.publish(cid)
    size = sum(p.stat().st_size for p in trainer.local_folder(ids[0]).rglob("*") if p.is_file())
    scorer = ArtifactStore(url, tmp_path / "scorer-cache", cache_max_bytes=size * 5 // 2)
    first, second = scorer.fetch(ids[0]), scorer.fetch(ids[1])
    assert scorer.prune_cache(keep=second) == []  # both fit
    old = 1_000_000_000
    os.utime(first / METADATA_FILE, (old, old))  # the first used long ago ...
    os.utime(second / METADATA_FILE, (old + 10, old + 10))
    assert scorer.fetch(ids[0]) == first  # ... then used again: now the second is the oldest
    os.utime(first / METADATA_FILE, (old + 20, old + 20))

    third = scorer.fetch(ids[2])  # over the limit: the least recently used copy goes
    assert first.is_dir() and third.is_dir() and not second.exists()
    assert scorer.fetch(ids[1]).is_dir()  # the store still has it: downloaded again

    # Nothing idle long enough: over the limit, but nothing is removed under a reader.
    assert ArtifactStore(url, tmp_path / "scorer-cache", cache_max_bytes=1).prune_cache(keep=third) == []
