"""Rebuild a trained model, its tokenizer and its config from a checkpoint (for eval and generate)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .checkpoint import CONFIG_FILE, Checkpoint, CheckpointError, load_model_state, read_checkpoint
from .components import ModelFactory, mask_token_id, model_vocab_size, sosm_model_factory, tokenizer_from_files
from .config import TrainConfig
from .quantize import QUANT_FILE, load_quantized


@dataclass
class TrainedModel:
    """A model in eval mode with everything needed to feed it text."""

    model: torch.nn.Module
    tokenizer: object
    config: TrainConfig
    checkpoint: Checkpoint

    @property
    def leaky(self) -> bool:
        return self.config.leaky

    @property
    def mask_predict(self) -> bool:
        """True for a bidirectional model trained by mask-predict (its vocabulary ends with the ``[MASK]`` id)."""
        return self.config.objective == "mask_predict"

    @property
    def mask_id(self) -> int:
        return mask_token_id(self.tokenizer)

    @property
    def label(self) -> str:
        return self.config.display_name + (" [int8]" if self.quantized else "")

    @property
    def quantized(self) -> bool:
        """True for a checkpoint written by ``sosm quantize`` (dynamic INT8 linear layers, CPU only)."""
        return QUANT_FILE in self.checkpoint.extra


def load_trained(path, *, device="cpu", model_factory: Optional[ModelFactory] = None) -> TrainedModel:
    """Load the checkpoint at ``path`` (a checkpoint directory, or a run directory's newest one).

    Raises:
        CheckpointError: missing, corrupt or mismatched files (the message names the file).
    """
    checkpoint = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(checkpoint.config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint file {checkpoint.path / CONFIG_FILE} holds an invalid config: {err}") from None
    try:
        tokenizer = tokenizer_from_files(checkpoint.extra)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise CheckpointError(f"checkpoint {checkpoint.path} has no readable tokenizer files "
                              f"(tokenizer_config.json): {err}") from None
    factory = model_factory or sosm_model_factory
    model = factory(config.model, model_vocab_size(config.objective, tokenizer), config.data.block_size)
    if QUANT_FILE in checkpoint.extra:  # written by ``sosm quantize``
        if torch.device(device).type != "cpu":
            raise ValueError(f"checkpoint {checkpoint.path} is INT8-quantized (dynamic quantized linear layers run "
                             f"on CPU only); accepted device: cpu, got {device}")
        model = load_quantized(model, checkpoint.model_state, checkpoint.extra[QUANT_FILE],
                               source=str(checkpoint.path / "model.safetensors"))
    else:
        load_model_state(model, checkpoint)
    model.to(device).eval()
    return TrainedModel(model=model, tokenizer=tokenizer, config=config, checkpoint=checkpoint)
