"""Loaded student checkpoints: the free energy of samples (Liu et al., NeurIPS 2020), and the
student's answers to new inputs (POST /v1/predict), from one cached copy of each model.

classifier: E(x) = -T * logsumexp_c(f_c(x) / T) over the class logits.
seq2seq:    teacher-forced on the sample's target text; per target position
            e_t = -T * logsumexp_v(z_tv / T) over the vocabulary, averaged over the real target tokens
            (pad_mode "mask"). pad_mode "reference" reproduces the reference code, which pads every
            target to the maximum target length and averages over the padding too (compatibility only).
causal:     teacher-forced on the sample's own answer after its prompt (shared/student_format.py):
            E = -(T/L) * sum_t logsumexp_v(z_tv / T) over the L answer tokens and the end token, the
            logits z_t being those that predict them; the prompt and the padding are excluded
            (pad_mode does not apply: there is no reference code to reproduce).

Predictions decode as the trainer's evaluation does, so an answer here is the answer the run's
metrics counted: a classifier's arg-max label with the softmax over its labels; seq2seq and causal
students through the decoding both services call (shared/student_decoding.py), at most
max_target_length tokens.

Inputs are encoded as the trainer encodes them (shared/student_encoding.py), with the lengths its
checkpoint metadata records (shared/checkpoints.CheckpointMeta). Models are loaded only from a
checkpoint folder the trainer wrote, as the trainer loads them (shared/student_models.py: local
files, no remote code)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import torch

from shared.checkpoints import CheckpointMeta, metadata_path, read_metadata
from shared.hardware import autocast
from shared.schemas.prediction import Prediction
from shared.student_decoding import greedy_answers, left_padded
from shared.student_encoding import causal_answer_ids, encode_inputs, seq2seq_target_ids
from shared.student_format import StudentKind
from shared.student_models import load_checkpoint_model, student_device

logger = logging.getLogger(__name__)

PadMode = Literal["mask", "reference"]
T = TypeVar("T")


class MissingField(ValueError):
    def __init__(self, index: int, field: str):
        super().__init__(f"sample {index} has no text field {field!r}")
        self.index, self.field = index, field


class EnergyModel(Protocol):
    kind: StudentKind
    nbytes: int

    def validate(self, samples: Sequence[Mapping[str, str]]) -> None: ...

    def energy(
        self, samples: Sequence[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]: ...

    def predict(self, inputs: Sequence[Mapping[str, str]]) -> list[Prediction]: ...


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    # bf16 on GPUs only, unlike the trainer: on a CPU, bf16 logits would round energies that differ
    # in the second decimal, and scoring is ~1% of a run's time there.
    return autocast(device.type, bf16_on_cpu=False)


def _model_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def free_energy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """-T * logsumexp(logits / T) over the last axis, in float32."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=-1)


