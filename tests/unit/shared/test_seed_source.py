"""task.seed_source: the seed examples read from a JSONL file or a Hugging Face dataset by the loader
evaluation data uses (shared/evaluation_data.py), with as many of each label as the rows allow.
Offline: the dataset is a folder of parquet files named as a hub id, which `datasets` reads first."""

from __future__ import annotations

import json

import datasets
import pytest
from pydantic import ValidationError

from shared.evaluation_data import EvaluationDataError, load_seeds
from shared.spec import FileSource, HubSource, SeedSourceSpec, TaskSpec
from tests.support import sentiment_task

FEATURES = datasets.Features(
    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
)


def task(**overrides) -> TaskSpec:
    data = sentiment_task(**overrides)
    data.pop("seed_examples", None)
    return TaskSpec.model_validate({**data, "seed_source": {"path": "x.jsonl"}})


@pytest.fixture
def sorted_reviews(tmp_path, monkeypatch):
    """`acme/reviews`, its train split sorted by label (every negative first), as many splits are."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "acme" / "reviews"
    folder.mkdir(parents=True)
    rows = [{"sentence": f"bad film {i}", "label": 0} for i in range(20)]
    rows += [{"sentence": "", "label": 1}] + [{"sentence": f"good film {i}", "label": 1} for i in range(20)]
    datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(folder / "train.parquet"))
    return "acme/reviews"


def test_a_sorted_split_still_gives_seeds_of_every_label(sorted_reviews):
    seeds = SeedSourceSpec(
        dataset=sorted_reviews, split="train", input_map={"text": "sentence"}, label_field="label", limit=4
    )
    assert seeds.source == HubSource(field="task.seed_source.dataset", dataset="acme/reviews", split="train")
    assert load_seeds(seeds, task()) == [
        {"text": "bad film 0", "label": "negative"},
        {"text": "bad film 1", "label": "negative"},
        {"text": "good film 0", "label": "positive"},  # the empty row before it is skipped
        {"text": "good film 1", "label": "positive"},
    ]


def test_a_jsonl_file_reads_the_same_way(tmp_path):
    path = tmp_path / "seeds.jsonl"
    rows = [{"sentence": "fine", "label_text": "positive"}, {"sentence": "dull", "label_text": "negative"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seeds = SeedSourceSpec(path=str(path), input_map={"text": "sentence"})
    assert seeds.source == FileSource(field="task.seed_source.path", path=str(path))
    assert load_seeds(seeds, task()) == [
        {"text": "fine", "label": "positive"},
        {"text": "dull", "label": "negative"},
    ]


def test_a_source_that_cannot_give_two_seeds_names_the_field(sorted_reviews, tmp_path):
    missing = SeedSourceSpec(dataset="acme/absent", split="train")
    with pytest.raises(
        EvaluationDataError, match="task.seed_source.dataset: Hugging Face dataset acme/absent"
    ):
        load_seeds(missing, task())
    wrong_column = SeedSourceSpec(dataset=sorted_reviews, split="train", label_field="label")  # no `text`
    with pytest.raises(EvaluationDataError, match="gave 0 usable seed example"):
        load_seeds(wrong_column, task())


def test_seed_examples_or_a_source():
    data = sentiment_task()
    data.pop("seed_examples")
    with pytest.raises(ValidationError, match="at least two seed examples, or a seed_source"):
        TaskSpec.model_validate(data)
    with pytest.raises(ValidationError) as caught:
        TaskSpec.model_validate({**data, "seed_source": {"path": "x.jsonl", "split": "train"}})
    assert [e["loc"] for e in caught.value.errors()] == [("seed_source", "split")]
    with pytest.raises(ValidationError) as caught:
        TaskSpec.model_validate({**data, "seed_source": {"dataset": "acme/reviews"}})
    assert [e["loc"] for e in caught.value.errors()] == [("seed_source", "split")]
    with pytest.raises(ValidationError, match="not both"):
        TaskSpec.model_validate({**data, "seed_source": {"path": "x.jsonl", "dataset": "acme/reviews"}})
    assert TaskSpec.model_validate({**data, "seed_source": {"dataset": "acme/reviews", "split": "train"}})
