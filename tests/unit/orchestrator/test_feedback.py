"""The teacher's check of a label, as verification and the feedback check both apply it."""

import pytest

from services.orchestrator.feedback import decide_label

SURE_NEGATIVE = {"negative": 0.9, "positive": 0.1}


@pytest.mark.parametrize(
    ("policy", "label", "keep"),
    [
        ("relabel", "negative", True),  # the teacher's label, whatever was asked
        ("drop", "positive", False),  # the teacher disagrees: left out
        ("keep", "positive", True),  # nothing changes
    ],
)
def test_a_disagreement_is_relabelled_dropped_or_kept_as_the_policy_says(policy, label, keep):
    decision = decide_label(SURE_NEGATIVE, "positive", policy, 0.0)
    assert (decision.teacher_label, decision.label, decision.keep) == ("negative", label, keep)
    assert decision.confidence == SURE_NEGATIVE[label]


def test_a_label_the_teacher_gives_too_little_is_left_out_under_every_policy():
    for policy in ("relabel", "drop", "keep"):
        assert decide_label(SURE_NEGATIVE, "negative", policy, 0.5).keep
        assert not decide_label({"negative": 0.4, "positive": 0.6}, "positive", policy, 0.7).keep
    # relabelled to the teacher's label, then judged by that label's probability
    assert not decide_label(SURE_NEGATIVE, "positive", "relabel", 0.95).keep
