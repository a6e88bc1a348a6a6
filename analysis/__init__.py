"""Provenance statistics, DePass and attribution (``sosm.analysis``).

Entry points: :class:`DePass` (exact decomposition of the logits), :func:`block_attribution`
(MU block shares of a prediction), :func:`run_ablations`, :func:`provenance_report`,
:func:`deletion_curve` and :func:`write_report`.
"""
from .depass import PARTITIONS, DePass, DePassResult
from .ablation import run_ablations
from .attribution import BlockAttribution, GradientBlockAttributionCallback, block_attribution, token_attribution
from .faithfulness import deletion_curve
from .probe import compare_senses, probe_sentence
from .provenance import provenance_report
from .report import build_report, write_report

__all__ = ["DePass", "DePassResult", "PARTITIONS", "block_attribution", "BlockAttribution", "token_attribution",
           "GradientBlockAttributionCallback", "run_ablations", "provenance_report", "deletion_curve",
           "build_report", "write_report", "probe_sentence", "compare_senses"]
