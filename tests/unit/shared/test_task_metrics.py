import pytest

from shared.task_metrics import classification_metrics, generation_metrics, normalize_answer


def test_classification_metrics_accuracy_and_macro_f1():
    m = classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.75)
    # f1(a) = 2/3, f1(b) = 0.8
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    # observed agreement 0.75, by chance 0.5 * 0.25 + 0.5 * 0.75 = 0.5
    assert m["kappa"] == pytest.approx(0.5)
    # one label everywhere: agreement says nothing about judgement
    assert classification_metrics(["a", "a"], ["a", "a"], ["a", "b"])["kappa"] == 0.0


def test_squad_style_em_f1_take_the_best_reference():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    m = generation_metrics(["the Eiffel tower", "in 1889"], [["Eiffel Tower", "Paris"], ["1887"]])
    assert m["exact_match"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)  # "in 1889" vs "1887": no common token
    assert m["rouge_l"] == pytest.approx(0.8 / 2)  # LCS 2 of 3 predicted tokens, 2 of 2 reference


def test_generation_metrics_partial_overlap():
    m = generation_metrics(["denver broncos"], [["the Denver Broncos team"]])
    assert m["exact_match"] == 0.0
    assert m["f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))


@pytest.mark.parametrize("task_type", ["classification", "seq2seq"])
def test_the_metrics_a_spec_may_name_are_the_ones_computed(task_type):
    """spec.TASK_METRICS lists the names `evaluation.metric` accepts (kept apart so that the spec
    module does not import scikit-learn); every one of them must be what task_scores returns."""
    from shared.spec import TASK_METRICS
    from shared.task_metrics import task_scores

    scores = task_scores(task_type, ["a"], [["a"]], ["a", "b"])
    assert set(scores) == set(TASK_METRICS[task_type])
