"""Issue 16's acceptance runs on real data: searches on torchvision's vit_b_16 (at 32 px,
image_size=32), swin_t (32 px), maxvit_t (224 px, the smallest it takes: its 7x7 partitions
need 224) and a user's ViT built on nn.TransformerEncoderLayer. Trials complete with pruning,
low rank and int8 on the attention and MLP projections, every quantized MatMul/Gemm runs on an
int8 kernel in the graph ONNX Runtime executes, and the user's ViT's exported file scores in
ONNX Runtime what its card says. Small data, one-epoch teachers and three fine-tune steps keep
each affordable on 2 cores (the big models' widths are fixed by torchvision's builders)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
from executed_graph import executed_graph

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.export.trial import export_trial
from autocomp.methods.lowrank import LowRankPair
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.pipeline.setup import prepare
from autocomp.plan import Plan

MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
TESTS = Path(__file__).resolve().parents[1]

# Every projection gets all four methods (the output layer keeps its classes: no channel cut).
SPACE = """version: 1
layers:
  - type: Conv2d
    bits: [8]
  - type: Linear
    sparsity: 0.3
    channel_ratio: 0.25
    rank: 0.25
    bits: [8]
global:
  steps: 3
  batch_size: 8
  lr: 0.0001
"""

USER_VIT = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from tiny_models import TinyViT


def build(num_classes=10):
    return TinyViT(num_classes, in_channels=3, image_size=32, patch=8, dim=32, depth=2, heads=4, mlp=64)
"""

CASES = {  # model, kwargs, image size, train / val samples, attention and MLP projections by name
    # maxvit_t's teacher stays untrained: one epoch at 224 px in batches of 64 took 19 GB and was
    # killed; its run then also shows the near-chance warning.
    "user_vit": ("{tmp}/my_vit.py:build", None, 32, 512, 128,
                 r"encoder\.layers\.\d\.(self_attn\.(q|k|v|out)_proj|linear[12])"),
    "vit_b_16": ("torchvision:vit_b_16", {"image_size": 32}, 32, 256, 128,
                 r"encoder\.layers\.encoder_layer_\d+\.(self_attention\.(q|k|v|out)_proj|mlp\.[03])"),
    "swin_t": ("torchvision:swin_t", None, 32, 256, 128, r"features\.\d\.\d\.(attn\.(qkv|proj)|mlp\.[03])"),
    "maxvit_t": ("torchvision:maxvit_t", None, 224, 32, 32,
                 r"blocks\.\d\.layers\.\d\.layers\.(window|grid)_attention\.(attn_layer\.1\.(to_qkv|merge)|mlp_layer\.[13])"),
}


