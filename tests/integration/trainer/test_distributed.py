"""Data-parallel training with torch.distributed: a real 2-process group on CPU (gloo), against the
single-process run on the same data."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoModelForSequenceClassification, AutoTokenizer

from services.trainer.launcher import launch
from services.trainer.students import Example
from services.trainer.train import TrainConfig, train

pytestmark = pytest.mark.slow

WORDS = ["warm", "funny", "great", "moving", "dull", "boring", "flat", "ugly"]
# 16 distinct examples: an even split, so the two ranks' halves must not overlap at all.
ROWS = [
    (f"a {w} film, take {i}", "positive" if j < 4 else "negative")
    for i in range(2)
    for j, w in enumerate(WORDS)
]


def _config(tmp_path, name: str, model: str) -> TrainConfig:
    return TrainConfig(
        checkpoint_id=name,
        output_dir=tmp_path / name,
        kind="seq2seq" if model == "tiny-t5" else "classifier",
        model=model,
        task_type="classification",
        input_fields=["text"],
        output_field="label",
        labels=["negative", "positive"],
        epochs=2,
        batch_size=4,
        max_length=24,
        max_target_length=8,
        train=[Example(fields={"text": t}, label=y) for t, y in ROWS],
        # Early stopping: rank 0 scores the holdout and every rank must follow its decision.
        holdout=[Example(fields={"text": "a great film"}, label="positive")],
        early_stopping=True,
        min_holdout_for_early_stopping=1,
        torch_threads=1,
    )


def _loads(folder, kind: str) -> None:
    auto = AutoModelForSequenceClassification if kind == "classifier" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    batch = tokenizer(["a warm film"], return_tensors="pt")
    with torch.inference_mode():
        out = model(**batch) if kind == "classifier" else model.generate(**batch, max_new_tokens=4)
    assert torch.isfinite(out.logits).all() if kind == "classifier" else out.shape[0] == 1


@pytest.mark.parametrize("model", ["minilm", "tiny-t5"])
def test_two_processes_train_disjoint_halves_and_save_a_loadable_checkpoint(tmp_path, model):
    single = train(_config(tmp_path, "single", model))
    double = launch(_config(tmp_path, "double", model), processes=2)

    for result, name in [(single, "single"), (double, "double")]:
        assert result.checkpoint_id == name and result.metrics["train_examples"] == len(ROWS)
        meta = json.loads((tmp_path / name / "gold_checkpoint.json").read_text())
        assert meta["training"]["processes"] == result.extra["processes"]
        _loads(tmp_path / name, meta["student_kind"])
    assert single.extra["processes"] == 1 and "rank_overlap" not in single.extra
    # In every epoch each rank trained on its own half: 8 + 8 examples, none seen by both.
    assert double.extra["processes"] == 2
    assert double.extra["rank_examples_per_epoch"] == [len(ROWS) // 2, len(ROWS) // 2]
    assert double.extra["rank_overlap"] == 0
    # Gradients were all-reduced: both replicas ended with the same weights.
    assert double.extra["replicas_in_sync"] is True
    assert double.metrics["train_loss"] > 0 and double.extra["epochs_run"] >= 1
