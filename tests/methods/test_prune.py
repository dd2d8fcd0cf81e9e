"""Unstructured magnitude pruning: exact per-layer sparsity, kept through or ramped along fine-tuning, stored sparse."""

from __future__ import annotations

import pytest
import torch
from methods_kit import cnn, seeded
from tiny_models import wide_mlp
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.prune import MagnitudePruneConfig, WeightMask, magnitude_mask, ramp_masks
from autocomp.pipeline.compress import apply
from autocomp.pipeline.finetune import finetune, teacher_logits
from autocomp.plan import DistillPlan, LayerPlan, Plan


def test_config_accepts_0_to_098_and_rejects_1() -> None:
    MagnitudePruneConfig(0.0)
    MagnitudePruneConfig(0.98)
    for bad in (-0.1, 1.0):
        with pytest.raises(AutocompError):
            MagnitudePruneConfig(bad)


def test_mask_zeroes_exactly_the_smallest_weights() -> None:
    w = torch.tensor([[0.5, -0.1, 2.0], [0.0, -3.0, 0.2]])
    mask = magnitude_mask(w, 0.5)
    assert mask.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    ties = torch.ones(10, 10)  # equal magnitudes: the count still holds
    assert int((magnitude_mask(ties, 0.37) == 0).sum()) == 37


SPARSITY = {"0": 0.5, "3": 0.9, "7": 0.98, "9": 0.0}


def _zeros_by_shape(exported_weights: dict, teacher: nn.Module) -> dict[str, int]:
    """Zeros in each exported weight, found by its shape (BatchNorm folding keeps zeros zero)."""
    by_shape = {tuple(m.weight.shape): name for name, m in teacher.named_modules() if hasattr(m, "weight")
                and isinstance(m, (nn.Conv2d, nn.Linear))}
    out = {}
    for arr in exported_weights.values():
        for shape in (arr.shape, arr.shape[::-1]):  # bias-free linears are stored transposed
            if shape in by_shape and arr.ndim >= 2:
                out[by_shape[shape]] = int((arr == 0).sum())
    return out


def test_masks_hold_through_fine_tuning_and_export(exporter, tiny_data) -> None:
    teacher = seeded(cnn)
    x = tiny_data.train_x
    plan = Plan(layers={k: LayerPlan(sparsity=s) for k, s in SPARSITY.items()})
    student = apply(teacher, plan, x[:1])
    soft = teacher_logits(teacher, x)
    losses = finetune(student, x, tiny_data.train_y, soft, DistillPlan(steps=15, lr=1e-2, batch_size=32))
    assert losses[-1] < losses[0]  # it did train
    moved = student[3].parametrizations.weight.original - teacher[3].weight
    assert moved.abs().max() > 1e-3
    out = exporter(student, tiny_data.val_x)
    zeros = _zeros_by_shape(out.weights(), teacher)
    for name, s in SPARSITY.items():
        numel = teacher.get_submodule(name).weight.numel()
        assert zeros[name] == int(round(s * numel)), name
    assert out.params - out.nonzero == sum(zeros.values())


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_artifact_bytes_fall_as_the_sparsity_implies(exporter, sparsity: float) -> None:
    teacher = wide_mlp()
    x = torch.randn(8, 1, 8, 8)
    dense = exporter(apply(teacher, Plan(), x[:1]), x, name="dense")
    layers = {"1": LayerPlan(sparsity=sparsity), "3": LayerPlan(sparsity=sparsity), "5": LayerPlan(sparsity=sparsity)}
    sparse = exporter(apply(teacher, Plan(layers=layers), x[:1]), x, name="sparse")
    # Sparse storage: a 1-bit mask per weight plus the surviving float32 values.
    implied = 1 / 32 + (1 - sparsity)
    assert abs(sparse.bytes / dense.bytes - implied) < 0.03
    assert sparse.nonzero == sparse.params - sum(int(round(sparsity * n)) for n in (64 * 256, 256 * 256, 256 * 10))
    assert sparse.macs == dense.macs  # unstructured zeros are stored, not skipped: MACs stay


