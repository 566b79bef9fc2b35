"""Where a spec's real rows come from: a JSONL file or a Hugging Face dataset, exactly one, loaded in
one place (shared/evaluation_data.py). The hub is out of reach here (HF_HUB_OFFLINE=1): a dataset is
a folder of parquet files named as a hub id in the working directory, which `datasets` reads before
the hub, as it would read its own download."""

from __future__ import annotations

import json

import datasets
import pytest
from pydantic import ValidationError

from shared.evaluation_data import EvaluationDataError, load_evaluation, load_reference
from shared.spec import EvaluationSpec, FileSource, HubSource, RunSpec, TaskSpec
from tests.support import SENTIMENT_TASK

TASK = TaskSpec.model_validate(SENTIMENT_TASK)
FEATURES = datasets.Features(
    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
)


@pytest.fixture
def hub_dataset(tmp_path, monkeypatch):
    """`acme/reviews` with a validation and a train split, its label a class label (0/1)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # not ~/.cache
    folder = tmp_path / "acme" / "reviews"
    folder.mkdir(parents=True)
    validation = [
        {"sentence": "a lovely film", "label": 1},
        {"sentence": "", "label": 0},  # no input: skipped
        {"sentence": "a dreary film", "label": 0},
        {"sentence": "a fine film", "label": 1},
    ]
    train = [{"sentence": f"review {i}", "label": i % 2} for i in range(10)]
    for split, rows in (("validation", validation), ("train", train)):
        datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(folder / f"{split}.parquet"))
    return "acme/reviews"


def _error_fields(**evaluation) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        EvaluationSpec.model_validate(evaluation)
    return {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}


def test_a_source_is_a_file_or_a_dataset_never_both_nor_neither():
    both = _error_fields(path="x.jsonl", dataset="acme/reviews", split="validation")
    assert "not both" in both["dataset"]
    neither = _error_fields(input_map={"text": "sentence"})
    assert "give path (a JSONL file) or dataset" in neither["dataset"]
    assert "split" in _error_fields(dataset="acme/reviews")  # which split to evaluate on
    assert "not to path" in _error_fields(path="x.jsonl", split="validation")["split"]
    assert "not to path" in _error_fields(path="x.jsonl", config="sst2")["config"]
    assert (
        "not both" in _error_fields(path="x", reference_path="y", reference_split="train")["reference_split"]
    )
    assert "reference_path" in _error_fields(path="x", reference_split="train")["reference_split"]


@pytest.mark.parametrize("name", ["/etc/passwd", "../acme/reviews", "~/data", "json", "acme/../x", "a/b/c"])
def test_a_dataset_name_is_a_hub_id_never_a_path(name):
    assert "dataset" in _error_fields(dataset=name, split="validation")


def test_the_spec_says_which_source_it_names():
    file = EvaluationSpec(path="x.jsonl", reference_path="real.jsonl")
    assert file.source == FileSource(field="evaluation.path", path="x.jsonl")
    assert file.reference_source == FileSource(field="evaluation.reference_path", path="real.jsonl")
    hub = EvaluationSpec(dataset="nyu-mll/glue", config="sst2", split="validation", reference_split="train")
    assert hub.source == HubSource(
        field="evaluation.dataset", dataset="nyu-mll/glue", config="sst2", split="validation"
    )
    assert hub.reference_source == HubSource(
        field="evaluation.reference_split", dataset="nyu-mll/glue", config="sst2", split="train"
    )
    assert EvaluationSpec(dataset="nyu-mll/glue", split="validation").reference_source is None


def test_a_hub_dataset_loads_with_its_class_names_and_column_mapping(hub_dataset):
    spec = EvaluationSpec(
        dataset=hub_dataset, split="validation", input_map={"text": "sentence"}, label_field="label"
    )
    data = load_evaluation(spec, TASK)
    assert [(e.fields["text"], e.references) for e in data.examples] == [
        ("a lovely film", ("positive",)),
        ("a dreary film", ("negative",)),
        ("a fine film", ("positive",)),
    ]
    assert data.skipped == {"missing_input": 1}
    limited = load_evaluation(spec.model_copy(update={"limit": 2}), TASK)
    assert len(limited.examples) == 2


def test_the_reference_comes_from_another_split_of_the_dataset(hub_dataset):
    spec = EvaluationSpec(
        dataset=hub_dataset,
        split="validation",
        input_map={"text": "sentence"},
        label_field="label",
        reference_split="train",
    )
    rows = load_reference(spec, TASK, limit=6).examples
    assert [e.references[0] for e in rows] == ["negative", "positive"] * 3
    run = RunSpec.model_validate(
        {
            "name": "r",
            "task": SENTIMENT_TASK,
            "loop": {"iterations": 0},
            "evaluation": {
                "dataset": hub_dataset,
                "split": "validation",
                "reference_split": "train",
                "reference_examples": 4,
                "teacher_baseline": False,
            },
        }
    )
    assert run.evaluation is not None and run.evaluation.reference_source is not None  # a baseline to measure


def test_a_dataset_that_does_not_load_is_a_clear_error_naming_the_source(hub_dataset):
    assert datasets.config.HF_HUB_OFFLINE, "the tests run offline (tests/conftest.py)"
    missing = EvaluationSpec(dataset="nobody/missing", split="validation")
    with pytest.raises(EvaluationDataError) as caught:
        load_evaluation(missing, TASK)
    message = str(caught.value)
    assert message.startswith("evaluation.dataset: Hugging Face dataset nobody/missing (split validation)")
    assert "OfflineModeIsEnabled" in message and "HF_HUB_OFFLINE" in message
    assert "Traceback" not in message and "\n" not in message
    wrong_split = EvaluationSpec(dataset=hub_dataset, split="test")
    with pytest.raises(EvaluationDataError, match=r"acme/reviews \(split test\).*Unknown split"):
        load_evaluation(wrong_split, TASK)


def test_a_missing_file_is_a_clear_error_naming_the_field(tmp_path):
    spec = EvaluationSpec(path="x.jsonl", reference_path=str(tmp_path / "gone.jsonl"))
    with pytest.raises(
        EvaluationDataError, match=r"^evaluation.reference_path .*gone.jsonl: the file does not exist"
    ):
        load_reference(spec, TASK, limit=5)
    (tmp_path / "real.jsonl").write_text(json.dumps({"text": "ok", "label_text": "positive"}) + "\n")
    spec = EvaluationSpec(path=str(tmp_path / "real.jsonl"))
    assert [e.references for e in load_evaluation(spec, TASK).examples] == [("positive",)]
