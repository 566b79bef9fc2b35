from pathlib import Path

import pytest

from shared.spec import FileSource, HubSource, RunSpec, load_spec_file

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "examples").glob("*.yaml")) + [ROOT / "gold" / "specs" / "demo.yaml"]


def _sources(path: Path) -> list[FileSource | HubSource]:
    evaluation = RunSpec.model_validate(load_spec_file(path)).evaluation
    assert evaluation is not None
    return [s for s in (evaluation.source, evaluation.reference_source) if s is not None]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_specs_are_valid(path):
    """Every bundled spec evaluates on real data: a file of the benchmark data beside the project
    (never one inside it) or a Hugging Face dataset."""
    for source in _sources(path):
        assert isinstance(source, HubSource) or source.path.startswith("../shared/data/"), source


@pytest.mark.shared_data
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_bundled_specs_name_data_that_exists(path, shared_data):
    for source in _sources(path):
        if isinstance(source, FileSource):
            relative = Path(source.path).relative_to("../shared/data")
            assert (shared_data / relative).is_file(), source
