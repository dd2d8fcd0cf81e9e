"""Write the run's report: trials.csv, trials.parquet and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import optuna

from autocomp.report.frame import pareto_frame, trials_frame
from autocomp.report.plots import pareto_data, pareto_figure


def write_report(study: optuna.Study, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    paths = {"csv": out / "trials.csv", "parquet": out / "trials.parquet", "html": out / "report.html"}
    _atomic(paths["csv"], lambda p: frame.to_csv(p, index=False))
    _atomic(paths["parquet"], lambda p: frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
            .to_parquet(p, index=False))
    parts = [f"<h1>autocomp report: {study.study_name}</h1>"]
    if not frame.empty and "pareto" in frame:
        parts.append(pareto_figure(pareto_data(frame)).to_html(full_html=False, include_plotlyjs=True))
        parts.append("<h2>Pareto points</h2>" + pareto_frame(study).to_html(index=False))
    else:
        parts.append("<p>No finished trials yet.</p>")
    html = "<!doctype html><html><head><meta charset='utf-8'><title>autocomp report</title></head><body>"
    html += "\n".join(parts) + "</body></html>"
    _atomic(paths["html"], lambda p: p.write_text(html, encoding="utf-8"))
    return paths


def _atomic(path: Path, write) -> None:  # noqa: ANN001
    tmp = path.with_name(path.name + ".part")
    write(tmp)
    tmp.replace(path)
