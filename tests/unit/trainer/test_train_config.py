"""The one mapping from a run spec to a training job: what a loop student and a fresh one get."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.trainer.config import TrainerSettings
from services.trainer.train_config import config_from_spec
from shared.spec import CLASSIFIER_FINAL_LEARNING_RATE, RunSpec

EXAMPLES = Path(__file__).parents[3] / "examples"


def _config(spec: RunSpec, fresh: bool):
    return config_from_spec(
        spec,
        TrainerSettings(),
        checkpoint_id="c",
        output_dir=Path("/tmp/unused"),
        train=[],
        holdout=[],
        evaluation=[],
        fresh=fresh,
    )


def test_the_fresh_final_student_takes_its_own_rate_and_epochs_and_the_loop_student_the_others():
    raw = yaml.safe_load((EXAMPLES / "sst2.yaml").read_text())
    raw["student"] = raw.get("student", {}) | {"learning_rate": 2e-4, "final_learning_rate": 5e-5}
    spec = RunSpec.model_validate(raw)
    loop, final = _config(spec, fresh=False), _config(spec, fresh=True)
    assert (loop.learning_rate, loop.epochs, loop.early_stopping) == (2e-4, spec.student.epochs, False)
    final_epochs = spec.student.final_epochs
    assert (final.learning_rate, final.epochs, final.early_stopping) == (5e-5, final_epochs, True)

    raw["student"].pop("final_learning_rate")
    unset = RunSpec.model_validate(raw)
    assert _config(unset, fresh=True).learning_rate == CLASSIFIER_FINAL_LEARNING_RATE  # a classifier
    raw["student"]["learning_rate"] = 5e-5
    assert _config(RunSpec.model_validate(raw), fresh=True).learning_rate == 5e-5  # never above the loop's


def test_a_causal_students_final_rate_is_its_loop_rate_unless_set():
    raw = yaml.safe_load((EXAMPLES / "squad.yaml").read_text())
    spec = RunSpec.model_validate(raw)
    assert spec.student_kind == "causal"
    assert _config(spec, fresh=True).learning_rate == spec.student.learning_rate == 5e-5
