"""The SOSM model: MU state, semantic graph, graph attention + TopologicalMamba stack, baselines."""
from .config import MODELS, POSITIONALS, SOSMConfig
from .model import SOSMModel
from .sizing import matched_config, param_count
from .state import State

__all__ = ["SOSMConfig", "SOSMModel", "State", "MODELS", "POSITIONALS", "matched_config", "param_count"]
