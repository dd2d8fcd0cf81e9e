"""The brief distillation fine-tune every trial runs.

Teacher logits are computed once per study (the data pipeline is deterministic: no
augmentation), so a trial costs only the student's forward and backward passes. Masks and
fake quantization live in parametrizations, so pruned weights stay zero and quantized
weights learn their grid throughout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from autocomp.errors import TrialFailed
from autocomp.layers import COMPUTE_TYPES
from autocomp.plan import DistillPlan


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, targets)``
    (Hinton et al. 2015).

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
    terms = [m.weight.abs().sum() for m in model.modules() if isinstance(m, COMPUTE_TYPES)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, device: str = "cpu", batch_size: int = 512) -> torch.Tensor:
    teacher = teacher.to(device).eval()
    out = [teacher(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    teacher.cpu()
    return torch.cat(out)


def finetune(
    student: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    soft_targets: torch.Tensor,
    settings: DistillPlan,
    seed: int = 0,
    device: str = "cpu",
    deadline: float | None = None,
    steps: int | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> list[float]:
    """Run ``settings.steps`` (or ``steps``) optimizer steps of KD; return the loss per step.

    Raises ``TrialFailed`` when the loss is NaN/inf or ``deadline`` (``time.monotonic``) passes.
    ``on_step(step, student)`` runs after every step (early stopping raises from there).
    """
    n_steps = settings.steps if steps is None else steps
    losses: list[float] = []
    if n_steps == 0:
        return losses
    student.to(device).train()
    opt = torch.optim.Adam(student.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_x), generator=gen)
    cursor = 0
    for _ in range(n_steps):
        if cursor + settings.batch_size > len(order):
            order, cursor = torch.randperm(len(train_x), generator=gen), 0
        idx = order[cursor : cursor + settings.batch_size]
        cursor += settings.batch_size
        logits = student(train_x[idx].to(device))
        loss = kd_loss(logits, soft_targets[idx].to(device), train_y[idx].to(device),
                       settings.temperature, settings.alpha)
        if settings.l1:
            loss = loss + settings.l1 * l1_penalty(student)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrialFailed(f"fine-tune loss diverged ({value}) at step {len(losses)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(value)
        if deadline is not None and time.monotonic() > deadline:
            raise TrialFailed(f"trial timed out during fine-tune (step {len(losses)} of {n_steps})")
        if on_step is not None:
            on_step(len(losses), student)
            student.train()
    student.cpu().eval()
    return losses
