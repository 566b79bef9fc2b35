"""Which transformers class a student kind is, how a saved student loads and on which device it
runs: one definition for the trainer and the scorer (the autocast both use is shared/hardware.py's).

A checkpoint loads from local files only, without remote code; a causal student in float32 whatever
its folder holds (fine-tuning bf16 weights with AdamW loses small updates, and the scorer's
energies must not round). torch and transformers are imported where used: shared/ stays importable
without them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.hardware import cuda_available
from shared.packaged_models import check_special_tokens
from shared.student_format import StudentKind

if TYPE_CHECKING:
    import torch

AUTO_MODEL_CLASSES: dict[StudentKind, str] = {
    "classifier": "AutoModelForSequenceClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal": "AutoModelForCausalLM",
}


def auto_model_class(kind: StudentKind) -> Any:
    """The transformers Auto class that loads a student of `kind`."""
    import transformers

    return getattr(transformers, AUTO_MODEL_CLASSES[kind])


def model_options(kind: StudentKind) -> dict[str, Any]:
    """from_pretrained's options for a student of `kind` (fresh or saved)."""
    options: dict[str, Any] = {"trust_remote_code": False}
    if kind == "causal":
        import torch

        options["dtype"] = torch.float32
    return options


def prepared_tokenizer(kind: StudentKind, tokenizer: Any, where: str) -> Any:
    """A causal student's tokenizer pads with its end token where the model has no pad token
    (Llama, Qwen base models) and must have both (shared/packaged_models.py)."""
    if kind == "causal":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        check_special_tokens(tokenizer, where=where)
    return tokenizer


def load_checkpoint_model(kind: StudentKind, folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a student the trainer saved, the model on the CPU."""
    from transformers import AutoTokenizer

    model = auto_model_class(kind).from_pretrained(str(folder), local_files_only=True, **model_options(kind))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    return model, prepared_tokenizer(kind, tokenizer, str(folder))


def student_device() -> torch.device:
    """The GPU where there is one."""
    import torch

    return torch.device("cuda" if cuda_available() else "cpu")
