import math

import torch

from services.trainer.losses import IGNORE_INDEX, distill_kl, token_losses


def _sce_by_definition(logits, targets, alpha, beta):
    """SCE written out as in Wang et al.: RCE = -sum_k p_k log(clamp(onehot, 1e-4))."""
    p = torch.softmax(logits, -1).clamp(1e-7, 1.0)
    onehot = torch.nn.functional.one_hot(targets, logits.shape[-1]).float().clamp(1e-4, 1.0)
    rce = -(p * torch.log(onehot)).sum(-1)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    return (alpha * ce + beta * rce).mean()


def test_ce_matches_torch_cross_entropy():
    logits, targets = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.allclose(token_losses(logits, targets, "ce"), expected)


def test_sce_matches_its_definition_with_clamped_one_hot():
    torch.manual_seed(0)
    logits, targets = torch.randn(8, 5) * 3, torch.randint(0, 5, (8,))
    got = token_losses(logits, targets, "sce", alpha=0.1, beta=1.0)
    assert torch.allclose(got, _sce_by_definition(logits, targets, 0.1, 1.0), atol=1e-4)
    # RCE is bounded by -log(1e-4): a confidently wrong prediction costs at most that much extra.
    wrong = torch.tensor([[20.0, -20.0]])
    rce_only = token_losses(wrong, torch.tensor([1]), "sce", alpha=0.0, beta=1.0)
    assert math.isclose(float(rce_only), -math.log(1e-4), rel_tol=1e-4)


def test_seq2seq_loss_ignores_padding_positions():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 11)
    targets = torch.tensor([[3, 4, 1, IGNORE_INDEX, IGNORE_INDEX], [5, 6, 7, 8, 1]])
    got = token_losses(logits, targets, "sce", 1.0, 1.0)
    valid = targets != IGNORE_INDEX
    expected = _sce_by_definition(logits[valid], targets[valid], 1.0, 1.0)
    assert torch.allclose(got, expected, atol=1e-4)
    # Changing the logits at padded positions changes nothing.
    logits2 = logits.clone()
    logits2[0, 3:] = 100.0
    assert torch.allclose(token_losses(logits2, targets, "sce"), got)


def test_distill_kl_is_tempered_kl_on_rows_with_a_teacher():
    torch.manual_seed(2)
    logits = torch.randn(3, 4)
    teacher = torch.softmax(torch.randn(3, 4), -1)
    has = torch.tensor([True, False, True])
    t = 2.0
    got = distill_kl(logits, teacher, has, t)
    expected = 0.0
    for i in (0, 2):
        p = torch.softmax(torch.log(teacher[i]) / t, -1)
        q = torch.log_softmax(logits[i] / t, -1)
        expected += float((p * (p.log() - q)).sum()) / 2
    assert abs(float(got) - t**2 * expected) < 1e-5
    assert float(distill_kl(logits, teacher, torch.zeros(3, dtype=torch.bool), t)) == 0.0
    # A student that matches the tempered teacher exactly has zero loss.
    assert abs(float(distill_kl(torch.log(teacher), teacher, has, 1.0))) < 1e-6


def test_class_weights_give_every_label_the_same_total_weight():
    """With weights n / (k * n_c), three examples of label 0 and one of label 1 count as two each:
    the loss is the mean of the per-label mean losses."""
    torch.manual_seed(3)
    logits, targets = torch.randn(4, 2), torch.tensor([0, 0, 0, 1])
    weights = torch.tensor([4 / (2 * 3), 4 / (2 * 1)])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    per_label_mean = (ce[:3].mean() + ce[3]) / 2
    assert torch.allclose(token_losses(logits, targets, "ce", class_weights=weights), per_label_mean)
    sce = token_losses(logits, targets, "sce", class_weights=weights)
    by_label = (
        _sce_by_definition(logits[:3], targets[:3], 1, 1) + _sce_by_definition(logits[3:], targets[3:], 1, 1)
    ) / 2
    assert torch.allclose(sce, by_label, atol=1e-4)
    teacher = torch.softmax(torch.randn(4, 2), -1)
    has = torch.ones(4, dtype=torch.bool)
    rows = weights[targets]
    kl = [float(distill_kl(logits[i : i + 1], teacher[i : i + 1], has[:1], 2.0)) for i in range(4)]
    expected = (sum(kl[:3]) / 3 + kl[3]) / 2
    assert abs(float(distill_kl(logits, teacher, has, 2.0, rows)) - expected) < 1e-5
