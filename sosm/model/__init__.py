"""The SOSM model: MU state, semantic graph, graph attention + TopologicalMamba stack, baselines."""
from .config import MODELS, POSITIONALS, SOSMConfig, matched_config
from .model import SOSMModel
from .state import State

__all__ = ["SOSMConfig", "SOSMModel", "State", "MODELS", "POSITIONALS", "matched_config"]
