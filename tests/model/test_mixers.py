"""The mixer contract, checked for every registered mixer (a new mixer is covered by registering it).

For each mixer, as a pure stack of two layers: the future never reaches the past (perturbation and
a zero Jacobian), batch independence, incremental decoding equal to the full forward, the carried
window form equal to one long pass where the mixer carries state, DePass completeness, the state
size, and a parameter-matched stack. Plus the registry and the layer-pattern grammar.

Bidirectional-only mixers (``causal_capable=False``: FNet, Linformer) are built in a bidirectional
model (``causal=False``): their causality checks are replaced by the opposite check (a later input
does reach an earlier output) and their step must refuse. Every mixer that has a bidirectional form
(``bidirectional_capable``) is checked to read both sides when built with ``causal=False``.
"""
from pathlib import Path

import pytest
import torch
import yaml

from sosm.model import SOSMConfig, SOSMModel, matched_config, param_count
from sosm.model.context import LayerContext
from sosm.model.mixers import Mixer, build_mixer, get_mixer, mixer_names, register_mixer, resolve_mixer_name
from sosm.model.mixers import base as registry

from .conftest import MIXER_KNOBS, SEQ, VOCAB, random_ids, tiny_model

MIXERS = mixer_names()
BIDIRECTIONAL_ONLY = {name for name in MIXERS if not get_mixer(name).causal_capable}
CAUSAL = [name for name in MIXERS if name not in BIDIRECTIONAL_ONLY]
BIDIRECTIONAL_CAPABLE = [name for name in MIXERS if get_mixer(name).bidirectional_capable]


def knobs(name: str, causal: bool = True) -> dict:
    out = dict(MIXER_KNOBS.get(name, {}))
    if name in BIDIRECTIONAL_ONLY or not causal:
        out["causal"] = False
        if name == "triple":
            out["triple_global"] = "fnet"
        if get_mixer(name).needs_graph:
            out["graph"] = {"k": 4, "window": 1, "max_distance": 16, "causal": False}
    return out


def pure(name: str, causal: bool = True, **overrides) -> SOSMModel:
    positional = "rope"
    return tiny_model(name, positional, seed=3, n_layers=2, **{**knobs(name, causal), **overrides})


@pytest.mark.parametrize("name", CAUSAL)
def test_future_tokens_never_reach_the_past(name):
    model = pure(name)
    ids = random_ids()
    logits, _ = model(ids)
    for t in (0, 5, SEQ - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, VOCAB, (2, SEQ - t - 1), generator=torch.Generator().manual_seed(t))
        assert torch.equal(logits[:, :t + 1], model(changed)[0][:, :t + 1]), f"{name}: logits <= {t} moved"


@pytest.mark.parametrize("name", CAUSAL)
def test_jacobian_wrt_later_stack_inputs_is_zero(name):
    """d out[t] / d x[s] = 0 for s > t, taken at the mixer itself (its input, not the token ids)."""
    model = pure(name)
    ids = random_ids(batch=1, seq=11)
    captured = {}
    handle = model.stack.register_forward_pre_hook(lambda module, args: captured.update(x=args[0], ctx=args[1]))
    model(ids)
    handle.remove()
    layer = model.stack.layers[0]
    x = captured["x"].detach().requires_grad_(True)
    out = layer(x, captured["ctx"])
    for t in (0, 4, 10):
        (grad,) = torch.autograd.grad(out[:, t].sum(), x, retain_graph=True)
        assert grad[:, :t + 1].abs().sum() > 0
        assert torch.count_nonzero(grad[:, t + 1:]) == 0, f"{name}: out[{t}] depends on inputs after {t}"


@pytest.mark.parametrize("name", MIXERS)
def test_a_sample_is_the_same_alone_and_in_a_batch(name):
    model = pure(name)
    ids = random_ids(batch=3)
    batched, _ = model(ids)
    for b in range(3):
        torch.testing.assert_close(model(ids[b:b + 1])[0][0], batched[b], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CAUSAL)
def test_step_by_step_decoding_equals_the_full_forward(name):
    model = pure(name)
    ids = random_ids()
    full, _ = model(ids)
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BIDIRECTIONAL_ONLY))
def test_bidirectional_only_mixers_refuse_a_causal_model_and_a_step(name):
    with pytest.raises(ValueError, match=f"'{name}' is bidirectional only .*a causal language model cannot use"):
        SOSMConfig(model=name, d_model=32, n_heads=2, **{k: v for k, v in knobs(name).items() if k != "causal"})
    with pytest.raises(ValueError, match=f"'{name}' is bidirectional only .*so a causal model cannot use it"):
        build_mixer(name, SOSMConfig())
    model = pure(name)
    with pytest.raises((NotImplementedError, ValueError), match="bidirectional|causal"):
        model.decoder(batch_size=2).step(random_ids()[:, 0])
    with pytest.raises(NotImplementedError, match=f"'{name}' is bidirectional only"):
        model.stack.layers[0].step(torch.zeros(2, 1, 32), LayerContext(position=0), {})


