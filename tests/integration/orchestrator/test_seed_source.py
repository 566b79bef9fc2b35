"""POST /runs with task.seed_source: the seeds are read once, when the run is created, from a file in
the data roots or a Hugging Face dataset (offline: a folder of parquet files named as its hub id),
stored as the run's seed samples and in its spec; a source that cannot give them is a 422 naming it."""

from __future__ import annotations

import json

import datasets
import pytest
from sqlalchemy import select

from shared.db.models import Run, Sample
from tests.support import sentiment_task


@pytest.fixture
def hub_reviews(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "acme" / "reviews"
    folder.mkdir(parents=True)
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    rows = [{"sentence": f"review {i}", "label": i % 2} for i in range(10)]
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / "train.parquet"))
    return "acme/reviews"


def seeded(source: dict) -> dict:
    task = sentiment_task(seed_source=source)
    task.pop("seed_examples")
    return {"name": "seeded", "task": task}


def test_seeds_from_a_hugging_face_dataset(api, session_factory, hub_reviews):
    source = {
        "dataset": hub_reviews,
        "split": "train",
        "input_map": {"text": "sentence"},
        "label_field": "label",
    }
    response = api.post("/runs", json=seeded({**source, "limit": 4}))
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    expected = [{"text": f"review {i}", "label": "positive" if i % 2 else "negative"} for i in range(4)]
    with session_factory() as session:
        stored = session.get(Run, run_id).spec["task"]
        samples = session.scalars(select(Sample).where(Sample.run_id == run_id).order_by(Sample.position))
        assert [(s.kind, s.fields, s.label) for s in samples] == [("seed", e, e["label"]) for e in expected]
    assert stored["seed_examples"] == expected and stored["seed_source"]["dataset"] == hub_reviews


def test_seeds_from_a_file_in_the_data_roots(api, session_factory, tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(
        json.dumps({"text": "fine", "label_text": "positive"})
        + "\n"
        + json.dumps({"text": "dull", "label_text": "negative"})
        + "\n"
    )
    response = api.post("/runs", json=seeded({"path": "seeds.jsonl"}))
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["task"]["seed_source"]["path"] == str(path)
    assert [e["text"] for e in response.json()["spec"]["task"]["seed_examples"]] == ["fine", "dull"]


@pytest.mark.parametrize(
    ("source", "field", "says"),
    [
        ({"dataset": "acme/absent", "split": "train"}, "task.seed_source.dataset", "could not be loaded"),
        ({"path": "absent.jsonl"}, "task.seed_source.path", "does not exist"),
        ({"path": "/etc/passwd"}, "task.seed_source.path", "outside the allowed data roots"),
        ({"dataset": "acme/reviews", "split": "train"}, "task.seed_source.dataset", "0 usable seed"),
        ({"dataset": "acme/reviews"}, "task.seed_source.split", "split"),
    ],
)
def test_a_source_that_gives_no_seeds_is_a_422_naming_it(api, hub_reviews, source, field, says):
    response = api.post("/runs", json=seeded(source))
    assert response.status_code == 422, response.text
    body = response.json()
    assert [".".join(map(str, d["loc"])) for d in body["detail"]] == [field]
    assert says in body["message"] or says in body["detail"][0]["msg"]


def test_seed_examples_and_a_source_are_not_both_given(api, hub_reviews):
    spec = seeded({"dataset": hub_reviews, "split": "train", "label_field": "label"})
    spec["task"]["seed_examples"] = sentiment_task()["seed_examples"]
    response = api.post("/runs", json=spec)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["task", "seed_examples"]
