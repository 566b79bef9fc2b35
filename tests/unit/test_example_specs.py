from pathlib import Path

import pytest

from shared.spec import RunSpec, load_spec_file

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "examples").glob("*.yaml")) + [ROOT / "gold" / "specs" / "demo.yaml"]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_specs_are_valid(path):
    spec = RunSpec.model_validate(load_spec_file(path))
    assert spec.evaluation is not None and spec.evaluation.path.startswith("../shared/data/")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_specs_name_data_that_exists(path):
    evaluation = RunSpec.model_validate(load_spec_file(path)).evaluation
    for data in (evaluation.path, evaluation.reference_path):
        assert data is None or (ROOT / data).is_file(), data
