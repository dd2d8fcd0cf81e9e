"""The render step: plotly figures from the tuples ``plots.py`` and friends compute. No analysis here."""

from __future__ import annotations

import math

from autocomp.methods.registry import knobs
from autocomp.report.hypervolume import HypervolumeHistory
from autocomp.report.importance import ImportanceInfo
from autocomp.report.plots import ParetoInfo, PolicyInfo
from autocomp.report.profile import KL_FLOOR, Proxy, Sensitivity

STYLE = {  # group -> (color, symbol, legend name)
    "dominated": ("#b8b8b8", "circle", "dominated"),
    "front": ("#1f77b4", "circle", "Pareto front"),
    "baselines": ("#d62728", "diamond", "teacher / uniform baselines"),
}
PROMOTED = "promoted (plan re-run, longer fine-tune)"
PROMOTED_MARKER = {"color": "#2ca02c", "symbol": "circle-open", "size": 15, "line": {"width": 2}}


def pareto_figure(data: ParetoInfo, runtime: str = "ONNX Runtime"):  # noqa: ANN201
    """Accuracy vs size and accuracy vs latency (measured on ``runtime``), side by side, with each
    view's staircase."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs artifact size", "accuracy vs latency"),
                        horizontal_spacing=0.08)
    for col, axis in ((1, "size_kb"), (2, "latency_ms")):
        step = data.steps[axis]
        fig.add_trace(go.Scatter(x=step.x, y=step.accuracy, mode="lines", line={"shape": "hv", "color": "#1f77b4",
                                 "width": 1, "dash": "dot"}, name="best in this view", legendgroup="step",
                                 showlegend=col == 1, hoverinfo="skip"), row=1, col=col)
        for key, (color, symbol, name) in STYLE.items():
            pts = data.groups[key]
            fig.add_trace(go.Scatter(
                x=getattr(pts, axis), y=pts.accuracy, mode="markers+text" if key == "baselines" else "markers",
                text=pts.label if key == "baselines" else None, textposition="top center",
                hovertext=pts.text, hovertemplate="%{hovertext}<extra></extra>", name=name, legendgroup=key,
                showlegend=col == 1, marker={"color": color, "symbol": symbol, "size": 9 if key != "dominated" else 7},
            ), row=1, col=col)
        if data.promoted:
            pro = data.promoted
            fig.add_trace(go.Scatter(x=getattr(pro, axis), y=pro.accuracy, mode="markers", name=PROMOTED,
                                     legendgroup="promoted", showlegend=col == 1, hovertext=pro.text,
                                     hovertemplate="%{hovertext}<extra></extra>", marker=PROMOTED_MARKER),
                          row=1, col=col)
        if data.recommended:
            rec = data.recommended
            fig.add_trace(go.Scatter(x=getattr(rec, axis), y=rec.accuracy, mode="markers", name="recommended",
                                     legendgroup="rec", showlegend=col == 1, hovertext=rec.text,
                                     hovertemplate="recommended: %{hovertext}<extra></extra>",
                                     marker={"color": "#ffbf00", "symbol": "star", "size": 18,
                                             "line": {"color": "black", "width": 1}}), row=1, col=col)
    fig.update_xaxes(title_text="artifact size (KB, log)", type="log", row=1, col=1)
    fig.update_xaxes(title_text=f"latency (ms, {runtime})", row=1, col=2)
    fig.update_yaxes(title_text="top-1 accuracy (%)", row=1, col=1)
    fig.update_layout(height=500, margin={"t": 60}, legend={"orientation": "h", "y": -0.2})
    return fig


def pareto3d_figure(data: ParetoInfo):  # noqa: ANN201
    """The front in all three objectives at once."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, (color, symbol, name) in STYLE.items():
        pts = data.groups[key]
        fig.add_trace(go.Scatter3d(
            x=pts.size_kb, y=pts.latency_ms, z=pts.accuracy, mode="markers", name=name,
            hovertext=pts.text, hovertemplate="%{hovertext}<extra></extra>",
            marker={"color": color, "symbol": "diamond" if symbol == "diamond" else "circle",
                    "size": 4 if key == "dominated" else 6, "opacity": 0.9},
        ))
    if data.promoted:
        pro = data.promoted
        fig.add_trace(go.Scatter3d(x=pro.size_kb, y=pro.latency_ms, z=pro.accuracy, mode="markers", name=PROMOTED,
                                   hovertext=pro.text, hovertemplate="%{hovertext}<extra></extra>",
                                   marker={**PROMOTED_MARKER, "size": 8}))
    if data.recommended:
        rec = data.recommended
        fig.add_trace(go.Scatter3d(x=rec.size_kb, y=rec.latency_ms, z=rec.accuracy, mode="markers",
                                   name="recommended", hovertext=rec.text,
                                   hovertemplate="recommended: %{hovertext}<extra></extra>",
                                   marker={"color": "#ffbf00", "symbol": "diamond-open", "size": 10}))
    fig.update_layout(height=600, margin={"l": 0, "r": 0, "t": 30, "b": 0},
                      scene={"xaxis": {"title": {"text": "size (KB, log)"}, "type": "log", "dtick": 1},
                             "camera": {"eye": {"x": 1.7, "y": -1.5, "z": 0.7}},
                             "yaxis": {"title": {"text": "latency (ms)"}},
                             "zaxis": {"title": {"text": "accuracy (%)"}}})
    return fig


