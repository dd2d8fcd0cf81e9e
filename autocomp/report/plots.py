"""Plots, split into a pure data step (tested without drawing) and a render step (plotly)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from autocomp.report.frame import plan_summary


def pareto_data(frame: pd.DataFrame) -> dict[str, Any]:
    """Points to draw: finished trials split into front / dominated / baselines, with hover text."""
    done = frame[frame["state"] == "COMPLETE"] if not frame.empty else frame
    def pack(part: pd.DataFrame) -> dict[str, list]:
        return {
            "trial": part["trial"].tolist(),
            "accuracy": part["accuracy"].tolist(),
            "size_kb": (part["size_bytes"] / 1024).tolist(),
            "latency_ms": part["latency_ms"].tolist(),
            "text": [f"trial {r.trial}: {plan_summary(r)}" for _, r in part.iterrows()],
        }
    is_base = done["baseline"].astype(bool) if not done.empty else pd.Series(dtype=bool)
    return {
        "front": pack(done[done["pareto"] & ~is_base]) if not done.empty else pack(done),
        "dominated": pack(done[~done["pareto"] & ~is_base]) if not done.empty else pack(done),
        "baselines": pack(done[is_base]) if not done.empty else pack(done),
    }


def pareto_figure(data: dict[str, Any]):  # noqa: ANN201
    """Accuracy vs size and accuracy vs latency, side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs size", "accuracy vs latency"))
    styles = {"dominated": ("#b0b0b0", "circle"), "front": ("#1f77b4", "circle"), "baselines": ("#d62728", "diamond")}
    for key, (color, symbol) in styles.items():
        pts = data[key]
        for col, x in ((1, "size_kb"), (2, "latency_ms")):
            fig.add_trace(go.Scatter(
                x=pts[x], y=pts["accuracy"], mode="markers", name=key, legendgroup=key, showlegend=col == 1,
                marker={"color": color, "symbol": symbol, "size": 9}, text=pts["text"],
                hovertemplate="%{text}<br>acc %{y:.2f}%<br>%{x}<extra></extra>",
            ), row=1, col=col)
    fig.update_xaxes(title_text="artifact size (KB)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="latency (ms, ONNX Runtime)", row=1, col=2)
    fig.update_yaxes(title_text="top-1 accuracy (%)")
    fig.update_layout(height=480, title="Pareto front (every point measured on its artifact)")
    return fig
