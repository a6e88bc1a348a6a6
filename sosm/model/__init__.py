"""The SOSM model: MU state, semantic graph, graph attention + TopologicalMamba stack, baselines."""
from .config import POSITIONALS, SOSMConfig, model_kinds
from .model import SOSMModel
from .sizing import matched_config, param_count
from .state import State
from . import mixers  # noqa: E402  (the registry of sequence mixers: sosm.model.mixers)

__all__ = ["SOSMConfig", "SOSMModel", "State", "POSITIONALS", "model_kinds", "matched_config", "param_count",
           "mixers"]
