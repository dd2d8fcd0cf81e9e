"""Reporting: study -> tables -> plot data -> figures -> HTML."""

from autocomp.report.frame import pareto_frame, trials_frame
from autocomp.report.html import write_report

__all__ = ["pareto_frame", "trials_frame", "write_report"]
