"""The brief distillation fine-tune every trial runs.

Batches stream from ``Data.train_batches``. Teacher logits come from a cache only when the
data are small, in memory and unaugmented (``Data.caches_teacher_logits``); otherwise the
teacher runs on the very batch the student sees, so augmented images get their own soft
targets and memory does not grow with the dataset. Masks and fake quantization live in
parametrizations, so pruned weights stay zero and quantized weights learn their grid
throughout.

On a GPU: the teacher sits on the GPU, forward passes run under autocast (bf16 where the GPU
has it, else fp16 with a gradient scaler), activations are channels-last, and batches arrive
pinned from DataLoader workers. The loss is read back every few steps, not every step, so the
GPU is never left waiting on the host.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from autocomp._device import amp_dtype, autocast, back_to_cpu, batch_to, to_device
from autocomp.errors import TrialFailed
from autocomp.methods.prune import ramp_masks
from autocomp.models.layers import COMPUTE_TYPES
from autocomp.plan import DistillPlan

ProgressFn = Callable[[int, int, float], None]  # (step, of steps, images per second)


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
def teacher_logits(teacher: nn.Module, x: torch.Tensor, device: str = "cpu", batch_size: int = 512,
                   progress: Callable | None = None) -> torch.Tensor:
    """Logits of ``teacher`` over in-memory inputs ``x`` (fp32), computed once and cached."""
    if device != "cpu":  # a copy: the caller's CPU teacher keeps its memory format
        teacher = to_device(copy.deepcopy(teacher), device)
    teacher.eval()
    task = progress("teacher logits", len(x)) if progress else None
    out = []
    for i in range(0, len(x), batch_size):
        out.append(teacher(batch_to(x[i : i + batch_size], device)).float().cpu())
        if task:
            task.update(len(out[-1]))
    if task:
        task.close()
    return torch.cat(out)


def distill_batches(data, batch_size: int, seed: int, device: str = "cpu",  # noqa: ANN001
                    teacher: nn.Module | None = None, soft_targets: torch.Tensor | None = None
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless ``(x, y, teacher_logits)`` on ``device``: cached logits by index, or the teacher run
    on the same (augmented) batch."""
    if soft_targets is None and teacher is None:
        raise ValueError("distill_batches needs the teacher or its cached logits")
    pin = device.startswith("cuda")
    for x, y, idx in data.train_batches(batch_size, seed, pin):
        x, y = batch_to(x, device), y.to(device, non_blocking=pin)
        if soft_targets is not None and idx is not None:
            t = soft_targets[idx].to(device, non_blocking=pin)
        else:
            with torch.no_grad(), autocast(device):
                t = teacher(x).float()
        yield x, y, t


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
    """``finetune_stream`` over in-memory tensors and their cached teacher logits, in a seeded order.

    Example::

        losses = finetune(student, x, y, teacher_logits(teacher, x), DistillPlan(steps=100))
    """
    from autocomp.data import TensorSplit

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for x, y, idx in TensorSplit(train_x, train_y).train_batches(settings.batch_size, seed):
            yield x.to(device), y.to(device), soft_targets[idx].to(device)

    return finetune_stream(student, batches(), settings, device, deadline, steps, on_step)


def finetune_stream(
    student: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    settings: DistillPlan,
    device: str = "cpu",
    deadline: float | None = None,
    steps: int | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
    on_progress: ProgressFn | None = None,
) -> list[float]:
    """Run ``settings.steps`` (or ``steps``) optimizer steps of KD over ``batches``; return the loss per step.

    ``batches`` yields ``(x, y, teacher_logits)`` on ``device`` (``distill_batches``). Raises
    ``TrialFailed`` when the loss is NaN/inf or ``deadline`` (``time.monotonic``) passes.
    ``on_step(step, student)`` runs after every step (early stopping raises from there);
    ``on_progress(step, steps, images_per_second)`` too.

    Example::

        losses = finetune_stream(student, distill_batches(data, 64, seed=0, teacher=teacher), DistillPlan(steps=100))
    """
    n_steps = settings.steps if steps is None else steps
    losses: list[float] = []
    if n_steps == 0:
        return losses
    to_device(student, device).train()
    opt = torch.optim.Adam(student.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    sync_every = 16 if device.startswith("cuda") else 1  # reading the loss back stalls a GPU
    ramp = ramp_masks(student, settings.sparsity_ramp, n_steps)  # a no-op without masks or a ramp
    pending: list[torch.Tensor] = []
    images, started = 0, time.perf_counter()
    for step in range(1, n_steps + 1):
        x, y, t = next(batches)
        with autocast(device):
            logits = student(x)
            loss = kd_loss(logits.float(), t, y, settings.temperature, settings.alpha)
            if settings.l1:
                loss = loss + settings.l1 * l1_penalty(student)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        ramp(step)
        pending.append(loss.detach())
        images += len(x)
        if step % sync_every == 0 or step == n_steps:
            _drain(pending, losses)
        if deadline is not None and time.monotonic() > deadline:
            _drain(pending, losses)
            raise TrialFailed(f"trial timed out during fine-tune (step {step} of {n_steps})")
        if on_progress is not None:
            on_progress(step, n_steps, images / max(1e-9, time.perf_counter() - started))
        if on_step is not None:
            on_step(step, student)
            student.train()
    back_to_cpu(student, device)
    return losses


def _drain(pending: list[torch.Tensor], losses: list[float]) -> None:
    for value in torch.stack(pending).float().cpu().tolist() if pending else []:
        if not math.isfinite(value):
            raise TrialFailed(f"fine-tune loss diverged ({value}) at step {len(losses)}")
        losses.append(value)
    pending.clear()