def test_sparse_and_quantized_weights_keep_their_zeros(exporter) -> None:
    teacher = wide_mlp()
    x = torch.randn(8, 1, 8, 8)
    layers = {"3": LayerPlan(sparsity=0.8, bits=4)}
    out = exporter(apply(teacher, Plan(layers=layers), x[:1]), x)
    (name,) = out.info.packed_tensors
    codes = out.weights()[name]
    assert int((codes == 0).sum()) >= int(round(0.8 * codes.size))
    assert abs(int(codes.max())) <= 7 and abs(int(codes.min())) <= 7


def _zeros(mask: WeightMask) -> set[int]:
    return set(torch.nonzero(mask.mask.flatten() == 0).flatten().tolist())


def test_a_ramp_raises_each_mask_along_a_cubic_to_exactly_the_plans_zeros() -> None:
    torch.manual_seed(0)
    student = apply(nn.Sequential(nn.Linear(20, 30)), Plan(layers={"0": LayerPlan(sparsity=0.8)}), torch.zeros(1, 20))
    (mask,) = [m for m in student.modules() if isinstance(m, WeightMask)]
    assert len(_zeros(mask)) == 480  # 0.8 of 600 weights, from the start without a ramp
    ramp = ramp_masks(student, 0.5, 40)  # full sparsity from step 20, updated every step
    assert not _zeros(mask)  # emptied at step 0
    ramp(5)
    early = _zeros(mask)
    ramp(10)
    middle = _zeros(mask)
    assert len(early) == int(480 * (1 - 0.75 ** 3)) and len(middle) == int(480 * (1 - 0.5 ** 3))
    assert early < middle  # a mask only grows
    with torch.no_grad():  # the weights move: the ramp prunes by the magnitudes they have now
        student[0].parametrizations.weight.original.copy_(torch.arange(600.0).reshape(30, 20))
    ramp(20)
    final = _zeros(mask)
    assert len(final) == 480
    assert final == middle | set(sorted(set(range(600)) - middle)[:480 - len(middle)])  # the now-smallest
    ramp(30)
    assert _zeros(mask) == final  # past the ramp, nothing changes


def test_no_ramp_without_a_share_or_steps() -> None:
    pruned = apply(nn.Sequential(nn.Linear(4, 4)), Plan(layers={"0": LayerPlan(sparsity=0.5)}), torch.zeros(1, 4))
    (mask,) = [m for m in pruned.modules() if isinstance(m, WeightMask)]
    before = _zeros(mask)
    for share, steps in ((0.0, 100), (0.5, 0)):
        ramp = ramp_masks(pruned, share, steps)
        ramp(1)
        assert _zeros(mask) == before and len(before) == 8  # full sparsity from the first step
    ramp_masks(nn.Sequential(nn.Linear(4, 4)), 0.5, 100)(1)  # no mask: nothing to ramp, no error


def test_a_ramped_fine_tune_ends_at_the_plans_sparsity(tiny_data) -> None:
    teacher = seeded(cnn)
    x = tiny_data.train_x
    student = apply(teacher, Plan(layers={k: LayerPlan(sparsity=s) for k, s in SPARSITY.items()}), x[:1])
    masks = {name: m for name, m in student.named_modules() if isinstance(m, WeightMask)}
    seen: list[int] = []
    settings = DistillPlan(steps=20, lr=1e-2, batch_size=32, sparsity_ramp=0.5)
    finetune(student, x, tiny_data.train_y, teacher_logits(teacher, x), settings,
             on_step=lambda step, _: seen.append(sum(len(_zeros(m)) for m in masks.values())))
    target = sum(int(round(s * teacher.get_submodule(k).weight.numel())) for k, s in SPARSITY.items())
    assert seen[0] < seen[4] < seen[9] == target == seen[-1]  # the ramp ends at step 10 of 20
    assert seen == sorted(seen)
