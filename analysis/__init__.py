"""Provenance statistics, DePass and attribution (``sosm.analysis``)."""
