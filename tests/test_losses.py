"""DistillationLoss against direct computations of each formula (hard, soft, none; Mixup soft targets)."""

import math

import pytest
import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

from hf_deit import DeiTConfig, DeiTForImageClassification, DistillationLoss
from hf_deit.models.modeling_deit import DeiTImageClassificationOutput

B, C = 6, 5


def outputs(distilled: bool = True, seed: int = 0) -> DeiTImageClassificationOutput:
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(B, C, generator=g, requires_grad=True)
    dist = torch.randn(B, C, generator=g, requires_grad=True) if distilled else None
    return DeiTImageClassificationOutput(logits=cls if dist is None else (cls + dist) / 2, cls_logits=cls, distillation_logits=dist)


def direct_ce(logits, labels, smoothing=0.0):
    """-sum_c q_c log p_c with q = (1 - s) onehot + s / C, averaged over the batch, written out."""
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    q = torch.full_like(log_p, smoothing / C)
    q[torch.arange(len(labels)), labels] += 1 - smoothing
    return -(q * log_p).sum(1).mean()


def test_hard_distillation_matches_the_formula():
    out = outputs()
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    teacher = torch.randn(B, C)
    parts = DistillationLoss("hard", alpha=0.3, label_smoothing=0.1)(out, labels, teacher)
    base = direct_ce(out.cls_logits, labels, 0.1)
    distill = direct_ce(out.distillation_logits, teacher.argmax(1), 0.0)  # no smoothing on the teacher's labels
    torch.testing.assert_close(parts["base_loss"], base.detach())
    torch.testing.assert_close(parts["distillation_loss"], distill.detach())
    torch.testing.assert_close(parts["loss"], 0.7 * base + 0.3 * distill)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_soft_distillation_is_tau_squared_kl_averaged_as_the_papers_code(tau):
    """Default: the summed KL / (batch x classes) x tau^2, as facebookresearch/deit's losses.py; "batchmean":
    / batch only (timm's distillation task), `classes` times larger."""
    out = outputs()
    labels = torch.randint(0, C, (B,))
    teacher = torch.randn(B, C) * 3
    p_t = torch.softmax(teacher / tau, 1)
    log_p_s = torch.log_softmax(out.distillation_logits / tau, 1)
    kl_per_sample = (p_t * (p_t.log() - log_p_s)).sum(1)  # KL(teacher || student), summed over classes
    paper = kl_per_sample.sum() / (B * C) * tau**2
    parts = DistillationLoss("soft", alpha=0.5, tau=tau)(out, labels, teacher)
    torch.testing.assert_close(parts["distillation_loss"], paper.detach())
    torch.testing.assert_close(parts["loss"], 0.5 * parts["base_loss"] + 0.5 * paper.detach())
    batchmean = DistillationLoss("soft", alpha=0.5, tau=tau, kl_reduction="batchmean")(out, labels, teacher)
    torch.testing.assert_close(batchmean["distillation_loss"], (kl_per_sample.mean() * tau**2).detach())
    assert math.isclose(float(batchmean["distillation_loss"]), float(paper) * C, rel_tol=1e-5)


def test_soft_distillation_equals_the_papers_code_line_for_line():
    """facebookresearch/deit losses.py:54-62, written out with torch: F.kl_div(log_softmax(s/T), log_softmax(t/T),
    reduction='sum', log_target=True) * T * T / s.numel()."""
    out, teacher, tau = outputs(), torch.randn(B, C), 3.0
    s = out.distillation_logits
    official = torch.nn.functional.kl_div(
        torch.log_softmax(s / tau, 1), torch.log_softmax(teacher / tau, 1), reduction="sum", log_target=True
    ) * (tau * tau) / s.numel()
    parts = DistillationLoss("soft", tau=tau)(out, torch.zeros(B, dtype=torch.long), teacher)
    torch.testing.assert_close(parts["distillation_loss"], official.detach())


def test_soft_distillation_of_identical_distributions_is_zero():
    out = outputs()
    parts = DistillationLoss("soft", tau=2.0)(out, torch.zeros(B, dtype=torch.long), out.distillation_logits.detach())
    assert abs(float(parts["distillation_loss"])) < 1e-6


