import json

from shared.names import (
    REFERENCE_EXAMPLES,
    TERMINAL_RUN_STATUSES,
    RunStatus,
    Stage,
    eval_metric,
    reference_metric,
    teacher_eval_metric,
)
from shared.spec import TASK_METRICS


def test_metric_names_are_the_stored_ones():
    # Stored in Postgres and in results JSON files: these strings must not change.
    assert eval_metric("accuracy") == "eval_accuracy"
    assert teacher_eval_metric("macro_f1") == "teacher_eval_macro_f1"
    assert reference_metric(eval_metric("f1")) == "reference_eval_f1"
    assert REFERENCE_EXAMPLES == "reference_examples"
    names = {eval_metric(m) for metrics in TASK_METRICS.values() for m in metrics}
    assert len(names) == len({m for metrics in TASK_METRICS.values() for m in metrics})


def test_statuses_and_stages_read_and_write_as_their_strings():
    assert RunStatus.CANCELLED == "cancelled" and "succeeded" in TERMINAL_RUN_STATUSES
    assert json.dumps({"stage": Stage.VERIFY}) == '{"stage": "verify"}'
    assert f"{Stage.GENERATE_OOD}" == "generate_ood"  # stage seeds hash this text
