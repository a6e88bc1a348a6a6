"""Knowledge distillation (``sosm distill``): a student trained on a teacher's softened logits and the labels.

Hinton et al. 2015: with temperature ``T`` the teacher's distribution ``p_t = softmax(z_t / T)``
carries how it ranks the wrong tokens too; the student minimises, per token,

    loss = kl_weight · T² · KL(p_t || softmax(z_s / T)) + ce_weight · CE(z_s, label)

(the ``T²`` keeps the soft term's gradients on the scale of the hard term's as ``T`` changes).
The teacher runs in eval mode under ``torch.no_grad``; it shares the student's tokenizer and
context length. Evaluations report the student's plain cross-entropy, comparable with a run
trained from scratch.

Example:
    >>> import torch
    >>> z = torch.randn(2, 3, 5)
    >>> float(distillation_loss(z, z, torch.zeros(2, 3, dtype=torch.long), DistillConfig(ce_weight=0.0)))
    0.0
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..common.configs import reject_unknown_keys
from ..evaluate import model_logits
from .trainer import Trainer


@dataclass
class DistillConfig:
    """The ``distill`` section of a distillation config."""

    temperature: float = 2.0            # T: both distributions are softmax(logits / T) in the soft term
    kl_weight: float = 0.5              # weight of T² · KL(teacher || student) at temperature T
    ce_weight: float = 0.5              # weight of the hard-label cross-entropy (at temperature 1)

    def __post_init__(self):
        for name in ("temperature", "kl_weight", "ce_weight"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if not ok or (name == "temperature" and value == 0):
                raise ValueError(f"distill.{name}={value!r} is invalid; accepted: a number "
                                 f"{'> 0' if name == 'temperature' else '>= 0'}")
        if self.kl_weight == 0 and self.ce_weight == 0:
            raise ValueError("distill.kl_weight and distill.ce_weight are both 0; accepted: at least one > 0")

    @classmethod
    def from_dict(cls, data) -> "DistillConfig":
        data = data or {}
        if not isinstance(data, dict):
            raise TypeError(f"config section 'distill' must be a mapping, got {type(data).__name__}")
        reject_unknown_keys(data, cls, where=" in config section 'distill'")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      config: DistillConfig) -> torch.Tensor:
    """The distillation loss (module docstring), averaged over tokens.

    Args:
        student_logits, teacher_logits: ``[B, T, V]`` (computed in float32).
        targets: ``[B, T]`` next-token ids.
        config: temperature and weights.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ; the two models must share the vocabulary")
    V = student_logits.shape[-1]
    student, teacher = student_logits.float().reshape(-1, V), teacher_logits.float().reshape(-1, V)  # [N, V]
    T = config.temperature
    soft = F.kl_div(F.log_softmax(student / T, dim=-1), F.log_softmax(teacher / T, dim=-1), log_target=True,
                    reduction="batchmean")  # sum over the vocabulary, mean over the N tokens
    hard = F.cross_entropy(student, targets.reshape(-1))
    return config.kl_weight * T * T * soft + config.ce_weight * hard


class DistillTrainer(Trainer):
    """A :class:`Trainer` whose training loss is :func:`distillation_loss` against ``teacher``.

    Args:
        teacher: the trained teacher (moved to the trainer's device, put in eval mode, frozen).
        distill: :class:`DistillConfig`.
        Everything else as :class:`Trainer` (pass the teacher's ``tokenizer``).
    """

    def __init__(self, config, out_dir, *, teacher: torch.nn.Module, distill: DistillConfig, **kwargs):
        if getattr(config, "objective", "next_token") != "next_token":
            raise ValueError(f"train.objective={config.objective!r} is invalid for distillation; accepted: next_token "
                             "(the teacher's next-token distributions are distilled)")
        super().__init__(config, out_dir, **kwargs)
        self.distill = distill
        self.teacher = teacher.to(self.device).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def training_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        autocast = dict(dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None)
        with torch.no_grad(), torch.autocast(self.device.type, **autocast):
            teacher_logits = model_logits(self.teacher, input_ids)  # [B, T, V]
        with torch.autocast(self.device.type, **autocast):
            student_logits = model_logits(self.model, input_ids)  # [B, T, V]
        return distillation_loss(student_logits, teacher_logits, targets, self.distill)
