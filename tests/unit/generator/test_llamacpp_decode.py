"""The scheduling rules of the llama.cpp decoder that need no model: waves that fit the context,
stop strings, shared prefixes (the decoding itself: tests/integration/generator/test_llamacpp.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("numpy")

from services.generator.engines.llamacpp_decode import shared_prefix, waves  # noqa: E402
from services.generator.engines.protocol import first_stop  # noqa: E402


def test_waves_keep_order_and_fit_sequences_and_cells() -> None:
    needs = [(4, 300), (4, 300), (4, 300), (1, 900), (2, 10)]
    groups = waves(len(needs), needs.__getitem__, max_seqs=8, cells=1000)
    assert groups == [[0, 1], [2], [3, 4]]
    assert [i for g in groups for i in g] == list(range(len(needs)))


def test_an_item_that_cannot_fit_alone_is_refused_naming_the_settings() -> None:
    with pytest.raises(ValueError, match="generator_llamacpp_max_seqs"):
        waves(1, lambda i: (9, 10), max_seqs=8, cells=1000)
    with pytest.raises(ValueError, match="KV cells"):
        waves(1, lambda i: (1, 2000), max_seqs=8, cells=1000)


def test_first_stop_and_shared_prefix() -> None:
    assert first_stop("a review\n\nReview: next", ("\nReview:", "\n\n")) == 8
    assert first_stop("no stop here", ("\n\n", "")) == -1
    assert shared_prefix([2, 5, 7, 9], [2, 5, 8]) == 2 and shared_prefix([], [1]) == 0
