"""Fine-tuning a trained model with LoRA adapters (``sosm finetune``): the model factory and the outputs.

The run is an ordinary :class:`~sosm.train.Trainer` run (resumable exactly, stopped cleanly by
SIGTERM, distributed under torchrun) whose model is the base checkpoint's with adapters
(:mod:`sosm.train.lora`): only the adapters train, the base weights stay bit for bit. At the end
``<out>/adapter/`` holds the adapters alone (``peft``'s format) and ``<out>/merged/`` a plain
checkpoint of the merged model, which ``sosm eval`` and ``sosm generate`` read like any other.
"""
from __future__ import annotations

import copy
from pathlib import Path

from .checkpoint import Checkpoint, load_model_state, write_checkpoint
from .components import ModelFactory, model_config_dict, sosm_model_factory, tokenizer_files
from .lora import LoRAConfig, add_lora, merge_and_unload, save_adapter

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"


def lora_model_factory(base: Checkpoint, lora: LoRAConfig, factory: ModelFactory = sosm_model_factory) -> ModelFactory:
    """A model factory for the trainer: the base checkpoint's model with LoRA adapters, everything else frozen."""
    def build(model_section: dict, vocab_size: int, block_size: int):
        model = factory(model_section, vocab_size, block_size)
        load_model_state(model, base)
        return add_lora(model, lora)
    return build


def write_finetune_outputs(trainer, lora: LoRAConfig, out) -> dict:
    """``<out>/adapter`` (the adapters) and ``<out>/merged`` (a plain checkpoint of the merged model); returns the paths."""
    out = Path(out)
    adapter = save_adapter(trainer.module, lora, out / ADAPTER_DIR)
    merged = merge_and_unload(copy.deepcopy(trainer.module))  # the run's own model keeps its adapters (--resume)
    extra = tokenizer_files(trainer.tokenizer)
    resolved = model_config_dict(merged)
    if resolved is not None:
        extra["model_config.json"] = resolved
    checkpoint = write_checkpoint(out / MERGED_DIR, trainer.step, model_state=merged.state_dict(),
                                  config=trainer.config.to_dict(), optimizer_state={"state": {}, "param_groups": []},
                                  trainer_state={"step": trainer.step, "merged_lora": lora.to_dict()},
                                  extra_json=extra, keep_last=1)
    return {"adapter": str(adapter), "merged": str(checkpoint)}
