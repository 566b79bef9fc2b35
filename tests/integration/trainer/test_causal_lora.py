"""A LoRA causal student (real SmolLM2-135M-Instruct): the adapters train, the checkpoint is the
merged plain model, loadable with transformers alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from services.trainer.students import SMOLLM2, Example
from services.trainer.train import TrainConfig, train
from services.trainer.train_config import EvalItem

pytestmark = pytest.mark.slow

ROWS = [
    ("Paris is the capital of France.", "What is the capital of France?", "Paris"),
    ("The bridge opened in 1932.", "When did the bridge open?", "1932"),
    ("Mia plays the cello.", "What does Mia play?", "the cello"),
    ("The river is 40 km long.", "How long is the river?", "40 km"),
]


def test_lora_causal_student_saves_the_merged_model(tmp_path, models_dir):
    torch.set_num_threads(2)
    cfg = TrainConfig(
        checkpoint_id="lora",
        output_dir=tmp_path / "lora",
        kind="causal",
        model=SMOLLM2,
        task_type="seq2seq",
        input_fields=["context", "question"],
        output_field="answer",
        epochs=1,
        batch_size=2,
        learning_rate=1e-3,
        max_length=48,
        max_target_length=8,
        lora_rank=8,
        train=[Example(fields={"context": c, "question": q}, label=a) for c, q, a in ROWS],
        evaluation=[EvalItem(fields={"context": ROWS[0][0], "question": ROWS[0][1]}, references=["Paris"])],
        models_dir=models_dir,
    )
    result = train(cfg)

    size = result.metrics["student_parameters"]
    assert 130e6 < size < 140e6  # the merged model: no adapter weights left in it
    assert 0 < result.metrics["train_trainable_parameters"] < 0.05 * size
    assert "eval_f1" in result.metrics
    folder = tmp_path / "lora"
    assert not (folder / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == size
