"""Cross-entropy and symmetric cross-entropy (Wang et al., ICCV 2019) for noisy teacher labels.

SCE = alpha * CE + beta * RCE, with RCE = -sum_k p_k log q_k where q is the one-hot target clamped
at 1e-4, so RCE = -log(1e-4) * (1 - p_y). For seq2seq the loss is per token over the vocabulary and
averaged over real (non-pad) target tokens only."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
_RCE_SCALE = -math.log(1e-4)


def token_losses(
    logits: torch.Tensor,
    targets: torch.Tensor,
    kind: Literal["ce", "sce"] = "ce",
    alpha: float = 1.0,
    beta: float = 1.0,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over positions whose target is not IGNORE_INDEX; with class_weights (C,), the mean
    weighted by each position's target class.

    logits: (..., C); targets: (...) class indices, IGNORE_INDEX where masked (seq2seq padding)."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    targets = targets.reshape(-1)
    valid = targets != IGNORE_INDEX
    if not bool(valid.any()):
        return logits.sum() * 0.0  # keeps the graph; an all-pad batch contributes nothing
    logits, targets = logits[valid], targets[valid]
    weights = class_weights[targets] if class_weights is not None else None
    ce = F.cross_entropy(logits, targets, reduction="none")
    if kind == "ce":
        return _mean(ce, weights)
    # The closed form of -sum_k p_k log(clamp(onehot, 1e-4)) avoids a (N, C) one-hot matrix, which
    # matters for a 32k vocabulary. p_y is clamped as in the reference implementation.
    p_y = torch.softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1).clamp(1e-7, 1.0)
    rce = _RCE_SCALE * (1.0 - p_y)
    return _mean(alpha * ce + beta * rce, weights)


def distill_kl(
    logits: torch.Tensor,
    teacher: torch.Tensor,
    has_teacher: torch.Tensor,
    temperature: float,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged (weighted by row_weights if given) over the rows
    that have a teacher distribution.

    The teacher gives probabilities, not logits, so its tempered distribution is softmax(log p / T)."""
    if not bool(has_teacher.any()):
        return logits.sum() * 0.0
    weights = row_weights[has_teacher] if row_weights is not None else None
    logits, teacher = logits[has_teacher].float(), teacher[has_teacher].float()
    teacher_t = torch.softmax(torch.log(teacher.clamp_min(1e-8)) / temperature, dim=-1)
    student_log_t = torch.log_softmax(logits / temperature, dim=-1)
    kl = (teacher_t * (torch.log(teacher_t.clamp_min(1e-12)) - student_log_t)).sum(dim=-1)
    return temperature**2 * _mean(kl, weights)


def _mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum()
