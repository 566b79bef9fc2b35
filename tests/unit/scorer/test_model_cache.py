"""The cache's bounds and reload rule (the real models are exercised in tests/integration/scorer)."""

import json
import time

from services.scorer.engine import ModelCache
from shared.checkpoints import METADATA_FILE


class _Sized:
    kind = "classifier"

    def __init__(self, name, nbytes):
        self.name, self.nbytes = name, nbytes


def _folders(tmp_path, names):
    out = {}
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        (folder / METADATA_FILE).write_text(json.dumps({"size": 10}))
        out[name] = folder
    return out


def test_lru_bounded_by_count_and_bytes(tmp_path):
    loads = []

    def loader(folder):
        loads.append(folder.name)
        return _Sized(folder.name, 40 if folder.name == "big" else 10)

    folders = _folders(tmp_path, ["a", "b", "c", "big"])
    cache = ModelCache(max_models=2, max_bytes=45, loader=loader)
    cache.get("a", folders["a"])
    cache.get("b", folders["b"])
    cache.get("a", folders["a"])  # hit: a becomes most recent
    cache.get("c", folders["c"])  # evicts b (least recent)
    assert loads == ["a", "b", "c"]
    cache.get("a", folders["a"])
    assert loads == ["a", "b", "c"]
    cache.get("b", folders["b"])
    assert loads[-1] == "b" and len(cache) == 2
    cache.get("big", folders["big"])  # 40 + 10 > 45 bytes: only big stays
    assert len(cache) == 1 and cache.nbytes == 40


def test_republished_checkpoint_is_reloaded(tmp_path):
    loads = []
    folders = _folders(tmp_path, ["a"])
    cache = ModelCache(4, 10**9, lambda f: loads.append(f.name) or _Sized(f.name, 1))
    cache.get("a", folders["a"])
    time.sleep(0.01)
    (folders["a"] / METADATA_FILE).write_text(json.dumps({"size": 11}))
    cache.get("a", folders["a"])
    assert loads == ["a", "a"]
