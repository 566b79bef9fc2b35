"""The artifact store: where checkpoints live, for every process that writes or reads them.

Two kinds, one interface:
- a local directory (GOLD_ARTIFACT_DIR, default {data_dir}/artifacts): read and written in place. The
  trainer publishes a checkpoint folder there by a rename; the scorer loads from it.
- an fsspec URL (GOLD_ARTIFACTS_URL: s3://bucket/gold, gs://..., file:///mnt/gold, memory://...): a
  store that hosts share without a shared filesystem. The trainer writes the folder into its local
  cache (GOLD_ARTIFACT_CACHE_DIR), then uploads it with the metadata file last: a folder without
  `gold_checkpoint.json` is no checkpoint (shared/checkpoints.py), so nobody loads a half-uploaded one.
  A reader downloads a checkpoint into its own cache before transformers loads it from local files,
  and reuses that copy while the store's metadata file is unchanged (a re-published folder differs).

Paths stored in Postgres (Checkpoint.path) are relative to the store's root in both cases."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from fsspec import AbstractFileSystem
from fsspec.core import url_to_fs

from shared.checkpoints import (
    METADATA_FILE,
    CheckpointMeta,
    CheckpointNotFound,
    checkpoint_dir,
    checkpoints_root,
    metadata_path,
    parse_metadata,
    read_metadata,
)
from shared.settings import GoldSettings

logger = logging.getLogger(__name__)


class UnwritableArtifacts(OSError):
    """The place checkpoints are written to cannot be written: the message names it."""

    def __init__(self, where: str, cause: OSError, *, setting: str = "GOLD_ARTIFACT_DIR"):
        kind = "artifact store" if "://" in where else "artifact directory"
        super().__init__(
            f"{kind} {where} is not writable ({cause.strerror or cause}): no checkpoint can be saved; "
            f"fix its permissions or space, or point {setting} elsewhere"
        )


def require_writable(folder: Path) -> None:
    """Fail before minutes of training when `folder` (created if missing) cannot take a new entry.
    A file is created and removed: permission bits alone do not say (root, read-only mounts)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UnwritableArtifacts(str(folder), exc) from exc


def relative(relpath: str) -> str:
    """A path inside the store: relative, without '..' (Checkpoint.path rows and checkpoint ids)."""
    path = PurePosixPath(relpath)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise ValueError(f"{relpath!r} is not a path inside the artifact store")
    return path.as_posix()


