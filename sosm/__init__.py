"""SOSM: graph-structured sequence models."""
__version__ = "0.1.0"
