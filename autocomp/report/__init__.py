"""Reporting: study -> trials frame -> plot data -> figures -> one HTML page, plus a recommendation.

Data steps (``frame``, ``plots``, ``hypervolume``, ``importance``, ``recommend``) are pure and
tested without drawing; ``figures`` renders them with plotly; ``html`` writes the files.
"""

from autocomp.report.frame import pareto_frame, trials_frame
from autocomp.report.html import write_report
from autocomp.report.recommend import Recommendation, export_command, recommend, recommend_text

__all__ = ["Recommendation", "export_command", "pareto_frame", "recommend", "recommend_text", "trials_frame",
           "write_report"]
