"""Knowledge-distillation loss (Hinton et al. 2015) with an optional L1 weight penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``.

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-target ones
    when T changes (Hinton et al., section 2).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over conv/linear weights (as seen through masks and fake quant)."""
    terms = [m.weight.abs().sum() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return torch.stack(terms).sum() if terms else torch.zeros(())
