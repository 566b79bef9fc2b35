"""docs/spec.md and docs/configuration.md are generated from the models: they must match what the
generator writes now, and every field must say what it does."""

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from gold import reference_docs
from gold.reference_docs import READERS, REFERENCES, own_fields, spec_sections
from shared.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("filename", sorted(REFERENCES))
def test_the_committed_reference_is_what_the_models_say(filename: str) -> None:
    committed = (ROOT / "docs" / filename).read_text(encoding="utf-8")
    assert committed == REFERENCES[filename](), (
        f"docs/{filename} is out of date with the models it is generated from: run `make docs` "
        "(python -m gold.reference_docs) and commit the result"
    )


def test_the_references_do_not_depend_on_this_machine(monkeypatch, tmp_path: Path) -> None:
    before = {name: render() for name, render in REFERENCES.items()}
    monkeypatch.setenv("GOLD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GOLD_GENERATOR_PORT", "9999")
    monkeypatch.chdir(tmp_path)
    assert {name: render() for name, render in REFERENCES.items()} == before
    assert str(ROOT) not in "".join(before.values())


def test_make_docs_writes_both_files(tmp_path: Path) -> None:
    reference_docs.main([str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REFERENCES)


def _undocumented(model: type[BaseModel], fields: dict) -> list[str]:
    return [
        f"{model.__name__}.{name}" for name, info in fields.items() if not (info.description or "").strip()
    ]


def test_every_spec_field_and_setting_says_what_it_does() -> None:
    missing = [m for _, model in spec_sections(RunSpec, "") for m in _undocumented(model, model.model_fields)]
    for reader in READERS:
        missing += _undocumented(reader.settings, own_fields(reader.settings))
    assert not missing, f"add Field(description=...) to {missing}"


def test_every_gold_variable_the_code_reads_is_documented() -> None:
    # A variable read with os.environ instead of a settings class would be missing from the reference.
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    named = {
        name
        for folder in ("shared", "services", "gold")
        for path in (ROOT / folder).rglob("*.py")
        for name in re.findall(r"\bGOLD_[A-Z][A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8"))
    }
    assert named, "the scan found no GOLD_ variable"
    assert sorted(n for n in named if f"`{n}`" not in documented) == []
