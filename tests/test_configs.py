"""Every committed experiment config loads, validates, and builds its model on the meta device."""
from pathlib import Path

import pytest
import torch

from sosm.model import SOSMConfig, SOSMModel
from sosm.train.config import TrainConfig

#: derived configs (a base checkpoint's model plus a 'lora' / 'distill' section) load through
#: sosm finetune / sosm distill; the README commands that use them run in tests/test_docs.py
DERIVED = {"scaleout_lora", "scaleout_distill"}
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments" / "configs").glob("*.yaml")
                 if p.stem not in DERIVED)


def test_there_are_configs():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads_and_builds(path):
    config = TrainConfig.from_yaml(path)
    model = config.model if isinstance(config.model, SOSMConfig) else SOSMConfig.from_dict(config.model)
    with torch.device("meta"):
        SOSMModel(model)
