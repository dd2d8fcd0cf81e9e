"""Tucker-2 and CP: faithful at full rank, worse as the rank falls, refused per layer when poor,
spelled as words of the rank knob, and carried through fine-tune, ONNX, int8 and export."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods import _chain
from autocomp.methods.cp import CPConfig, CPConv, cp, max_rank
from autocomp.methods.lowrank import LowRankConfig, decomposition
from autocomp.methods.tucker import Tucker2Config, Tucker2Conv, tucker2
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan
from autocomp.study.costs import costed_space
from autocomp.study.space import Domain, parse_space

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from executed_graph import executed_graph  # noqa: E402

GEOMETRIES = [dict(), dict(stride=2, padding=1), dict(padding=2, dilation=2), dict(stride=(1, 2), padding=(1, 0))]


@pytest.fixture(autouse=True)
def _fresh_cache():
    _chain._CACHE.clear()
    yield
    _chain._CACHE.clear()


def _conv(cin: int = 6, cout: int = 8, **kw) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 3, **kw).eval()


def _low_cp_rank_conv(rank: int, **kw) -> nn.Conv2d:
    """A conv whose kernel is an exact sum of ``rank`` rank-one tensors."""
    layer = _conv(**kw)
    g = torch.Generator().manual_seed(1)
    factors = [torch.randn(n, rank, generator=g) for n in (8, 6, 3, 3)]
    with torch.no_grad():
        layer.weight.copy_(torch.einsum("or,ir,hr,wr->oihw", *factors))
    return layer


def _output_error(layer: nn.Module, chain: nn.Module) -> float:
    x = torch.randn(4, layer.in_channels, 13, 11)
    with torch.no_grad():
        want, got = layer(x), chain(x)
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_tucker2_at_full_rank_reproduces_the_conv_and_its_weight_is_what_the_chain_computes(geometry) -> None:
    layer = _conv(**geometry)
    outcome = tucker2(layer, layer.in_channels, layer.out_channels)
    assert isinstance(outcome.chain, Tucker2Conv) and not outcome.refused
    assert outcome.error < 1e-5 and _output_error(layer, outcome.chain) < 1e-5
    shapes = [tuple(c.weight.shape) for c in outcome.chain]
    assert shapes == [(6, 6, 1, 1), (8, 6, 3, 3), (8, 8, 1, 1)]
    half = tucker2(layer, 3, 4).chain
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():  # the dense weight runs as the chain does (stride, padding and dilation on the core)
        dense = F.conv2d(x, half.weight, half.bias, layer.stride, layer.padding, layer.dilation)
        assert torch.allclose(dense, half(x), atol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_cp_at_the_kernels_rank_reproduces_the_conv_with_two_depthwise_convs(geometry) -> None:
    layer = _low_cp_rank_conv(5, **geometry)
    outcome = cp(layer, 5)
    assert isinstance(outcome.chain, CPConv) and not outcome.refused
    assert outcome.error < 1e-3 and _output_error(layer, outcome.chain) < 1e-3
    first, down, across, last = outcome.chain
    assert (down.groups, across.groups) == (5, 5) and down.kernel_size == (3, 1) and across.kernel_size == (1, 3)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        dense = F.conv2d(x, outcome.chain.weight, outcome.chain.bias, layer.stride, layer.padding, layer.dilation)
        assert torch.allclose(dense, outcome.chain(x), atol=1e-4)


def test_the_error_grows_as_the_rank_falls() -> None:
    layer = _conv(16, 16, padding=1)
    tucker = [tucker2(layer, r, r).error for r in (16, 12, 8, 4, 2)]
    cps = [cp(layer, r).error for r in (60, 30, 15, 5)]
    assert tucker[0] < 1e-5 and all(a < b for a, b in zip(tucker, tucker[1:], strict=False)), tucker
    assert all(a < b for a, b in zip(cps, cps[1:], strict=False)), cps


def test_a_poor_decomposition_is_refused_for_that_layer_only_with_its_reason(monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    x = torch.randn(1, 3, 8, 8)
    plan = Plan(layers={"0": LayerPlan(rank="cp:0.25"), "2": LayerPlan(rank="tucker2:0.5")})
    monkeypatch.setattr(_chain, "MAX_ERROR", 0.0)  # nothing is faithful enough
    notes: dict = {}
    student = apply(model, plan, x, notes)
    assert type(student[0]) is nn.Conv2d and type(student[2]) is nn.Conv2d  # left as they were
    assert notes["0"]["refused"].startswith("relative reconstruction error") and notes["0"]["method"] == "cp:0.25"
    assert notes["2"]["refused"].startswith("relative reconstruction error")
    monkeypatch.setattr(_chain, "MAX_ERROR", 0.95)
    _chain._CACHE.clear()

    def diverge(*args, **kwargs):
        raise FloatingPointError("ALS blew up")

    monkeypatch.setattr("tensorly.decomposition.parafac", diverge)
    notes = {}
    student = apply(model, plan, x, notes)
    assert type(student[0]) is nn.Conv2d
    assert notes["0"]["refused"] == "did not converge: FloatingPointError: ALS blew up"
    assert isinstance(student[2], Tucker2Conv) and "refused" not in notes["2"] and notes["2"]["error"] < 0.95


def test_rank_words_parse_validate_and_spell_one_way() -> None:
    assert decomposition("tucker2:0.5") == Tucker2Config(0.5, 0.5)
    assert decomposition("tucker2:0.25:0.5") == Tucker2Config(0.25, 0.5)
    assert decomposition("cp:0.25") == CPConfig(0.25)
    assert LowRankConfig.from_value(0.5) == LowRankConfig(0.5)
    assert Tucker2Config(0.5, 0.5).value == "tucker2:0.5" and Tucker2Config(0.25, 0.5).value == "tucker2:0.25:0.5"
    for bad in ("cp:2", "cp:0", "cp:nan", "cp", "cp:0.1:0.2", "svd:0.5", "tucker2:a", "tucker2:0.1:0.2:0.3", "foo"):
        with pytest.raises(AutocompError):
            decomposition(bad)
    space = parse_space("version: 1\nlayers:\n  - type: Conv2d\n    rank: [1.0, 0.5, tucker2:0.50, cp:0.25]\n")
    assert space.rules[0].knobs["rank"] == Domain(choices=(1.0, 0.5, "tucker2:0.5", "cp:0.25"))
    with pytest.raises(AutocompError, match=r"layers\[0\].rank\[1\]: cp rank must be a fraction in \(0, 1\]"):
        parse_space("version: 1\nlayers:\n  - type: Conv2d\n    rank: [1.0, cp:1.5]\n")
    with pytest.raises(AutocompError, match="choices repeat a value"):
        parse_space("version: 1\nlayers:\n  - type: Conv2d\n    rank: [tucker2:0.5, tucker2:0.5:0.5]\n")


def test_cp_rank_is_a_share_of_the_rank_at_which_it_costs_the_layers_macs() -> None:
    layer = _conv(64, 64, padding=1)
    assert max_rank(layer) == pytest.approx(64 * 64 * 9 / (64 + 64 + 6))
    assert CPConfig(0.25).kept(layer) == round(0.25 * max_rank(layer))
    assert CPConfig(1.0).kept(layer) is None  # costs the layer's MACs: left alone
    assert Tucker2Config(1.0, 1.0).ranks(layer) is None and Tucker2Config(0.5, 0.5).ranks(layer) == (32, 32)
    assert Tucker2Config(0.5, 0.5).outcome(nn.Linear(8, 8)) is None  # convolutions only
    assert CPConfig(0.5).outcome(nn.Conv2d(8, 8, 3, groups=2)) is None


@pytest.mark.parametrize("word, kernels", [("tucker2:0.5", [(1, 1), (5, 5), (1, 1)]),
                                           ("cp:0.25", [(1, 1), (5, 1), (1, 5), (1, 1)])])
def test_the_onnx_graph_runs_the_factors_and_int8_runs_every_one_on_qlinearconv(word, kernels, tmp_path) -> None:
    from autocomp.artifact import export
    from autocomp.artifact.container import to_bytes
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model, x = LeNet5().eval(), torch.randn(32, 1, 28, 28)
    calibration = [x[i:i + 8].numpy() for i in range(0, 32, 8)]
    for bits in (None, 8):
        plan = Plan(layers={"conv1": LayerPlan(bits=bits), "conv2": LayerPlan(rank=word, bits=bits)})
        info = export(apply(model, plan, x[:1]), x[:1], calibration, tmp_path / f"{bits}.acz")
        graph = onnx.load_from_string(to_bytes(info.path)).graph
        convs = [n for n in graph.node if n.op_type in ("Conv", "QLinearConv")]
        shapes = [tuple(a.ints) for n in convs for a in n.attribute if a.name == "kernel_shape"]
        assert shapes == [(5, 5), *kernels]  # conv1, then conv2's factors
        executed = executed_graph(info.path, tmp_path / "executed.onnx")
        if bits == 8:
            assert executed.ops["QLinearConv"] == 1 + len(kernels), executed.ops
            assert executed.float_compute_int8_weight == []


def test_cost_timing_drops_a_decomposition_that_does_not_pay() -> None:
    from autocomp.measure import MeasureConfig
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    space = parse_space("version: 1\nlayers:\n  - name: conv2\n    rank: [1.0, tucker2:0.5, cp:0.25, cp:0.5]\n")
    record = {"conv2.rank": {"tucker2:0.5": [0.7, 0.68, 0.72], "cp:0.25": [1.2, 1.1, 1.3], "cp:0.5": None}}
    costed, _ = costed_space(space, model, frozenset({"fc2"}), torch.randn(1, 1, 28, 28), MeasureConfig(), record)
    assert {p.name: p.spec for p in costed.params(model, frozenset({"fc2"}))}["conv2.rank"] == \
        Domain(choices=(1.0, "tucker2:0.5"))
    variant = LowRankConfig.variant(model.conv2, "cp:0.25")  # what the timing runs
    assert isinstance(variant, CPConv) and LowRankConfig.variant(model.fc1, "cp:0.25") is None


def test_channel_pruning_around_factorized_layers_keeps_the_model_whole() -> None:
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model, x = LeNet5().eval(), torch.randn(4, 1, 28, 28)
    for word in ("tucker2:0.5", "cp:0.25"):
        plan = Plan(layers={"conv1": LayerPlan(channel_ratio=0.5), "conv2": LayerPlan(rank=word, channel_ratio=0.5),
                            "fc1": LayerPlan(channel_ratio=0.5)})
        student = apply(model, plan, x[:1])
        chain = student.conv2
        assert chain[0].in_channels == 10 and chain[-1].out_channels == 25  # both sides of the chain cut
        assert student.fc1.in_features == 25 * 4 * 4 and student(x).shape == (4, 10)


def test_a_rebuilt_trial_is_byte_identical_and_records_its_decompositions(tiny_data, tmp_path) -> None:
    from autocomp.measure import MeasureConfig
    from autocomp.pipeline.workbench import Workbench

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 64, 10)).eval()
    bench = Workbench(model, tiny_data, MeasureConfig(min_runs=3, min_seconds=0.0))
    plan = Plan.from_dict({"version": 1, "layers": {"2": {"rank": "tucker2:0.5"}, "4": {"rank": "cp:0.25", "bits": 8}},
                           "distill": {"steps": 5}})
    first = bench.run(plan, tmp_path / "a.acz")
    _chain._CACHE.clear()
    second = bench.run(plan, tmp_path / "b.acz")
    assert first.sha256 == second.sha256  # what export's rebuild relies on
    assert set(first.decomposed) == {"2", "4"} and first.decomposed["4"]["method"] == "cp:0.25"
    assert first.seconds["decompose"] > 0 and not first.decomposed["4"]["cached"]
    third = bench.run(plan, tmp_path / "c.acz")  # from the cache: no decomposition time counted
    assert third.sha256 == first.sha256 and third.seconds["decompose"] == 0 and third.decomposed["4"]["cached"]


@pytest.mark.e2e
def test_a_search_offering_decompositions_records_and_reports_them(tiny_data, tmp_path) -> None:
    import pandas as pd

    from autocomp.api import run_search
    from autocomp.config import SearchConfig
    from autocomp.report.frame import plan_summary, trials_frame
    from autocomp.study import records

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10)).eval()
    space = parse_space("version: 1\nlayers:\n  - type: Conv2d\n    rank: [1.0, tucker2:0.5, tucker2:0.25, cp:0.25]\n"
                        "global:\n  steps: 4\n", "decomp.yaml")
    config = SearchConfig(model="python", dataset="python", n_trials=8, storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="decomp", run_dir=str(tmp_path), baselines=("teacher",), promote=0.0)
    study = run_search(config, teacher=model, data=tiny_data, space=space, progress=False, log=lambda s: None)
    done = [records.read_trial(t) for t in study.trials if t.state.name == "COMPLETE"]
    decomposed = [r for r in done if r.decomposed]
    assert decomposed, [r.plan for r in done]
    for r in decomposed:  # every recorded decomposition is a word the plan asked for on that layer
        for layer, note in r.decomposed.items():
            assert r.plan.layers[layer].rank == note["method"] and note["error"] < _chain.MAX_ERROR
    frame = trials_frame(study)
    row = frame[frame["trial"] == decomposed[0].number].iloc[0].to_dict()
    assert "rank kept" in plan_summary(row) and ("tucker2" in plan_summary(row) or "cp" in plan_summary(row))
    stored = pd.read_parquet(tmp_path / "trials.parquet")  # words and numbers in one column: written as text
    assert set(stored["2.rank"].dropna()) <= {"1.0", "tucker2:0.5", "tucker2:0.25", "cp:0.25"}
    assert "tucker2" in (tmp_path / "report.html").read_text()
