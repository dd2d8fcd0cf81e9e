"""The integer program: its known optima on toy instances, and the per-layer options it picks from."""

from __future__ import annotations

from autocomp.study.knapsack import Option, layer_options, solve


def test_the_integer_program_returns_the_known_optimum_of_a_toy_instance() -> None:
    options = {
        "a": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 1.0, -10.0, -0.1), Option({"bits": 4}, 3.0, -20.0, -0.2)],
        "b": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 2.0, -10.0, 0.0), Option({"bits": 4}, 4.5, -30.0, 0.1)],
    }
    # Byte budget -30: (a none, b 4) costs 4.5; (a 4, b 8) 5.0; (a 8, b 4) 5.5; (a 4, b 4) 7.5.
    chosen = solve(options, "bytes", -30.0)
    assert [o.values for o in chosen] == [{}, {"bits": 4}]
    # Latency budget -0.2: only a's 4 bits reaches it, with b left alone (b's 8 bits adds no time but damage).
    assert [o.values for o in solve(options, "latency", -0.2)] == [{"bits": 4}, {}]
    assert solve(options, "bytes", -100.0) is None  # no choice meets it


def test_the_integer_program_also_finds_the_fastest_plan_under_a_damage_budget() -> None:
    options = {
        "a": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 1.0, -10.0, -0.1), Option({"bits": 4}, 3.0, -20.0, -0.3)],
        "b": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 2.0, -10.0, -0.2)],
    }
    # The fastest within a damage budget: a's 8 bits alone (1.0), b's 8 bits saves more time
    # for 2.0 (2.5), both ends (5.0); nothing fits 0.5.
    assert [o.values for o in solve(options, "damage", 1.0, minimize="latency")] == [{"bits": 8}, {}]
    assert [o.values for o in solve(options, "damage", 2.5, minimize="latency")] == [{}, {"bits": 8}]
    assert [o.values for o in solve(options, "damage", 5.0, minimize="latency")] == [{"bits": 4}, {"bits": 8}]
    assert [o.values for o in solve(options, "damage", 0.5, minimize="latency")] == [{}, {}]


def test_a_cap_on_a_second_quantity_is_met() -> None:
    options = {
        "a": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 1.0, -10.0, -0.1), Option({"bits": 4}, 3.0, -20.0, -0.2)],
        "b": [Option({}, 0.0, 0.0, 0.0), Option({"bits": 8}, 2.0, -10.0, 0.0), Option({"bits": 4}, 4.5, -30.0, 0.1)],
    }
    # Without the cap -30 bytes is (a none, b 4) at +0.1 latency; capped at 0.0 the next best, (a 4, b 8).
    assert [o.values for o in solve(options, "bytes", -30.0, cap=("latency", 0.0))] == [{"bits": 4}, {"bits": 8}]
    assert solve(options, "bytes", -30.0, cap=("latency", -0.25)) is None


def test_options_of_one_family_of_knobs_are_compared_among_themselves() -> None:
    def entry(layer: str, knob: str, value: float, kl: float, saved: int, latency: float) -> dict:
        return {"layer": layer, "knob": knob, "param": f"{layer}.{knob}", "value": value, "kl": kl,
                "bytes": -saved, "latency": [latency, latency, latency]}

    record = {"layer_bytes": {"fc": 1000, "conv": 500}, "entries": [
        entry("fc", "channel_ratio", 0.5, 0.05, 500, 0.8), entry("fc", "channel_ratio", 0.75, 0.18, 750, 0.67),
        entry("fc", "rank", 0.125, 0.001, 600, 0.7), entry("conv", "bits", 8, 0.0001, 375, 0.9)]}
    # A 1/2 cut with rank 1/8 (0.051 nats, 800 bytes, 0.56x) beats the 3/4 cut alone on all three...
    assert {"channel_ratio": 0.75} not in [o.values for o in layer_options(record)["fc"]]
    # ...but a plan of channel cuts alone can still take it, and every layer stays, at least as a no-op.
    cuts = layer_options(record, only=frozenset({"channel_ratio"}))
    assert [o.values for o in cuts["fc"]] == [{}, {"channel_ratio": 0.5}, {"channel_ratio": 0.75}]
    assert [o.values for o in cuts["conv"]] == [{}]
    assert [o.values for o in solve(cuts, "damage", 0.2, minimize="latency")] == [{"channel_ratio": 0.75}, {}]
