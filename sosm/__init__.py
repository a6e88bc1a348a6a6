"""SOSM: graph-structured sequence models."""
__version__ = "0.1.0"

__all__ = ["SOSMConfig", "SOSMModel", "__version__"]


def __getattr__(name):
    """Import the model lazily so ``import sosm`` stays light (tokenizers, data, CLI)."""
    if name in ("SOSMConfig", "SOSMModel"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'sosm' has no attribute {name!r}")
