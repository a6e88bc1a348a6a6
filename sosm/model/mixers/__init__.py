"""Sequence mixers by name (``sosm.model.mixers``): the registry and the mixers of the toolkit.

Every mixer is one class in one file on the contract of :class:`~sosm.model.mixers.base.Mixer`
(parallel forward, recurrent step and cache, carried-window form, DePass linear mode, state size).
Stacks name their layers: ``SOSMConfig(layer_pattern="mamba,graph_attention")`` (or the one-letter
aliases ``"MA"``), ``SOSMConfig(model="mamba")`` for a pure stack. Adding a mixer: docs/mixers.md.

| name | aliases | needs the graph | recurrent step | DePass |
|---|---|---|---|---|
| ``graph_attention`` | ``A`` | yes | yes (K/V cache) | yes |
| ``attention`` | ``T``, ``transformer`` | no | yes (K/V cache) | yes |
| ``mamba`` | ``M`` | no (reads the landmark structure when the model has it) | yes (conv + SSM state) | yes |
| ``mamba2`` | | no | yes (conv + SSD state) | yes |
| ``rwkv`` | ``rwkv6`` | no | yes (token shifts + WKV state) | yes |
| ``retnet`` | | no | yes (retention state) | yes |
| ``s4`` | | no | yes (SSM state) | yes |
| ``ossm`` | | no | yes (oscillator state) | yes |
| ``cfc`` | | no | yes (hidden state) | yes |
| ``performer`` | | no | yes (running sums of FAVOR+ features) | yes |
| ``cosformer`` | | no | yes (running cos/sin sums) | yes |
| ``sw_attention`` | ``swa`` | no | yes (rolling K/V cache of W entries) | yes |
| ``diff_attention`` | | no | yes (K/V cache) | yes |
| ``lsh_attention`` | ``lsh`` | no | yes (K/V cache + bucket ids) | yes |
| ``fnet`` | | no | no (bidirectional only) | yes (exact: the DFT is linear) |
| ``linformer`` | | no | no (bidirectional only) | yes |
| ``multi_block`` | | yes (reads the MU semantic state) | yes (K/V cache) | yes |
| ``triple`` | | no | yes when its three branches have one | yes |
| ``mod:<name>`` | | as ``<name>`` | yes (one wrapped cache per sequence) | yes |

``"mod:<name>"`` is Mixture-of-Depths around any of them (:mod:`.mod`); ``SOSMConfig.moe_experts``
turns the MLP of the attention mixers into a mixture of experts (:mod:`.moe`).

Example:
    >>> from sosm.model.mixers import mixer_names, get_mixer
    >>> mixer_names()[:3]
    ('attention', 'graph_attention', 'mamba')
    >>> get_mixer("A").__name__
    'GraphAttention'
"""
from .base import Mixer, build_mixer, get_mixer, mixer_names, register_mixer, resolve_mixer_name
from .attention import AttentionBlock, DenseAttention
from .graph_attention import GraphAttention
from .mamba import TopologicalMamba
from .mamba2 import Mamba2
from .mod import MixtureOfDepths
from .moe import MoEFeedForward
from .retnet import RetNet
from .rwkv import RWKV6
from .s4 import S4
from .ossm import OscillatorySSM
from .cfc import CfC
from .performer import Performer
from .cosformer import CosFormer
from .sw_attention import SlidingWindowSigmoidAttention
from .diff_attention import DifferentialAttention
from .lsh_attention import LSHAttention
from .fnet import FNet
from .linformer import Linformer
from .multi_block import MultiBlockAttention
from .triple import TripleHybrid

__all__ = ["Mixer", "build_mixer", "get_mixer", "mixer_names", "register_mixer", "resolve_mixer_name",
           "AttentionBlock", "DenseAttention", "GraphAttention", "Mamba2", "MixtureOfDepths", "MoEFeedForward", "RWKV6",
           "RetNet", "TopologicalMamba", "S4", "OscillatorySSM", "CfC",
           "Performer", "CosFormer",
           "SlidingWindowSigmoidAttention", "DifferentialAttention", "LSHAttention", "FNet", "Linformer",
           "MultiBlockAttention", "TripleHybrid"]
