import numpy as np
import pytest

from shared.diversity import coverage, distinct_n, nearest_similarity, novel_mask, novelty, spread


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_near_duplicates_of_the_pool_and_of_earlier_new_samples_are_left_out():
    pool = unit([1, 0, 0])
    new = unit([0.99, 0.1, 0], [0, 1, 0], [0, 0.99, 0.1], [0, 0, 1])
    # the first is a copy of the pool's, the third of the second new one
    assert novel_mask(new, pool, threshold=0.95) == [False, True, False, True]
    assert novel_mask(new, pool[:0], threshold=0.95) == [True, True, False, True]


def test_novelty_is_the_distance_to_the_nearest_pool_sample():
    pool = unit([1, 0, 0], [0, 1, 0])
    assert novelty(unit([1, 0, 0], [0, 0, 1]), pool) == pytest.approx(0.5)  # distances 0 and 1
    assert novelty(unit([1, 0, 0]), pool[:0]) is None
    assert nearest_similarity(unit([0, 0, 1]), pool[:0]).tolist() == [-1.0]


def test_spread_and_coverage_grow_when_samples_move_apart():
    clumped = unit([1, 0.01, 0], [1, 0, 0.01], [1, 0.01, 0.01])
    apart = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    assert spread(clumped) < 0.01 and spread(apart) == pytest.approx(1.0)
    assert spread(apart[:1]) is None
    rng = np.random.default_rng(0)
    anchors = unit(*rng.standard_normal((4, 16)).tolist())
    near = unit(*(anchors[0] + 0.01 * rng.standard_normal((50, 16))).tolist())
    wide = unit(*rng.standard_normal((50, 16)).tolist())
    assert coverage(near, anchors) < coverage(wide, anchors) <= 1.0


def test_distinct_n_counts_repeated_word_pairs():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n([], 2) == 0.0