class ArtifactStore:
    """Checkpoints in a local directory (in place) or behind an fsspec URL (copied through a cache)."""

    def __init__(self, location: str, cache_dir: Path, cache_max_bytes: int | None = None):
        self.location = location.rstrip("/")
        # A plain path is used in place; any URL, file:// included, is a store shared by hosts that
        # may not see each other's disks, so its checkpoints are copied through the local cache.
        self.in_place = "://" not in location
        self.fs: AbstractFileSystem
        self.fs, root = url_to_fs(self.location)
        self._root = root.rstrip("/")
        self.cache_dir = cache_dir
        self.cache_max_bytes = cache_max_bytes

    @classmethod
    def from_settings(cls, settings: GoldSettings) -> ArtifactStore:
        limit = settings.artifact_cache_max_gb
        return cls(
            settings.artifacts_url or str(settings.artifacts),
            settings.artifact_cache,
            cache_max_bytes=int(limit * 2**30) if limit is not None else None,
        )

    def __repr__(self) -> str:
        return f"ArtifactStore({self.location!r})"

    # -- names -----------------------------------------------------------------------------------
    def where(self, relpath: str = "") -> str:
        """The store location of `relpath`, as messages name it."""
        return f"{self.location}/{relative(relpath)}" if relpath else self.location

    def _remote(self, relpath: str) -> str:
        return f"{self._root}/{relative(relpath)}"

    @staticmethod
    def checkpoint_relpath(checkpoint_id: uuid.UUID | str) -> str:
        return f"checkpoints/{uuid.UUID(str(checkpoint_id))}"

    def local_folder(self, checkpoint_id: uuid.UUID | str) -> Path:
        """Where this process finds (or writes) a checkpoint's files: the store's own folder for a
        local directory, the cache's copy for a URL."""
        root = Path(self.location) if self.in_place else self.cache_dir
        return checkpoint_dir(root, checkpoint_id)

    # -- writing (the trainer) -----------------------------------------------------------------------
    def require_writable(self) -> None:
        """UnwritableArtifacts naming the store when a checkpoint could not be saved there."""
        if self.in_place:
            require_writable(Path(self.location) / "checkpoints")
            return
        probe = self._remote(f"checkpoints/.write-check-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.makedirs(self._remote("checkpoints"), exist_ok=True)
            self.fs.pipe_file(probe, b"")
            self.fs.rm_file(probe)
        except OSError as exc:
            raise UnwritableArtifacts(self.where("checkpoints"), exc, setting="GOLD_ARTIFACTS_URL") from exc

    def publish(self, checkpoint_id: uuid.UUID | str) -> str:
        """Make the folder the trainer published at local_folder(id) a checkpoint of the store, and
        return its path relative to the store (for Checkpoint.path). Uploads for a URL: the old copy
        (a re-run's) is removed first and the metadata file goes last."""
        relpath = self.checkpoint_relpath(checkpoint_id)
        if self.in_place:
            return relpath
        folder = self.local_folder(checkpoint_id)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == METADATA_FILE)  # stable: the metadata file last
        target = self._remote(relpath)
        try:
            if self.fs.exists(target):
                self.fs.rm(target, recursive=True)
            for path in files:
                name = f"{target}/{path.relative_to(folder).as_posix()}"
                self.fs.makedirs(name.rsplit("/", 1)[0], exist_ok=True)  # local and file:// need it
                self.fs.put_file(str(path), name)
        except OSError as exc:
            raise UnwritableArtifacts(self.where(relpath), exc, setting="GOLD_ARTIFACTS_URL") from exc
        logger.info("checkpoint %s uploaded to %s (%d files)", checkpoint_id, self.where(relpath), len(files))
        return relpath

    # -- reading (trainer, scorer) ---------------------------------------------------------------------
    def read_metadata(self, checkpoint_id: uuid.UUID | str) -> CheckpointMeta:
        """A published checkpoint's metadata; CheckpointNotFound naming where it was looked for."""
        if self.in_place:
            return read_metadata(self.local_folder(checkpoint_id))
        return parse_metadata(self._metadata_bytes(checkpoint_id), self._metadata_name(checkpoint_id))

    def fetch(self, checkpoint_id: uuid.UUID | str) -> Path:
        """A local folder holding the published checkpoint, ready for from_pretrained: the store's
        own folder, or the cache's copy (downloaded when missing or when the store's differs)."""
        folder = self.local_folder(checkpoint_id)
        if self.in_place:
            if not metadata_path(folder).is_file():
                raise CheckpointNotFound(metadata_path(folder))
            return folder
        wanted = self._metadata_bytes(checkpoint_id)
        cached = metadata_path(folder)
        if cached.is_file() and cached.read_bytes() == wanted:
            os.utime(cached)  # its last use, for pruning
            return folder
        self._download(checkpoint_id, folder)
        self.prune_cache(keep=folder)
        return folder

    def prune_cache(self, keep: Path, *, min_idle_s: float = 600.0) -> list[Path]:
        """Remove the cached copies used least recently until the cache fits cache_max_bytes; a
        copy used in the last min_idle_s (another thread may be loading it) and `keep` stay. The
        store still holds every checkpoint: a removed copy is downloaded again when needed."""
        if self.in_place or self.cache_max_bytes is None:
            return []
        copies = [f for f in checkpoints_root(self.cache_dir).iterdir() if metadata_path(f).is_file()]
        sizes = {f: sum(p.stat().st_size for p in f.rglob("*") if p.is_file()) for f in copies}
        total, now, removed = sum(sizes.values()), time.time(), []
        for folder in sorted(copies, key=lambda f: metadata_path(f).stat().st_mtime):
            if total <= self.cache_max_bytes:
                break
            if folder == keep or now - metadata_path(folder).stat().st_mtime < min_idle_s:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= sizes[folder]
            removed.append(folder)
        if removed:
            logger.info(
                "artifact cache %s: removed %d least recently used copies", self.cache_dir, len(removed)
            )
        return removed

    def _metadata_name(self, checkpoint_id: uuid.UUID | str) -> str:
        return self.where(f"{self.checkpoint_relpath(checkpoint_id)}/{METADATA_FILE}")

    def _metadata_bytes(self, checkpoint_id: uuid.UUID | str) -> bytes:
        try:
            path = self._remote(f"{self.checkpoint_relpath(checkpoint_id)}/{METADATA_FILE}")
            data: bytes = self.fs.cat_file(path)
        except FileNotFoundError:
            raise CheckpointNotFound(self._metadata_name(checkpoint_id)) from None
        return data

    def _download(self, checkpoint_id: uuid.UUID | str, folder: Path) -> None:
        """Into a temporary sibling, then renamed into place: a reader of the cache (another thread)
        sees the old copy or the new one, never a half-downloaded folder."""
        source = self._remote(self.checkpoint_relpath(checkpoint_id))
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        try:
            names = sorted(self.fs.find(source))
            for name in names:
                target = tmp / name.removeprefix(f"{source}/")
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(name, str(target))
            if not metadata_path(tmp).is_file():  # removed between the metadata check and now
                raise CheckpointNotFound(self._metadata_name(checkpoint_id), "was removed while downloading")
            old = folder.parent / f".old-{folder.name}-{uuid.uuid4().hex[:8]}"
            if folder.exists():
                os.rename(folder, old)
            os.rename(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("checkpoint %s downloaded from %s into %s", checkpoint_id, self.where(), folder)

    # -- exports and deletion (orchestrator) -----------------------------------------------------------
    def archive(self, relpath: str, name: str) -> bytes:
        """The folder at `relpath` as a .tar.gz whose top folder is `name`; NotADirectoryError when
        the store has no files there."""
        source = self._remote(relpath)
        files = sorted(f for f in self.fs.find(source) if f != source)
        if not files:
            raise NotADirectoryError(f"{self.where(relpath)} holds no files")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path in files:
                info = tarfile.TarInfo(f"{name}/{path.removeprefix(f'{source}/')}")
                info.size, info.mode = self.fs.size(path), 0o644
                with self.fs.open(path, "rb") as handle:
                    archive.addfile(info, handle)
        return buffer.getvalue()

    def remove(self, relpaths: Iterable[str]) -> None:
        """Remove these folders from the store (a deleted run's checkpoints); a missing one is fine."""
        for relpath in relpaths:
            try:
                self.fs.rm(self._remote(relpath), recursive=True)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:  # a cleanup after the commit: logged, not raised
                logger.warning("could not remove %s from the artifact store: %s", relpath, exc)