def hypervolume_figure(history: HypervolumeHistory):  # noqa: ANN201
    """Normalized hypervolume after each finished trial; markers where a trial raised it."""
    import plotly.graph_objects as go

    trials, hv, up = history.trial, history.hypervolume, history.improved
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=trials, y=hv, mode="lines", line={"shape": "hv", "color": "#1f77b4"},
                             name="hypervolume", hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[t for t, u in zip(trials, up, strict=True) if u],
                             y=[h for h, u in zip(hv, up, strict=True) if u],
                             mode="markers", name="trial that improved it", marker={"color": "#2ca02c", "size": 8},
                             hovertemplate="trial %{x} raised it to %{y:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="trial number")
    fig.update_yaxes(title_text="hypervolume (fraction of the reference box)", rangemode="tozero")
    fig.update_layout(height=380, margin={"t": 30}, legend={"orientation": "h", "y": -0.25})
    return fig


def policy_figure(policy: PolicyInfo):  # noqa: ANN201
    """One heatmap per knob: Pareto points (rows) x layers (columns), value in each cell."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    table = knobs()
    names = list(policy.knobs)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[table[k].title or k for k in names],
                        shared_yaxes=True, horizontal_spacing=0.03)
    for i, name in enumerate(names, start=1):
        knob, z = table[name], policy.knobs[name]
        text = [[f"{v:.0f}" if knob.kind != "float" else f"{v:.2f}" for v in row] for row in z]
        fig.add_trace(go.Heatmap(
            z=z, x=policy.layers, y=policy.rows, text=text, texttemplate="%{text}", colorscale=knob.colorscale,
            zmin=knob.shown_range[0], zmax=knob.shown_range[1], showscale=False, xgap=1, ygap=1,
            hovertemplate=f"%{{y}}<br>layer %{{x}}: {name} %{{text}}<extra></extra>",
        ), row=1, col=i)
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", tickangle=-45)
    fig.update_layout(height=max(260, 120 + 26 * len(policy.rows)), margin={"t": 40, "l": 10})
    return fig


def importance_figure(data: ImportanceInfo):  # noqa: ANN201
    """Horizontal bars: each parameter's importance for each objective."""
    import plotly.graph_objects as go

    fig = go.Figure()
    colors = {"accuracy": "#1f77b4", "size": "#ff7f0e", "latency": "#2ca02c"}
    for name, values in data.objectives.items():
        fig.add_trace(go.Bar(y=data.params, x=values, orientation="h", name=name,
                             marker={"color": colors.get(name)},
                             hovertemplate=f"%{{y}}: %{{x:.3f}} of {name}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(title_text="importance (share of explained variance, per objective)")
    rows = len(data.params) * max(1, len(data.objectives))
    fig.update_layout(barmode="group", height=max(300, 90 + 11 * rows), margin={"t": 30},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def _log_kl(value: float | None) -> float | None:
    return None if value is None else math.log10(max(value, KL_FLOOR))


def _kl_label(value: float | None, dropped: bool) -> str:
    if value is None:
        return ""
    text = "~0" if value < 5e-4 else f"{value:.2g}"
    return f"✕ {text}" if dropped else text


def sensitivity_figure(info: Sensitivity):  # noqa: ANN201
    """Three stacked heatmaps over layers x ``knob=value``: damage (KL, log color), KB saved, latency ratio."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = ("damage alone: KL divergence from the teacher (nats; ✕ = dropped from the space)",
              "KB saved beside the teacher's artifact (negative: larger)",
              "latency, x the teacher's (below 1: faster)")
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.08)
    panels = (
        ([[_log_kl(v) for v in row] for row in info.kl],
         [[_kl_label(v, d) for v, d in zip(row, drop, strict=True)] for row, drop in zip(info.kl, info.dropped,
                                                                                          strict=True)],
         {"colorscale": "Reds", "zmin": math.log10(KL_FLOOR), "zmax": 1.0},
         {"tickvals": [-6, -4, -2, 0], "ticktext": ["1e-6", "1e-4", "0.01", "1"], "title": {"text": "KL"}}),
        (info.saved_kb, [[_short(v) for v in row] for row in info.saved_kb],
         {"colorscale": "RdBu", "zmid": 0.0}, {"title": {"text": "KB"}}),
        (info.latency, [["" if v is None else f"{v:.2f}" for v in row] for row in info.latency],
         {"colorscale": "RdBu_r", "zmid": 1.0}, {"title": {"text": "x"}}),
    )
    for i, (z, text, scale, bar) in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(z=z, x=info.columns, y=info.layers, text=text, texttemplate="%{text}",
                                 hovertext=info.text, hovertemplate="%{hovertext}<extra></extra>", xgap=1, ygap=1,
                                 colorbar={**bar, "len": 0.28, "y": 1 - (i - 0.5) / 3, "thickness": 12},
                                 **scale), row=i, col=1)
    fig.update_yaxes(type="category", autorange="reversed", title_text="layer")
    fig.update_xaxes(type="category", tickangle=-45)
    rows = max(1, len(info.layers))
    fig.update_layout(height=3 * (70 + 24 * rows) + 120, margin={"t": 40, "l": 10})
    return fig


def _short(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2g}"


def proxy_figure(data: Proxy):  # noqa: ANN201
    """Seeded trials: predicted damage vs measured drop; predicted vs measured size and latency (y = x dotted)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "predicted KL vs measured drop", "size (KB): predicted vs measured", "latency (x): predicted vs measured"))
    colors = {"size": "#ff7f0e", "latency": "#2ca02c"}
    budgets = list(dict.fromkeys(data.budget))
    for budget in budgets:
        keep = [i for i, b in enumerate(data.budget) if b == budget]
        for col, (xs, ys) in enumerate(((data.predicted_kl, data.drop), (data.predicted_kb, data.size_kb),
                                        (data.predicted_latency, data.latency)), start=1):
            fig.add_trace(go.Scatter(x=[xs[i] for i in keep], y=[ys[i] for i in keep], mode="markers",
                                     name=f"{budget} budget", legendgroup=budget, showlegend=col == 1,
                                     hovertext=[data.text[i] for i in keep],
                                     hovertemplate="%{hovertext}<extra></extra>",
                                     marker={"color": colors.get(budget, "#1f77b4"), "size": 9}), row=1, col=col)
    for col, (xs, ys) in ((2, (data.predicted_kb, data.size_kb)), (3, (data.predicted_latency, data.latency))):
        finite = [v for v in (*xs, *ys) if math.isfinite(v) and v > 0]
        if finite:
            low, high = min(finite), max(finite)
            fig.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="measured = predicted",
                                     legendgroup="diag", showlegend=col == 2, hoverinfo="skip",
                                     line={"color": "#888", "dash": "dot", "width": 1}), row=1, col=col)
    fig.update_xaxes(type="log", title_text="predicted KL (nats, log)", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="measured accuracy drop (points)", row=1, col=1)
    for col, name in ((2, "KB"), (3, "x the teacher")):
        fig.update_xaxes(type="log", title_text=f"predicted ({name}, log)", row=1, col=col)
        fig.update_yaxes(type="log", title_text=f"measured ({name}, log)", row=1, col=col)
    fig.update_layout(height=420, margin={"t": 50}, legend={"orientation": "h", "y": -0.3})
    return fig
