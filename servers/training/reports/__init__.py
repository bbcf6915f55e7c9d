"""Training reports: the text/JSON report of a finished training job, its charts and recommendations.

Inputs are plain dataclasses (``ReportInput`` and friends, over ``servers.training.types``).
``build_report`` is pure; ``save_report`` uploads a report to ``training-outputs``.
matplotlib is imported only when charts are drawn.
"""

from servers.training.reports.inputs import Environment, ModelInfo, PreviousModel, ReportInput, Timings
from servers.training.reports.plots import Plot, render_plots
from servers.training.reports.recommendations import DEFAULT_THRESHOLDS, Recommendation, Thresholds, recommend
from servers.training.reports.report import Report, SavedReport, build_report, plot_key, report_keys, save_report

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Environment",
    "ModelInfo",
    "Plot",
    "PreviousModel",
    "Recommendation",
    "Report",
    "ReportInput",
    "SavedReport",
    "Thresholds",
    "Timings",
    "build_report",
    "plot_key",
    "recommend",
    "render_plots",
    "report_keys",
    "save_report",
]
