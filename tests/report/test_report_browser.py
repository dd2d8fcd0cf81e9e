"""Open report.html in headless Chromium: no script errors, every figure drawn.

A copy of the page gets one probe script first in <head>: it writes every uncaught error,
rejected promise and ``console.error`` into a <pre id="probe-errors"> that ``--dump-dom``
prints, so the check does not depend on how Chromium formats its log. Chromium's own
"Uncaught" console lines are checked too. In CI (``CI`` set) a missing Chromium fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_synthetic import FIGURES, figures_in

from autocomp.report import write_report

PROBE = """<script>(function(){
  function note(kind, text){
    var box = document.getElementById('probe-errors');
    if (!box) { box = document.createElement('pre'); box.id = 'probe-errors';
      (document.body || document.documentElement).appendChild(box); }
    box.textContent += kind + ': ' + text + '\\n';
  }
  window.addEventListener('error', function(e){ note('error', e.message + ' at ' + e.lineno); });
  window.addEventListener('unhandledrejection', function(e){ note('rejection', String(e.reason)); });
  var original = console.error;
  console.error = function(){ note('console.error', Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments); };
})();</script>"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run the browser test")
    pytest.skip("chromium is not installed")


def render(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after scripts ran, and Chromium's log."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # software WebGL for the 3-D plot
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=15000", "--dump-dom", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def figure_sections(dom: str) -> dict[str, str]:
    """Each figure's wrapper div up to the next one (or the next heading)."""
    marks = [(m.start(), m.group(1)) for m in re.finditer(r'data-figure="([\w-]+)"', dom)]
    ends = [start for start, _ in marks[1:]] + [len(dom)]
    return {name: dom[start:end] for (start, name), end in zip(marks, ends, strict=True)}


@pytest.mark.e2e  # headless Chromium on a whole report (5 s): with the e2e tests
def test_report_opens_without_errors_and_draws_every_figure(make_study, tmp_path):
    paths = write_report(make_study(n=40), tmp_path / "report", storage="sqlite:///study.db")
    source = paths["html"].read_text(encoding="utf-8")
    assert figures_in(source) == FIGURES
    probe = paths["html"].with_name("probe.html")
    probe.write_text(source.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")

    dom, log = render(probe, tmp_path / "profile")

    errors = re.search(r'<pre id="probe-errors">(.*?)</pre>', dom, re.S)
    assert errors is None, errors.group(1)
    uncaught = [line for line in log.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not uncaught, uncaught
    sections = figure_sections(dom)
    assert list(sections) == FIGURES
    for name, html in sections.items():
        assert "js-plotly-plot" in html, f"{name}: plotly never ran on it"
        assert re.search(r'<svg[^>]*class="main-svg"', html), f"{name}: nothing drawn"
    assert "<canvas" in sections["pareto-3d"] and "gl-container" in sections["pareto-3d"]
    assert sections["pareto-2d"].count('class="point"') >= 40  # markers of every finished trial, twice over
    assert 'class="hm"' in sections["policy"] or "heatmaplayer" in sections["policy"]


def test_probe_catches_a_broken_page(tmp_path):
    """The check above can fail: a page that throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text(f"<html><head>{PROBE}</head><body><script>undefinedFunction();</script></body></html>")
    dom, _ = render(page, tmp_path / "profile")
    assert "undefinedFunction is not defined" in re.search(r'<pre id="probe-errors">(.*?)</pre>', dom, re.S).group(1)