def _accuracy(session: ort.InferenceSession, x: np.ndarray, y: np.ndarray) -> float:
    hits = sum(int((session.run(None, {"input": x[i:i + 16]})[0].argmax(1) == y[i:i + 16]).sum())
               for i in range(0, len(x), 16))
    return 100.0 * hits / len(x)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_transformer_search_and_export(case: str, tmp_path: Path) -> None:
    if not (MNIST / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found at {MNIST}")
    spec, kwargs, size, n_train, n_val, projections = CASES[case]
    (tmp_path / "my_vit.py").write_text(USER_VIT)
    (tmp_path / "space.yaml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = SearchConfig(model=spec.format(tmp=tmp_path), model_kwargs=kwargs, dataset="mnist",
                          data_dir=str(MNIST), image_size=size, channels=3, train_samples=n_train,
                          val_samples=n_val, teacher_epochs=0 if case == "maxvit_t" else 1,
                          space=str(tmp_path / "space.yaml"), n_trials=2,
                          baselines=("int8",), storage=storage, study_name="t", run_dir=str(tmp_path / "run"),
                          allow_empty_space=True)  # every knob fixed on purpose: both trials compress it all
    lines: list[str] = []
    study = run_search(config, progress=False, log=lines.append)
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in study.trials}
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2, reasons
    trial = study.trials[1]  # the searched (here: fixed) plan; trial 0 is the int8 baseline
    plan = Plan.from_dict(trial.user_attrs["plan"])

    # Pruning, low rank and int8 on the attention and MLP projections: in the plan and in the student.
    teacher, data = prepare(config, log=lambda s: None)
    names = [n for n in compute_layers(teacher) if re.fullmatch(projections, n)]
    assert len(names) >= 4, list(compute_layers(teacher))[:20]
    for name in names:
        lp = plan.layers[name]
        assert (lp.rank, lp.sparsity, lp.channel_ratio, lp.bits) == (0.25, 0.3, 0.25, 8), name
    student = apply(teacher, plan, data.train_x[:1])
    pairs = [n for n in names if isinstance(student.get_submodule(n), LowRankPair)]
    assert len(pairs) >= len(names) // 2, pairs  # a pair that would not cut MACs is left whole
    # (a pair's weight is the product of its factors: the layer's output channels either way)
    narrowed = [n for n in names if student.get_submodule(n).weight.shape[0] < teacher.get_submodule(n).weight.shape[0]]
    assert any("mlp" in n or "linear1" in n for n in narrowed), narrowed  # MLP hidden channels cut
    if case in ("user_vit", "vit_b_16"):  # head dims cut, consistently in every head
        assert any("q_proj" in n for n in narrowed) and any("v_proj" in n for n in narrowed), narrowed

    # Every quantized MatMul/Gemm/Conv runs on an int8 kernel in the graph ORT executes.
    for t in study.trials:
        run = executed_graph(t.user_attrs["artifact"], tmp_path / f"executed_{t.number}.onnx")
        assert run.float_compute_int8_weight == [] and run.float_compute_with_weight == 0, t.number
        assert run.int8_compute >= len(compute_layers(teacher)), (t.number, run.ops)
    sparse = [w for w in _int8_weights(trial.user_attrs["artifact"]) if w.ndim == 2]  # the Linears (convs: no mask)
    assert np.mean([float((w == 0).mean()) for w in sparse]) >= 0.25  # unstructured masks survive export

    # The exported file runs in ONNX Runtime with its card's accuracy on the whole validation split,
    # and the study's on the search's subset: on the user's ViT. The torchvision models' files take
    # the same path (the export rebuilds the trial and measures the teacher and the file over the
    # whole split), which took 2.4 of vit_b_16's 4.6 minutes here and 4.9 of swin_t's 6.2; maxvit_t's
    # 10,000 images at 224 px would take this 2-core machine most of an hour.
    if case == "user_vit":
        out = tmp_path / "trial.onnx"
        export_trial(storage, "t", trial.number, str(out), fmt="onnx")
        card = json.loads(Path(f"{out}.card.json").read_text())
        assert card["accuracy"]["final_on_search_subset"]["value"] == pytest.approx(
            card["measured_in_study"]["accuracy"], abs=1e-9)
        _, whole = prepare(replace(config, val_samples=None), log=lambda s: None)
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = _accuracy(session, whole.val_x.numpy(), whole.val_y.numpy())
        assert got == pytest.approx(card["measured_now"]["accuracy"], abs=1e-9)
    assert any(line.startswith("2 trials in study 't': 2 complete") for line in lines), lines
    if case == "maxvit_t":
        assert any(line.startswith("warning: the teacher scores") and "near chance" in line for line in lines)


def _int8_weights(path: str) -> list[np.ndarray]:
    from onnx import numpy_helper

    from autocomp.artifact import load_model

    return [numpy_helper.to_array(i) for i in load_model(path).graph.initializer if i.data_type == 3]  # INT8


def test_cases_name_layers_the_models_have() -> None:
    """The projection patterns above match real layer names (checked cheaply on the user ViT)."""
    from tiny_models import TinyViT

    from autocomp.models.adapters.attention import explicit_attention

    model = TinyViT(depth=2)
    explicit_attention(model)
    hits = [n for n in compute_layers(model) if re.fullmatch(CASES["user_vit"][5], n)]
    assert len(hits) == 12 and torch.is_tensor(model.encoder.layers[0].self_attn.q_proj.weight)
