"""Where `make demo` takes its real evaluation data from: the local file the demo spec names when it
is present, else the same split from the Hugging Face hub, else none, said in one line. The hub is
out of reach here (HF_HUB_OFFLINE=1); a reachable one is a folder of parquet files named as the hub
id in the working directory, which `datasets` reads before the hub."""

from __future__ import annotations

import datasets
import pytest

from gold import cli
from gold.demo import DEMO_SPEC, HUB_EVALUATION, choose_evaluation
from shared.spec import RunSpec, load_spec_file

LOCAL = "../shared/data/sst2/validation.jsonl"  # what demo.yaml names, from the project root
FEATURES = datasets.Features(
    {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A clone's root, with no benchmark data beside it; the working directory, as for `make demo`."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    return root


def _local_file(project) -> None:
    path = project / LOCAL
    path.parent.mkdir(parents=True)
    path.write_text('{"sentence": "a lovely film", "label": 1, "label_text": "positive"}\n')


def _reachable_hub(project) -> None:
    folder = project / HUB_EVALUATION["dataset"]
    folder.mkdir(parents=True)
    rows = [{"sentence": "a lovely film", "label": 1}, {"sentence": "a dreary film", "label": 0}]
    datasets.Dataset.from_list(rows, features=FEATURES).to_parquet(str(folder / "validation.parquet"))


def test_the_demo_spec_names_the_local_file():
    evaluation = load_spec_file(DEMO_SPEC)["evaluation"]
    assert evaluation["path"] == LOCAL


@pytest.mark.parametrize("hub", [True, False], ids=["hub-reachable", "hub-unreachable"])
def test_the_local_file_comes_first(project, hub):
    _local_file(project)
    if hub:
        _reachable_hub(project)
    chosen = choose_evaluation(load_spec_file(DEMO_SPEC))
    assert chosen.source == "file"
    assert chosen.spec == load_spec_file(DEMO_SPEC)
    assert chosen.message == f"evaluation data: {LOCAL}"


def test_without_the_file_the_hub_dataset(project):
    _reachable_hub(project)
    chosen = choose_evaluation(load_spec_file(DEMO_SPEC))
    assert chosen.source == "hub"
    evaluation = RunSpec.model_validate(chosen.spec).evaluation
    assert evaluation is not None and evaluation.path is None
    assert (evaluation.dataset, evaluation.split, evaluation.label_field) == (
        "stanfordnlp/sst2",
        "validation",
        "label",
    )
    assert evaluation.input_map == {"text": "sentence"} and evaluation.limit == 500  # the demo's own
    assert "stanfordnlp/sst2" in chosen.message and "\n" not in chosen.message


def test_without_either_no_evaluation_and_one_line_saying_how_to_get_it(project, capsys):
    chosen = choose_evaluation(load_spec_file(DEMO_SPEC))
    assert chosen.source == "none" and "evaluation" not in chosen.spec
    RunSpec.model_validate(chosen.spec)  # still a spec the orchestrator runs
    assert "no real-data accuracy" in chosen.message and "\n" not in chosen.message
    assert "make demo HF_HUB_OFFLINE=0" in chosen.message and LOCAL in chosen.message
    assert "offline" in chosen.message

    assert "evaluation" not in cli.demo_spec()  # what `gold demo` prints: that line alone
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.strip().splitlines() == [chosen.message]
