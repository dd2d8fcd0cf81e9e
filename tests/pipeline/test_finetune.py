"""The fine-tune: distillation loss (KL on softened logits, T^2, alpha mix with CE), the L1 penalty, the
streamed loop (teacher on the fly, progress, failures) and the GPU path against the CPU one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from methods_kit import cnn, seeded

from autocomp.errors import TrialFailed
from autocomp.pipeline.compress import apply
from autocomp.pipeline.finetune import distill_batches, finetune, finetune_stream, kd_loss, l1_penalty, teacher_logits
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


def test_streamed_loop_with_the_teacher_on_the_fly_equals_cached_logits(tiny_data) -> None:
    teacher = seeded(cnn)
    soft = teacher_logits(teacher, tiny_data.train_x)
    settings = DistillPlan(steps=8, lr=1e-2, batch_size=32)
    runs = []
    for source in ({"teacher": teacher}, {"soft_targets": soft}):
        torch.manual_seed(0)
        student = apply(teacher, Plan(layers={"3": LayerPlan(sparsity=0.5, bits=4)}), tiny_data.train_x[:1])
        runs.append(finetune_stream(student, distill_batches(tiny_data, 32, seed=0, **source), settings))
    legacy = finetune(apply(teacher, Plan(layers={"3": LayerPlan(sparsity=0.5, bits=4)}), tiny_data.train_x[:1]),
                      tiny_data.train_x, tiny_data.train_y, soft, settings)
    assert runs[0] == pytest.approx(runs[1], rel=1e-4) and runs[1] == pytest.approx(legacy, rel=1e-6)


def test_progress_reports_every_step_and_images_per_second(tiny_data) -> None:
    teacher = seeded(cnn)
    seen = []
    finetune_stream(apply(teacher, Plan(), tiny_data.train_x[:1]), distill_batches(tiny_data, 16, 0, teacher=teacher),
                    DistillPlan(steps=5, batch_size=16), on_progress=lambda *a: seen.append(a))
    assert [s[:2] for s in seen] == [(i, 5) for i in range(1, 6)] and all(s[2] > 0 for s in seen)


def test_a_diverging_loss_fails_the_trial_with_its_step(tiny_data) -> None:
    teacher = seeded(cnn)
    bad = iter([(tiny_data.train_x[:8], tiny_data.train_y[:8], torch.full((8, 10), float("nan")))] * 3)
    with pytest.raises(TrialFailed, match="diverged .* at step 0"):
        finetune_stream(apply(teacher, Plan(), tiny_data.train_x[:1]), bad, DistillPlan(steps=3, batch_size=8))


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA GPU here: the GPU fine-tune (autocast, channels-last, teacher on the GPU) "
                    "is not exercised; this compares it with the CPU loop where a GPU exists")
def test_a_few_gpu_steps_behave_like_the_cpu_ones(tiny_data) -> None:
    from autocomp.methods.quantize import qmax

    teacher = seeded(cnn)
    plan = Plan(layers={"3": LayerPlan(sparsity=0.5, bits=4), "7": LayerPlan(sparsity=0.3)})
    settings = DistillPlan(steps=6, lr=1e-3, batch_size=32)
    students, losses = {}, {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        student = apply(teacher, plan, tiny_data.train_x[:1])
        dev_teacher = seeded(cnn).to(device) if device == "cuda" else teacher
        losses[device] = finetune_stream(student, distill_batches(tiny_data, 32, 0, device, teacher=dev_teacher),
                                         settings, device=device)
        students[device] = student
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=0.05)  # bf16/fp16 autocast, same batches
    for device, student in students.items():
        assert next(student.parameters()).device.type == "cpu"  # handed back on the CPU, as on CPU runs
        with torch.no_grad():
            w3, w7 = student[3].weight, student[7].weight
            assert int((w3 == 0).sum()) >= w3.numel() // 2 and int((w7 == 0).sum()) >= int(0.3 * w7.numel())
            assert max(len(torch.unique(ch)) for ch in w3) <= 2 * qmax(4) + 1, device  # on the 4-bit grid
    with torch.no_grad():
        x = tiny_data.val_x
        assert torch.allclose(students["cuda"](x), students["cpu"](x), atol=0.05, rtol=0.05)
