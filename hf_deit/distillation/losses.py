"""DistillationLoss: the DeiT objective (Touvron et al. 2021, eq. 2 and 3). The loss computes; the trainer routes.

    total = (1 - alpha) * base + alpha * distillation

base: cross-entropy of the cls head against the labels. Labels are class ids (batch,) -> label-smoothed CE, or
    soft targets (batch, classes) from Mixup/CutMix (which already fold label smoothing in) -> soft-target CE,
    sum_c -target_c * log_softmax(logits)_c averaged over the batch (timm's SoftTargetCrossEntropy; torch's
    `F.cross_entropy` with probability targets).
distillation, on the distillation head (the cls head for plain DeiT, which has only one):
    "hard": CE against the teacher's argmax, no label smoothing (as the paper's code).
    "soft": tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), summed over classes and elements and
        divided by `kl_reduction`'s count: "numel" (default) divides by batch * classes as the paper's code does
        (losses.py: `reduction='sum' ... / outputs_kd.numel()`, "to have the legacy PyTorch behavior"), which is
        what its soft-distillation results were trained with; "batchmean" divides by the batch only, the KL's
        definition and timm's distillation task, `classes` times stronger (1000x on ImageNet, 10x on CIFAR-10).
        The default reproduces the paper; with "batchmean" the same alpha weighs the soft term far more. tau^2
        keeps the soft term's gradient scale independent of tau (Hinton et al. 2015).
    "none": no teacher. A distilled student's distillation head learns the labels with the same base CE, so the
        fused prediction stays meaningful (alpha = 0.5 gives DeiTForImageClassification's own loss: the mean of the
        two heads' CE). A plain student: base loss only.

All losses are computed in float32 whatever the autocast dtype: log_softmax over 1000 classes in bf16 loses
about 3 significant digits, and the loss parts are what we log.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.modeling_deit import DeiTImageClassificationOutput

DISTILLATION_TYPES = ("none", "soft", "hard")
KL_REDUCTIONS = ("numel", "batchmean")  # the paper's code; the KL's definition (see the module docstring)


class DistillationLoss(nn.Module):
    """Base + distillation loss for DeiT; see the module docstring for the formulas and the averaging.

    Args:
        distillation_type: "none", "soft" or "hard".
        alpha: weight of the distillation term, in [0, 1].
        tau: softmax temperature of the soft distillation (> 0; unused by "hard" and "none").
        label_smoothing: applied to the base CE when labels are class ids (soft targets carry their own).
        kl_reduction: "numel" (the paper's code) or "batchmean": what the soft term's summed KL is divided by.

    `forward(student_output, labels, teacher_logits=None)` returns a dict: `loss` (the total, what is
    back-propagated), `base_loss` and `distillation_loss` (detached parts for logging; `distillation_loss` is None
    for a plain student without a teacher).
    """

    def __init__(
        self, distillation_type: str = "hard", alpha: float = 0.5, tau: float = 1.0, label_smoothing: float = 0.0,
        kl_reduction: str = "numel",
    ) -> None:
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation_type={distillation_type!r}: use one of {DISTILLATION_TYPES}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1].")
        if tau <= 0:
            raise ValueError(f"tau={tau} must be > 0.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1).")
        if kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction={kl_reduction!r}: use one of {KL_REDUCTIONS}.")
        self.distillation_type = distillation_type
        self.kl_reduction = kl_reduction
        self.alpha = alpha
        self.tau = tau
        self.label_smoothing = label_smoothing

    def base_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if labels.is_floating_point():  # soft targets (batch, classes) from Mixup/CutMix: smoothing already in them
            return F.cross_entropy(logits, labels.float())
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def distillation_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
        if self.distillation_type == "hard":
            return F.cross_entropy(student_logits, teacher_logits.argmax(dim=-1))
        tau = self.tau
        kl = F.kl_div(
            F.log_softmax(student_logits / tau, dim=-1),
            F.log_softmax(teacher_logits / tau, dim=-1),
            reduction="sum",
            log_target=True,
        )
        # / (batch x classes) as the paper's code, or / batch (see the module docstring)
        count = student_logits.numel() if self.kl_reduction == "numel" else student_logits.shape[0]
        return kl * tau * tau / count

    def forward(
        self,
        student_output: DeiTImageClassificationOutput,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        cls_logits = student_output.cls_logits
        if cls_logits is None:  # any model returning only `logits` (e.g. a transformers ViT) is a one-head student
            cls_logits = student_output.logits
        # Plain DeiT distils through its single head, as the paper's code does for models without a dist token.
        distillation_logits = student_output.distillation_logits
        if distillation_logits is None:
            distillation_logits = cls_logits
        labels = labels.to(cls_logits.device)
        base = self.base_loss(cls_logits, labels)

        if self.distillation_type == "none":
            if student_output.distillation_logits is None:
                return {"loss": base, "base_loss": base.detach(), "distillation_loss": None}
            distill = self.base_loss(distillation_logits, labels)
        else:
            if teacher_logits is None:
                raise ValueError(
                    f"distillation_type={self.distillation_type!r} needs teacher_logits; pass the teacher's logits "
                    "for this batch or use distillation_type='none'."
                )
            if teacher_logits.shape != distillation_logits.shape:
                raise ValueError(
                    f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                    f"{tuple(distillation_logits.shape)} differ: the teacher must predict the student's classes."
                )
            distill = self.distillation_loss(distillation_logits, teacher_logits.to(distillation_logits.device))
        total = (1.0 - self.alpha) * base + self.alpha * distill
        return {"loss": total, "base_loss": base.detach(), "distillation_loss": distill.detach()}

    def extra_repr(self) -> str:
        return (
            f"type={self.distillation_type}, alpha={self.alpha}, tau={self.tau}, smoothing={self.label_smoothing}, "
            f"kl_reduction={self.kl_reduction}"
        )


__all__ = ["DistillationLoss", "DISTILLATION_TYPES", "KL_REDUCTIONS"]