def test_mixup_soft_targets_use_soft_target_cross_entropy():
    out = outputs()
    targets = torch.softmax(torch.randn(B, C), 1)  # rows sum to 1, as Mixup/CutMix make them
    teacher = torch.randn(B, C)
    loss = DistillationLoss("hard", alpha=0.5, label_smoothing=0.1)
    parts = loss(out, targets, teacher)
    expected = -(targets * torch.log_softmax(out.cls_logits, 1)).sum(1).mean()  # smoothing already in the targets
    torch.testing.assert_close(parts["base_loss"], expected.detach())
    torch.testing.assert_close(parts["base_loss"], SoftTargetCrossEntropy()(out.cls_logits, targets).detach())


def test_none_trains_both_heads_on_labels_like_the_models_own_loss():
    torch.manual_seed(0)
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_labels=C)
    model = DeiTForImageClassification(config).eval()
    pixels, labels = torch.randn(B, 3, 32, 32), torch.randint(0, C, (B,))
    out = model(pixels, labels=labels)
    parts = DistillationLoss("none", alpha=0.5)(out, labels)
    torch.testing.assert_close(parts["loss"], out.loss)
    torch.testing.assert_close(parts["distillation_loss"], direct_ce(out.distillation_logits, labels).detach())


def test_plain_deit_distils_through_its_single_head():
    out = outputs(distilled=False)
    labels, teacher = torch.randint(0, C, (B,)), torch.randn(B, C)
    parts = DistillationLoss("hard", alpha=0.5)(out, labels, teacher)
    expected = 0.5 * direct_ce(out.cls_logits, labels) + 0.5 * direct_ce(out.cls_logits, teacher.argmax(1))
    torch.testing.assert_close(parts["loss"], expected)
    none = DistillationLoss("none")(out, labels)
    assert none["distillation_loss"] is None
    torch.testing.assert_close(none["loss"], direct_ce(out.cls_logits, labels))


def test_gradients_reach_each_head_only_through_its_own_term():
    out = outputs()
    DistillationLoss("hard", alpha=1.0)(out, torch.randint(0, C, (B,)), torch.randn(B, C))["loss"].backward()
    assert out.cls_logits.grad is None or torch.all(out.cls_logits.grad == 0)
    assert out.distillation_logits.grad.abs().sum() > 0


def test_bf16_logits_are_computed_in_float32():
    out = outputs()
    labels, teacher = torch.randint(0, C, (B,)), torch.randn(B, C)
    low = DeiTImageClassificationOutput(
        cls_logits=out.cls_logits.detach().bfloat16(), distillation_logits=out.distillation_logits.detach().bfloat16()
    )
    parts = DistillationLoss("soft", tau=2.0)(low, labels, teacher.bfloat16())
    assert parts["loss"].dtype == torch.float32


def test_clear_errors():
    with pytest.raises(ValueError, match="distillation_type"):
        DistillationLoss("medium")
    with pytest.raises(ValueError, match="teacher_logits"):
        DistillationLoss("hard")(outputs(), torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="teacher must predict"):
        DistillationLoss("hard")(outputs(), torch.zeros(B, dtype=torch.long), torch.randn(B, C + 1))


@pytest.mark.parametrize("classes", [10, 1000])
def test_soft_target_cross_entropy_equals_the_formula_within_fp32_rounding(classes):
    """Soft targets go through F.cross_entropy's probability targets; the value is timm's SoftTargetCrossEntropy
    formula, mean_b sum_c -t_bc log_softmax(x)_bc, up to fp32 rounding (checked against float64)."""
    generator = torch.Generator().manual_seed(classes)
    logits = 8 * torch.randn(64, classes, generator=generator)  # peaked, like a trained head
    ids = torch.randint(0, classes, (2, 64), generator=generator)
    smooth = [F.one_hot(i, classes) * 0.9 + 0.1 / classes for i in ids]
    targets = 0.7 * smooth[0] + 0.3 * smooth[1]  # what Mixup (lambda 0.7) with label smoothing 0.1 gives
    ours = DistillationLoss("none").base_loss(logits, targets)
    exact = -(targets.double() * torch.log_softmax(logits.double(), 1)).sum(1).mean()
    formula_fp32 = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    assert ours.dtype == torch.float32
    assert abs(float(ours) - float(exact)) <= 4 * torch.finfo(torch.float32).eps * float(exact)
    assert abs(float(formula_fp32) - float(exact)) <= 4 * torch.finfo(torch.float32).eps * float(exact)