@pytest.mark.parametrize("name", BIDIRECTIONAL_CAPABLE)
def test_bidirectional_mixers_read_both_sides(name):
    """Built with causal=False, an output depends on inputs after it as well as before (a nonzero Jacobian)."""
    model = pure(name, causal=False)
    ids = random_ids(batch=1, seq=11)
    captured = {}
    handle = model.stack.register_forward_pre_hook(lambda module, args: captured.update(x=args[0], ctx=args[1]))
    model(ids)
    handle.remove()
    x = captured["x"].detach().requires_grad_(True)
    out = model.stack.layers[0](x, captured["ctx"])
    (grad,) = torch.autograd.grad(out[:, 4].sum(), x)
    assert grad[:, :4].abs().sum() > 0 and grad[:, 5:].abs().sum() > 0, f"{name}: out[4] does not read both sides"


@pytest.mark.parametrize("name", MIXERS)
def test_carried_windows(name):
    """Two windows with the carried state: a stateful mixer equals its step-by-step pass; others read their window."""
    torch.manual_seed(0)
    settings = {**knobs(name), "graph": {"num_landmarks": 0, **knobs(name).get("graph", {})}}
    config = SOSMConfig(model=name, d_model=32, n_heads=2, vocab_size=VOCAB, d_state=4, **settings)
    layer = build_mixer(name, config, causal=config.causal).eval()
    x = torch.randn(2, 9, 32)
    semantic = torch.randn(2, 9, 64)  # the MU semantic state (read by multi-block heads)
    nbrs = torch.full((2, 9, 1), -1)
    nbrs[:, 1:, 0] = torch.arange(8)  # a chain: each token's predecessor
    with torch.no_grad():
        cache = layer.allocate_cache(2, x.device, x.dtype)
        first = layer.forward_carry(x[:, :4], LayerContext(neighbors=nbrs[:, :4], semantic=semantic[:, :4]), cache)
        second = layer.forward_carry(x[:, 4:], LayerContext(neighbors=nbrs[:, 4:] - 4, semantic=semantic[:, 4:]), cache)
        if cache:  # a recurrent state was carried: the two windows are one pass
            steps, step_cache = [], layer.allocate_cache(2, x.device, x.dtype)
            for t in range(9):
                steps.append(layer.step(x[:, t:t + 1], LayerContext(position=t, semantic=semantic[:, t:t + 1]),
                                        step_cache))
            torch.testing.assert_close(torch.cat([first, second], 1), torch.cat(steps, 1), rtol=1e-5, atol=1e-5)
        else:
            torch.testing.assert_close(second, layer(x[:, 4:], LayerContext(
                neighbors=(nbrs[:, 4:] - 4).clamp_min(-1), semantic=semantic[:, 4:])))


@pytest.mark.parametrize("name", MIXERS)
def test_depass_components_sum_to_the_logits(name):
    from sosm.analysis import DePass

    model = pure(name)
    ids = random_ids(batch=1)
    result = DePass(model).run(ids, by="token")
    assert result.completeness_error() < 1e-4, name


@pytest.mark.parametrize("name", MIXERS)
def test_state_size_is_reported(name):
    layer = pure(name).stack.layers[0]
    small, large = layer.state_size(16), layer.state_size(1024)
    assert isinstance(small, int) and 0 < small <= large


@pytest.mark.parametrize("name", [n for n in MIXERS if not get_mixer(n).needs_mlp])
def test_state_size_without_an_mlp(name):
    """mlp_ratio=0 (the recall protocol) drops the attention layers' MLP: state_size must not read it."""
    layer = pure(name, mlp_ratio=0).stack.layers[0]
    assert 0 < layer.state_size(16) <= layer.state_size(1024)


@pytest.mark.parametrize("name", MIXERS)
def test_parameter_matched_pure_stack(name):
    settings = {k: v for k, v in knobs(name).items() if k != "graph"}
    graph = {"causal": False} if name in BIDIRECTIONAL_ONLY else {}
    reference = SOSMConfig(model="hybrid", d_model=64, n_heads=4, n_layers=4, vocab_size=65, graph=graph, **settings)
    matched = matched_config(reference, name)
    assert abs(param_count(matched) - param_count(reference)) <= 0.05 * param_count(reference)
    assert matched.layer_types == (resolve_mixer_name(name),) * matched.n_layers


def test_registry_names_aliases_and_errors():
    assert {"attention", "graph_attention", "mamba"} <= set(MIXERS)
    assert [resolve_mixer_name(a) for a in ("A", "M", "T", "transformer")] == [
        "graph_attention", "mamba", "attention", "attention"]
    with pytest.raises(ValueError, match=r"unknown mixer 'lstm'; accepted: one of \[.*'mamba'"):
        get_mixer("lstm")

    class Clash(Mixer):
        name = "clash"
        aliases = ("M",)

    with pytest.raises(ValueError, match="mixer name 'M' is taken by 'mamba'"):
        register_mixer(Clash)
    with pytest.raises(TypeError, match="Mixer subclass with a name"):
        register_mixer(torch.nn.Linear)


