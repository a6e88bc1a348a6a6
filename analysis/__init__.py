"""Provenance statistics, DePass and attribution (``sosm.analysis``).

Entry points: :class:`DePass` (exact decomposition of the logits), :func:`block_attribution`
(MU block shares of a prediction), :func:`run_ablations`, :func:`provenance_report`,
:func:`deletion_curve` and :func:`write_report`.
"""
from .depass import PARTITIONS, DePass, DePassResult
from .recording import ForwardRecord, logits_from_stack_input, record_forward

__all__ = ["DePass", "DePassResult", "PARTITIONS", "ForwardRecord", "record_forward", "logits_from_stack_input"]
