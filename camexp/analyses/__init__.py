"""Per-batch analyses beyond the faithfulness records (area curve, alpha statistics, localization, ...).

The contract and the registries are in camexp/analyses/base.py; importing this package registers the
built-in analyses.
"""
from camexp.analyses import alpha_stats, area_curve, localization, record_plots  # noqa: F401
from camexp.analyses.base import (ANALYSES, ANALYSIS_RESULTS, Analysis, BatchContext, analysis, analysis_result,
                                  declared_files)

__all__ = ["ANALYSES", "ANALYSIS_RESULTS", "Analysis", "BatchContext", "analysis", "analysis_result", "declared_files"]
