import pytest
from pydantic import ValidationError

from shared.spec import RunSpec, load_spec_file, stored_spec
from tests.unit.test_example_specs import ROOT


def test_a_newer_servers_stored_spec_reads_and_a_users_spec_stays_strict():
    stored = RunSpec.model_validate(load_spec_file(ROOT / "examples" / "sst2.yaml")).model_dump(mode="json")
    stored["student"]["a_field_from_a_newer_server"] = 1
    stored["another_section"] = {}

    assert stored_spec(stored).loop.iterations == 3
    with pytest.raises(ValidationError, match="a_field_from_a_newer_server"):
        RunSpec.model_validate(stored)
