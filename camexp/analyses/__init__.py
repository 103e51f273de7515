"""Per-batch analyses beyond the faithfulness records (area curve, alpha statistics, localization, ...).

The entries and their registry are in camexp/analyses/base.py; importing this package registers the
built-in analyses.
"""

from camexp.analyses import alpha_stats, area_curve, localization, record_plots, sanity  # noqa: F401
from camexp.analyses.base import ANALYSES, Analysis, Worker, analysis, worker_problem

__all__ = ["ANALYSES", "Analysis", "Worker", "analysis", "worker_problem"]
