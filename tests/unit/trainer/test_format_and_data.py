import json
import uuid

import pytest

from services.trainer.checkpoints import publish
from shared.checkpoints import checkpoint_uuid, read_metadata, write_metadata
from shared.evaluation_data import EvaluationDataError, load_evaluation
from shared.spec import EvaluationSpec, TaskSpec
from shared.student_format import StudentFormat
from tests.checkpoint_meta import checkpoint_meta
from tests.support import SENTIMENT_TASK


def test_student_format_single_pair_and_many_fields():
    one = StudentFormat.from_task(["text"], "label", ["neg", "pos"])
    assert one.classifier_text({"text": "good"}) == ("good", None)
    assert one.label_index({"text": "x", "label": "pos"}) == 1
    assert one.label_index({"text": "x"}, label="other") is None
    pair = StudentFormat.from_task(["premise", "hypothesis"], "label", ["e", "n"])
    assert pair.classifier_text({"premise": "p", "hypothesis": "h"}) == ("p", "h")
    qa = StudentFormat.from_task(["context", "question"], "answer", None)
    assert qa.seq2seq_source({"context": "c", "question": "q"}) == "context: c\nquestion: q"
    assert qa.target({"answer": "a"}) == "a"
    three = StudentFormat.from_task(["a", "b", "c"], "y", ["0", "1"])
    assert three.classifier_text({"a": "1", "b": "2", "c": "3"}) == ("1", "b: 2\nc: 3")
    assert qa.missing_inputs({"context": "c"}) == ["question"]


def _task(**kw):
    base = dict(
        type="seq2seq",
        description="answer",
        input_fields=["context", "question"],
        output_field="answer",
        seed_examples=[{"context": "c", "question": "q", "answer": "a"}] * 2,
    )
    return TaskSpec(**{**base, **kw})


def test_evaluation_data_dotted_lists_input_map_limit_and_skips(tmp_path):
    rows = [
        {"ctx": "Paris is in France.", "q": "Where is Paris?", "answers": {"text": ["France", "France"]}},
        {"ctx": "", "q": "empty context", "answers": {"text": ["x"]}},
        {"ctx": "c", "q": "no answer", "answers": {"text": []}},
        {"ctx": "c2", "q": "q2", "answers": {"text": ["y"]}},
        {"ctx": "c3", "q": "q3", "answers": {"text": ["z"]}},
    ]
    path = tmp_path / "dev.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = EvaluationSpec(
        path=str(path), input_map={"context": "ctx", "question": "q"}, label_field="answers.text", limit=2
    )
    data = load_evaluation(spec, _task())
    assert [e.references for e in data.examples] == [("France",), ("y",)]
    assert data.examples[0].fields == {"context": "Paris is in France.", "question": "Where is Paris?"}
    assert data.skipped == {"missing_input": 1, "missing_reference": 1}


def test_evaluation_labels_outside_the_label_set_are_skipped(tmp_path):
    path = tmp_path / "sst.jsonl"
    path.write_text(
        '{"sentence": "good", "label_text": "positive"}\n{"sentence": "meh", "label_text": "neutral"}\n'
    )
    task = TaskSpec.model_validate(SENTIMENT_TASK)
    data = load_evaluation(EvaluationSpec(path=str(path), input_map={"text": "sentence"}), task)
    assert len(data.examples) == 1 and data.skipped["label_outside_label_set"] == 1
    with pytest.raises(EvaluationDataError, match="evaluation.path .*nope.jsonl: the file does not exist"):
        load_evaluation(EvaluationSpec(path=str(tmp_path / "nope.jsonl")), task)


def test_checkpoint_ids_are_deterministic_and_publish_replaces_atomically(tmp_path):
    run = str(uuid.uuid4())
    assert checkpoint_uuid(run, 1, "loop") == checkpoint_uuid(run, 1, "loop")
    assert checkpoint_uuid(run, 1, "loop") != checkpoint_uuid(run, 1, "final")
    final = tmp_path / "checkpoints" / str(checkpoint_uuid(run, 1, "loop"))

    def writer(version):
        def write(folder):
            write_metadata(folder, checkpoint_meta(base_model=f"v{version}"))

        return write

    publish(final, writer(1))
    publish(final, writer(2))
    assert read_metadata(final).base_model == "v2"

    def broken(folder):
        (folder / "partial").write_text("x")
        raise RuntimeError("crash while saving")

    with pytest.raises(RuntimeError):
        publish(final, broken)
    assert read_metadata(final).base_model == "v2"  # the published folder is untouched
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]  # no temp folder left


def test_reference_examples_default_to_the_generation_budget(tmp_path):
    from services.trainer.jobs import reference_examples
    from shared.spec import RunSpec

    real = tmp_path / "train.jsonl"
    labels = SENTIMENT_TASK["labels"]
    real.write_text("".join(json.dumps({"text": f"row {i}", "y": labels[i % 2]}) + "\n" for i in range(50)))
    spec = RunSpec.model_validate(
        {
            "name": "r",
            "task": SENTIMENT_TASK,
            "loop": {"iterations": 2, "samples_per_iteration": 8, "ood_samples_per_iteration": 2},
            "evaluation": {"path": str(real), "label_field": "y", "reference_path": str(real)},
        }
    )
    train, holdout = reference_examples(spec)
    assert len(train) + len(holdout) == 20 and len(holdout) == 3  # 2 x (8 + 2) rows, 15% held out
    assert train[0].fields == {"text": "row 0"} and train[0].label == labels[0]
    assert train[0].teacher_probs is None
