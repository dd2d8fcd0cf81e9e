"""The render step: plotly figures from the tuples ``plots.py`` and friends compute. No analysis here."""

from __future__ import annotations

from autocomp.methods.registry import knobs
from autocomp.report.hypervolume import HypervolumeHistory
from autocomp.report.importance import ImportanceInfo
from autocomp.report.plots import ParetoInfo, PolicyInfo

STYLE = {  # group -> (color, symbol, legend name)
    "dominated": ("#b8b8b8", "circle", "dominated"),
    "front": ("#1f77b4", "circle", "Pareto front"),
    "baselines": ("#d62728", "diamond", "teacher / uniform baselines"),
}


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
