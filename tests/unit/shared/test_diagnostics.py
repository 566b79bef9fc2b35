"""The loop's diagnostics are read by name through one extractor that knows them all, so a name a
writer and a reader spell apart fails here instead of blanking a column (the driver test checks
that a gold run writes every one of them)."""

import pytest

from shared.diagnostics import diagnostic, diagnostic_series
from shared.names import Diagnostic, near_duplicates, novelty
from shared.schemas.runs import IterationRead


def _iteration(index: int, metrics: dict[str, float]) -> IterationRead:
    return IterationRead(
        index=index,
        status="done",
        parse_stats={},
        timings={},
        checkpoint_id=None,
        metrics=metrics,
        started_at=None,
        finished_at=None,
    )


def test_the_extractor_refuses_a_name_that_is_not_a_diagnostic():
    metrics = {"ood_novelty": 0.4, "ood_novelty_": 0.5}
    with pytest.raises(ValueError, match="ood_novelty_"):
        diagnostic(metrics, "ood_novelty_")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        diagnostic_series([_iteration(1, metrics)], "eval_accuracy")  # type: ignore[arg-type]
    assert diagnostic(metrics, Diagnostic.OOD_NOVELTY) == 0.4


def test_a_diagnostic_the_run_did_not_record_is_none_and_left_out_of_the_series():
    iterations = [
        _iteration(1, {"ood_energy_gap": -0.5}),
        _iteration(2, {}),
        _iteration(3, {"ood_energy_gap": 0.25}),
    ]
    assert diagnostic({}, Diagnostic.FEEDBACK_CHECKED) is None
    assert diagnostic_series(iterations, Diagnostic.OOD_ENERGY_GAP) == [(1, -0.5), (3, 0.25)]


def test_the_per_batch_names_are_diagnostics_of_the_two_batch_kinds():
    assert [novelty(k) for k in ("train", "ood")] == [Diagnostic.TRAIN_NOVELTY, Diagnostic.OOD_NOVELTY]
    assert near_duplicates("ood") == "ood_near_duplicates"
    with pytest.raises(ValueError):
        novelty("seed")


def test_the_stored_names_do_not_change():
    # Metric rows in Postgres and `gold eval` results files (docs/results) keep these strings.
    assert {d.value for d in Diagnostic} >= {
        "distinct_2",
        "pool_spread",
        "pool_coverage",
        "nearest_neighbour_similarity",
        "ood_novelty",
        "train_novelty",
        "ood_energy_gap",
        "teacher_agreement",
        "verification_withheld",
        "feedback_checked",
        "feedback_teacher_agreement",
        "feedback_withheld",
        "teacher_kappa",
    }