class _Base:
    kind: StudentKind

    def __init__(self, folder: Path, meta: CheckpointMeta, batch_size: int):
        self.fmt = meta.task.student_format()
        self.max_length = meta.training.max_length
        self.max_target_length = meta.training.max_target_length
        self.batch_size = batch_size
        self.device = student_device()
        model, self.tokenizer = load_checkpoint_model(self.kind, folder)
        self.model = model.to(self.device).eval()
        self.nbytes = _model_bytes(self.model)
        self._lock = threading.Lock()  # one forward at a time per model: CPU threads are shared anyway

    def _inputs(self, samples: Sequence[Mapping[str, str]]) -> list[dict[str, list[int]]]:
        """The samples' inputs as the trainer encodes them, unpadded."""
        return encode_inputs(self.kind, self.tokenizer, self.fmt, samples, self.max_length)

    def _right_padded(
        self, rows: Sequence[Mapping[str, list[int]]], width: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Rows padded to the longest (or to `width`) as tensors on the model's device, with the
        tokenizer's pad token and side (the right: classifier and seq2seq students)."""
        padding = {"padding": "max_length", "max_length": width} if width else {"padding": True}
        batch = self.tokenizer.pad(list(rows), return_tensors="pt", **padding)
        return {k: v.to(self.device) for k, v in batch.items()}

    def validate(self, samples: Sequence[Mapping[str, str]]) -> None:
        _require(samples, self._needed())

    def _needed(self) -> tuple[str, ...]:
        return self.fmt.input_fields

    def _in_batches(
        self,
        samples: Sequence[Mapping[str, str]],
        compute: Callable[[list[Mapping[str, str]]], list[T]],
    ) -> list[T]:
        # Length-sorted batches waste little compute on padding; results are put back in order.
        keys = ["".join(s[name] for name in self._needed() if name in s) for s in samples]
        order = sorted(range(len(samples)), key=lambda i: len(keys[i]))
        out: dict[int, T] = {}
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out.update(zip(idx, compute([samples[i] for i in idx]), strict=True))
        return [out[i] for i in range(len(samples))]

    def energy(
        self, samples: Sequence[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]:
        self.validate(samples)
        return self._in_batches(samples, lambda batch: self._batch_energy(batch, temperature, pad_mode))

    def predict(self, inputs: Sequence[Mapping[str, str]]) -> list[Prediction]:
        _require(inputs, self.fmt.input_fields)
        return self._in_batches(inputs, self._batch_predict)

    def _batch_energy(
        self, samples: list[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]:
        raise NotImplementedError

    def _batch_predict(self, inputs: list[Mapping[str, str]]) -> list[Prediction]:
        raise NotImplementedError


def _require(samples: Sequence[Mapping[str, str]], fields: Sequence[str]) -> None:
    for i, sample in enumerate(samples):
        for name in fields:
            if not isinstance(sample.get(name), str):
                raise MissingField(i, name)


class ClassifierEnergy(_Base):
    kind = "classifier"

    def _batch_energy(
        self, samples: list[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]:
        batch = self._right_padded(self._inputs(samples))
        with _autocast(self.device):
            logits = self.model(**batch).logits
        return free_energy(logits, temperature).tolist()

    def _batch_predict(self, inputs: list[Mapping[str, str]]) -> list[Prediction]:
        labels = self.fmt.labels
        assert labels is not None, "a classifier checkpoint records its labels"
        batch = self._right_padded(self._inputs(inputs))
        with _autocast(self.device):
            logits = self.model(**batch).logits
        probabilities = torch.softmax(logits.float(), dim=-1).tolist()
        return [
            Prediction(output=labels[best], probabilities=dict(zip(labels, row, strict=True)))
            for best, row in zip(logits.argmax(dim=-1).tolist(), probabilities, strict=True)
        ]


class Seq2SeqEnergy(_Base):
    kind = "seq2seq"

    def _needed(self) -> tuple[str, ...]:
        return (*self.fmt.input_fields, self.fmt.output_field)

    def encode(self, samples: Sequence[Mapping[str, str]], pad_mode: PadMode) -> dict[str, torch.Tensor]:
        """Sources and target texts; pad_mode "reference" pads every target to max_target_length."""
        targets = seq2seq_target_ids(
            self.tokenizer, [self.fmt.target(s) or "" for s in samples], self.max_target_length
        )
        width = self.max_target_length if pad_mode == "reference" else None
        tgt = self._right_padded([{"input_ids": t} for t in targets], width)
        return {
            **self._right_padded(self._inputs(samples)),
            "labels": tgt["input_ids"],
            "target_mask": tgt["attention_mask"],
        }

    def _batch_energy(
        self, samples: list[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]:
        enc = self.encode(samples, pad_mode)
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=enc["labels"])
        with _autocast(self.device):
            logits = self.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                decoder_input_ids=decoder_input_ids,
            ).logits
        per_token = free_energy(logits, temperature)  # (B, L)
        if pad_mode == "reference":
            return per_token.mean(dim=1).tolist()
        mask = enc["target_mask"].to(per_token.dtype)
        return ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).tolist()

    def _batch_predict(self, inputs: list[Mapping[str, str]]) -> list[Prediction]:
        enc = self._right_padded(self._inputs(inputs))
        with _autocast(self.device):
            answers = greedy_answers("seq2seq", self.model, self.tokenizer, enc, self.max_target_length)
        return [Prediction(output=answer) for answer in answers]


class CausalEnergy(_Base):
    kind = "causal"

    def _needed(self) -> tuple[str, ...]:
        return (*self.fmt.input_fields, self.fmt.output_field)

    def encode(self, samples: Sequence[Mapping[str, str]]) -> tuple[dict[str, torch.Tensor], int]:
        """Prompt + answer + end token per row, LEFT-padded so every row's answer ends at the last
        position: only the last (longest answer + 1) positions' logits are computed (a 49k-token
        vocabulary over whole prompts would not fit a batch). Returns the batch and that count."""
        prompts = [row["input_ids"] for row in self._inputs(samples)]
        answers = [self.fmt.causal_target(s) for s in samples]
        targets = causal_answer_ids(self.tokenizer, answers, self.max_target_length)
        rows = [p + t for p, t in zip(prompts, targets, strict=True)]
        keep = max(len(t) for t in targets) + 1
        padded = left_padded(rows, self.tokenizer.pad_token_id or 0)
        # target_mask[:, j] marks the kept positions whose logits predict an answer token.
        # (the last position predicts what would follow the end token: never counted)
        target_mask = torch.tensor([[0] * (keep - 1 - len(t)) + [1] * len(t) + [0] for t in targets])
        return {**{k: torch.tensor(v) for k, v in padded.items()}, "target_mask": target_mask}, keep

    def _batch_energy(
        self, samples: list[Mapping[str, str]], temperature: float, pad_mode: PadMode
    ) -> list[float]:
        enc, keep = self.encode(samples)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        # Positions count real tokens only, so a left-padded row is computed as if unpadded.
        positions = (enc["attention_mask"].cumsum(dim=1) - 1).clamp(min=0)
        with _autocast(self.device):
            logits = self.model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                position_ids=positions,
                logits_to_keep=keep,
            ).logits
        per_token = free_energy(logits, temperature)  # (B, keep)
        target_mask = enc["target_mask"].to(per_token.dtype)
        return ((per_token * target_mask).sum(dim=1) / target_mask.sum(dim=1)).tolist()

    def _batch_predict(self, inputs: list[Mapping[str, str]]) -> list[Prediction]:
        """Left-padded prompts, greedy until the end token or the end of the answer's line."""
        prompts = [row["input_ids"] for row in self._inputs(inputs)]
        padded = left_padded(prompts, self.tokenizer.pad_token_id or 0)
        batch = {k: torch.tensor(v, device=self.device) for k, v in padded.items()}
        with _autocast(self.device):
            answers = greedy_answers("causal", self.model, self.tokenizer, batch, self.max_target_length)
        return [Prediction(output=answer) for answer in answers]


ENERGY_MODELS: dict[StudentKind, type[_Base]] = {
    "classifier": ClassifierEnergy,
    "seq2seq": Seq2SeqEnergy,
    "causal": CausalEnergy,
}


def load_energy_model(folder: Path, batch_size: int = 64) -> EnergyModel:
    meta = read_metadata(folder)  # CheckpointNotFound for a file that is no checkpoint metadata
    return ENERGY_MODELS[meta.student_kind](folder, meta, batch_size)


class ModelCache:
    """Loaded students keyed by checkpoint id, least recently used dropped past `max_models` or
    `max_bytes`. A checkpoint folder re-published by a re-run (new metadata mtime) is reloaded."""

    def __init__(self, max_models: int, max_bytes: int, loader: Callable[[Path], EnergyModel]):
        self.max_models, self.max_bytes = max(1, max_models), max_bytes
        self._loader = loader
        self._items: OrderedDict[str, tuple[int, EnergyModel]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return sum(model.nbytes for _, model in self._items.values())

    def get(self, key: str, folder: Path) -> EnergyModel:
        stamp = metadata_path(folder).stat().st_mtime_ns
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
            model = self._loader(folder)
            self._items[key] = (stamp, model)
            self._items.move_to_end(key)
            while len(self._items) > 1 and (
                len(self._items) > self.max_models or self.nbytes > self.max_bytes
            ):
                dropped, _ = self._items.popitem(last=False)
                logger.info("model cache: dropped %s", dropped)
            return model

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
