"""train() on the tiny T5 student (a fraction of a second): what it records about itself."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, T5ForConditionalGeneration

from services.trainer import evaluation as evaluation_module
from services.trainer import train as train_module
from services.trainer import training_data, training_loop
from services.trainer.students import Example, build_fresh, head_parameters, with_lora
from services.trainer.train import TrainConfig, train
from services.trainer.train_config import EvalItem

ROWS = [
    ("a warm film", "positive"),
    ("a dull film", "negative"),
    ("great fun", "positive"),
    ("flat", "negative"),
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(tmp_path, **overrides) -> TrainConfig:
    values = {
        "checkpoint_id": "tiny",
        "output_dir": tmp_path / "tiny",
        "kind": "seq2seq",
        "model": "tiny-t5",
        "task_type": "classification",
        "input_fields": ["text"],
        "output_field": "label",
        "labels": ["negative", "positive"],
        "epochs": 2,
        "batch_size": 2,
        "max_length": 16,
        "max_target_length": 4,
        "train": [Example(fields={"text": t}, label=y) for t, y in ROWS],
        "holdout": [Example(fields={"text": "a great film"}, label="positive")],
        "evaluation": [EvalItem(fields={"text": "fun"}, references=["positive"])],
    }
    return TrainConfig(**(values | overrides))


def test_result_seconds_cover_the_training_epochs_not_only_evaluation(tmp_path, monkeypatch):
    """A clock that moves only while a training batch runs: the job's seconds must include it
    (evaluation data used to restart the job's clock)."""
    now = [0.0]
    clock = SimpleNamespace(perf_counter=lambda: now[0], process_time=time.process_time)
    monkeypatch.setattr(train_module, "time", clock)
    monkeypatch.setattr(training_loop, "time", clock)
    loss = training_loop.batch_loss

    def slow_loss(*args, **kwargs):
        now[0] += 100.0
        return loss(*args, **kwargs)

    monkeypatch.setattr(training_loop, "batch_loss", slow_loss)
    result = train(_config(tmp_path))

    assert result.metrics["train_seconds"] == 400.0  # 2 epochs x 2 batches
    assert result.seconds >= result.metrics["train_seconds"]
    assert result.metrics["train_examples_per_s"] == 8 / 400.0
    assert "eval_accuracy" in result.metrics


def test_checkpoint_metadata_records_the_run(tmp_path):
    epochs: list[tuple[int, int]] = []  # what the trainer's job reports as the run's progress
    cfg = _config(tmp_path, metadata={"run_id": "r", "iteration": 2, "role": "loop"})
    result = train(cfg, on_epoch=lambda done, budget: epochs.append((done, budget)))
    assert epochs == [(1, cfg.epochs), (2, cfg.epochs)]

    meta = json.loads((tmp_path / "tiny" / "gold_checkpoint.json").read_text())
    assert meta["checkpoint_id"] == result.checkpoint_id == "tiny"
    assert (meta["run_id"], meta["iteration"], meta["role"]) == ("r", 2, "loop")
    assert meta["student_kind"] == "seq2seq" and meta["metrics"] == result.metrics
    assert meta["training"]["epochs_run"] == result.extra["epochs_run"] == 2
    assert meta["training"]["processes"] == result.extra["processes"] == 1
    assert set(result.metrics) >= {
        "train_loss",
        "holdout_accuracy",
        "eval_accuracy",
        "eval_seconds_per_example",
    }
    card = (tmp_path / "tiny" / "README.md").read_text()
    assert "GET /runs/r/dataset?format=parquet" in card and "GET /runs/r/dataset/card" in card  # the data


def test_a_lora_student_trains_its_adapters_only_and_saves_a_plain_model(tmp_path):
    result = train(_config(tmp_path, lora_rank=2))

    folder = tmp_path / "tiny"
    assert not (folder / "adapter_config.json").exists()  # merged: no peft needed to load it
    saved = T5ForConditionalGeneration.from_pretrained(folder)
    assert not any("lora" in name for name, _ in saved.named_parameters())
    size = sum(p.numel() for p in saved.parameters())
    assert result.metrics["student_parameters"] == size
    # the adapters of every linear layer: a small part of the model, the embeddings frozen
    assert 0 < result.metrics["train_trainable_parameters"] < 0.25 * size
    meta = json.loads((folder / "gold_checkpoint.json").read_text())
    assert meta["training"]["lora_rank"] == 2
    # the adapters' update is in the saved weights; what LoRA does not touch is as it started
    cfg = _config(tmp_path)
    start, _ = build_fresh("seq2seq", "tiny-t5", None, cfg.seed, cfg.models_dir)  # type: ignore[arg-type]
    query = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert not torch.equal(saved.state_dict()[query], start.state_dict()[query])
    assert torch.equal(saved.shared.weight, start.shared.weight)
    full = train(_config(tmp_path, output_dir=tmp_path / "full"))
    assert full.metrics["train_trainable_parameters"] == full.metrics["student_parameters"] == size


def test_the_result_carries_the_students_errors_on_the_real_data(tmp_path, monkeypatch):
    evaluation = [
        EvalItem(fields={"text": "fun"}, references=["positive"]),
        EvalItem(fields={"text": "dull"}, references=["negative"]),
        EvalItem(fields={"text": "flat"}, references=["negative"]),
    ]
    monkeypatch.setattr(
        evaluation_module, "predict", lambda student, examples, cfg, device: ["positive"] * len(examples)
    )
    result = train(_config(tmp_path, evaluation=evaluation))

    errors = result.extra["evaluation_errors"]
    assert errors["wrong"] == 2 and result.metrics["eval_accuracy"] == pytest.approx(1 / 3)
    assert errors["shown"][0] == {"input": {"text": "dull"}, "expected": "negative", "answered": "positive"}
    assert errors["confusion"] == {"positive": {"positive": 1}, "negative": {"positive": 2}}


def test_a_seq2seq_holdout_is_scored_by_token_f1_so_a_long_answer_can_improve(tmp_path, monkeypatch):
    """Exact match is 0 for any long generated answer (an NL4OPT formulation), and the loop's stopping
    rule would read a flat 0: a seq2seq holdout is scored by token F1 (holdout_f1)."""
    answer = "maximize profit muffins 4 scones 5"
    cfg = _config(
        tmp_path,
        task_type="seq2seq",
        labels=None,
        output_field="target",
        max_target_length=16,
        train=[Example(fields={"text": t, "target": answer}) for t, _ in ROWS],
        holdout=[Example(fields={"text": "a bakery", "target": answer})],
        evaluation=[],
    )
    half = "maximize profit muffins 4"  # 4 of the 6 tokens: precision 1, recall 2/3
    monkeypatch.setattr(evaluation_module, "predict", lambda student, rows, cfg, device: [half] * len(rows))
    result = train(cfg)

    assert result.metrics["holdout_f1"] == pytest.approx(0.8)
    assert "holdout_accuracy" not in result.metrics


def test_class_weights_even_out_a_skewed_pool():
    """Relabelling skewed the pool to 3 positives for 1 negative (and no neutral): each label present
    then weighs 2 in total, an absent one 0."""
    weights = training_data.balanced_class_weights([1, 1, 1, 0], width=3)
    assert weights.tolist() == pytest.approx([2.0, 4 / 6, 0.0])
    assert float(weights[torch.tensor([1, 1, 1, 0])].sum()) == pytest.approx(4.0)


def test_a_runs_exported_dataset_reads_back_as_the_final_students_data(tmp_path):
    def row(text, label, kind="train", holdout=False, excluded=False, probs=None):
        return {
            "text": text,
            "label": label,
            "gold_kind": kind,
            "gold_iteration": 1,
            "gold_holdout": holdout,
            "gold_energy": None,
            "gold_selected": False,
            "gold_excluded": excluded,
            "gold_teacher_probs": probs,
            "gold_id": text,
        }

    rows = [
        row("a seed", "positive", kind="seed"),
        row("kept", "negative", probs={"negative": 0.8, "positive": 0.2}),
        row("fed back", "positive", kind="ood"),
        row("held out", "positive", holdout=True),
        row("left out by verification", "positive", excluded=True),
    ]
    path = tmp_path / "gold-dataset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    train_rows, holdout_rows = training_data.read_run_dataset(path)

    assert [e.fields["text"] for e in train_rows] == ["a seed", "kept", "fed back"]
    assert train_rows[1].label == "negative" and train_rows[1].fields == {"text": "kept", "label": "negative"}
    assert train_rows[1].teacher_probs == {"negative": 0.8, "positive": 0.2}
    assert [e.fields["text"] for e in holdout_rows] == ["held out"]


def _tiny_bert_classifier() -> BertForSequenceClassification:
    config = BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, num_labels=3
    )
    return BertForSequenceClassification(config)


@pytest.mark.parametrize("lora_rank", [None, 2])
def test_a_classifiers_head_gets_its_own_learning_rate(tmp_path, lora_rank):
    model = _tiny_bert_classifier()
    if lora_rank:
        model = with_lora(model, "classifier", lora_rank)
    head = head_parameters(model)
    assert {p.shape for p in head} == {torch.Size([3, 32]), torch.Size([3])}  # BERT's `classifier`
    cfg = _config(tmp_path, kind="classifier", learning_rate=5e-5, head_learning_rate=2e-4)
    optimizer, _ = training_loop.build_optimizer(cfg, model, steps_per_epoch=4)
    encoder, head_group = optimizer.param_groups
    assert head_group["params"] == head and head_group["initial_lr"] == 2e-4
    assert encoder["initial_lr"] == 5e-5
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(encoder["params"]) + len(head) == len(trainable)

    single, _ = training_loop.build_optimizer(_config(tmp_path, kind="classifier"), model, steps_per_epoch=4)
    assert len(single.param_groups) == 1  # no head rate: one rate for every trainable weight