def test_layer_pattern_takes_names_lists_or_one_letter_aliases():
    by_codes = SOSMConfig(layer_pattern="MA", n_layers=3)
    by_names = SOSMConfig(layer_pattern="mamba,graph_attention", n_layers=3)
    by_list = SOSMConfig(layer_pattern=["mamba", "graph_attention"], n_layers=3)
    assert by_codes.layer_types == by_names.layer_types == by_list.layer_types == ("mamba", "graph_attention", "mamba")
    assert SOSMConfig(layer_pattern="mamba", n_layers=2).layer_types == ("mamba", "mamba")
    with pytest.raises(ValueError, match=r"layer_pattern='AX' is invalid: unknown mixer 'X'"):
        SOSMConfig(layer_pattern="AX")
    with pytest.raises(ValueError, match="SOSMConfig.model='lstm' is invalid"):
        SOSMConfig(model="lstm")


def test_a_causal_stack_refuses_a_bidirectional_only_mixer(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))

    @register_mixer
    class EverywhereMixer(Mixer):  # mixes every position with every other (like FNet, Linformer)
        name = "everywhere"
        causal_capable = False

        def __init__(self, config, struct_dim=None):
            super().__init__()

        def forward(self, x, ctx):
            return x + x.mean(1, keepdim=True)

    with pytest.raises(ValueError, match="'everywhere' is bidirectional only"):
        SOSMConfig(layer_pattern="mamba,everywhere")
    with pytest.raises(ValueError, match="'everywhere' is bidirectional only"):
        build_mixer("everywhere", SOSMConfig())
    assert isinstance(build_mixer("everywhere", SOSMConfig(), causal=False), EverywhereMixer)


def test_missing_forms_are_refused_with_the_mixer_named():
    class Bare(Mixer):
        name = "bare"

    with pytest.raises(NotImplementedError, match="'bare' has no recurrent step"):
        Bare().step(torch.zeros(1, 1, 4), LayerContext(), {})
    with pytest.raises(NotImplementedError, match="'bare' has no DePass linear mode"):
        Bare().linear_mode(torch.zeros(1, 1, 4), torch.zeros(2, 1, 1, 4), LayerContext(), 1)


def test_the_guide_example_meets_the_contract(monkeypatch):
    """docs/mixers.md's worked example, run as written, then checked like a shipped mixer."""
    import re
    from pathlib import Path

    from sosm.analysis import DePass

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    guide = (Path(__file__).resolve().parents[2] / "docs" / "mixers.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", guide, flags=re.S)
    for block in blocks:
        exec(compile(block, "docs/mixers.md", "exec"), {})
    assert "ema" in mixer_names()
    model = pure("ema")
    ids = random_ids()
    full, _ = model(ids)
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % VOCAB
    assert torch.equal(full[:, :9], model(changed)[0][:, :9])
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    assert DePass(model).run(ids[:1], by="token").completeness_error() < 1e-4
    assert SOSMConfig(layer_pattern="ema,graph_attention", n_layers=2).layer_types == ("ema", "graph_attention")


STEPPING = [n for n in MIXERS if get_mixer(n).causal_capable and n != "graph_attention"]
CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@pytest.mark.parametrize("name", STEPPING)
def test_in_a_hybrid_beside_graph_attention(name):
    """Named in a layer pattern next to graph attention: decoding equals the forward; DePass is complete."""
    from sosm.analysis import DePass

    model = tiny_model("hybrid", "graph_rope", seed=4, n_layers=2, layer_pattern=f"{name},graph_attention",
                       **MIXER_KNOBS.get(name, {}))
    assert model.config.layer_types == (name, "graph_attention")
    ids = random_ids()
    full, _ = model(ids)
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)
    assert DePass(model).run(ids[:1], by="token").completeness_error() < 1e-4


@pytest.mark.parametrize("name", [n for n in MIXERS if (CONFIGS / f"shakespeare_char_cpu_{n}.yaml").exists()])
def test_shakespeare_config_matches_the_hybrid(name):
    """Each mixer's Tiny Shakespeare CPU config is within 5% of the hybrid's parameters (the table compares them)."""
    from sosm.tokenizers import ByteTokenizer

    def count(model: str) -> int:
        section = yaml.safe_load((CONFIGS / f"shakespeare_char_cpu_{model}.yaml").read_text())
        return param_count(SOSMConfig(**section["model"], vocab_size=ByteTokenizer().vocab_size, max_seq_len=64))

    assert abs(count(name) - count("hybrid")) <= 0.05 * count("hybrid"), name
