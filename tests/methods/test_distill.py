"""Distillation loss (KL on softened logits, T^2, alpha mix with CE) and the L1 penalty."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from methods_kit import cnn, seeded

from autocomp.compress import apply
from autocomp.finetune import finetune, kd_loss, l1_penalty, teacher_logits
from autocomp.plan import DistillPlan, LayerPlan, Plan


def _logits(seed: int = 0, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(16, 10, generator=g) * scale, torch.randn(16, 10, generator=g) * scale,
            torch.randint(0, 10, (16,), generator=g))


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_loss_is_t_squared_kl_mixed_with_ce(t: float) -> None:
    s, te, y = _logits()
    p_t = torch.softmax(te / t, dim=1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / t, dim=1))).sum(dim=1).mean()
    ce = F.cross_entropy(s, y)
    assert float(kd_loss(s, te, y, t, 1.0)) == pytest.approx(float(t * t * kl), rel=1e-5)
    assert float(kd_loss(s, te, y, t, 0.0)) == pytest.approx(float(ce), rel=1e-6)
    assert float(kd_loss(s, te, y, t, 0.3)) == pytest.approx(float(0.3 * t * t * kl + 0.7 * ce), rel=1e-5)
    assert float(kd_loss(te, te, y, t, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_t_squared_keeps_soft_gradients_on_one_scale() -> None:
    s, te, y = _logits(scale=0.5)
    norms = []
    for t in (10.0, 20.0):
        z = s.clone().requires_grad_(True)
        kd_loss(z, te, y, t, 1.0).backward()
        norms.append(float(z.grad.norm()))
    # Without T^2 the gradient would shrink 4x from T=10 to T=20; with it, it stays put.
    assert norms[1] == pytest.approx(norms[0], rel=0.05)


def test_l1_penalty_sees_weights_through_masks() -> None:
    teacher = seeded(cnn)
    student = apply(teacher, Plan(layers={"3": LayerPlan(sparsity=0.5)}), torch.randn(1, 1, 8, 8))
    with torch.no_grad():
        dense = sum(m.weight.abs().sum() for m in (teacher[0], teacher[3], teacher[7], teacher[9]))
        masked = student[3].weight.abs().sum()
        expected = dense - teacher[3].weight.abs().sum() + masked
        assert float(l1_penalty(student)) == pytest.approx(float(expected), rel=1e-5)
        assert float(masked) < float(teacher[3].weight.abs().sum())


def test_l1_term_shrinks_weights_during_fine_tuning(tiny_data) -> None:
    teacher = seeded(cnn)
    x, y = tiny_data.train_x, tiny_data.train_y
    soft = teacher_logits(teacher, x)
    norms = {}
    for lam in (0.0, 1e-2):
        student = apply(teacher, Plan(), x[:1])
        finetune(student, x, y, soft, DistillPlan(steps=10, lr=1e-2, batch_size=32, l1=lam))
        with torch.no_grad():
            norms[lam] = float(l1_penalty(student))
    assert norms[1e-2] < 0.8 * norms[0.0]
