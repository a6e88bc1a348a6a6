"""Bad input: clear ValueError/TypeError naming the argument, the value and the accepted range."""
import pytest
import torch

from sosm.graph import GraphBuilder, GraphConfig


@pytest.fixture
def builder():
    return GraphBuilder(GraphConfig(k=4))


def test_empty(builder):
    with pytest.raises(ValueError, match=r"states is empty.*T >= 7"):
        builder.build(torch.zeros(1, 0, 64))
    with pytest.raises(ValueError, match="states is empty"):
        builder.build(torch.zeros(0, 10, 64))


def test_too_short(builder):
    with pytest.raises(ValueError, match=r"T=6.*T >= k \+ 3 = 7"):
        builder.build(torch.randn(1, 6, 64))
    builder.build(torch.randn(1, 7, 64))
    with pytest.raises(ValueError, match=r"k_max.*= 19"):
        GraphBuilder(GraphConfig(adaptive_k=True)).build(torch.randn(1, 18, 64))


@pytest.mark.parametrize("k", [0, -3])
def test_k_not_positive(k):
    with pytest.raises(ValueError, match=rf"GraphConfig.k={k}.*>= 1"):
        GraphConfig(k=k)


def test_misspelt_config_key_suggests_the_right_one():
    with pytest.raises(ValueError, match=r"unknown GraphConfig keys \['windw'\]; valid keys are \['causal', 'window'.*"
                                         r"; did you mean 'window'\?$"):
        GraphConfig.from_dict({"windw": 2})
    with pytest.raises(ValueError, match=r"unknown GraphConfig keys \['kk', 'windw', 'zzz'\]; .*"
                                         r"; did you mean 'k' for 'kk', 'window' for 'windw'\?$"):
        GraphConfig.from_dict({"windw": 2, "kk": 3, "zzz": 1})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_inf(builder, bad):
    x = torch.randn(1, 10, 64)
    x[0, 3, 5] = bad
    with pytest.raises(ValueError, match=r"states contains 1 NaN/Inf"):
        builder.build(x)


@pytest.mark.parametrize("shape,match", [((10, 64), r"3 dims.*got shape \(10, 64\).*unsqueeze"),
                                         ((1, 1, 10, 64), "3 dims"), ((1, 10, 32), r"last dim must be 64 .*got 32")])
def test_wrong_dims(builder, shape, match):
    with pytest.raises(ValueError, match=match):
        builder.build(torch.randn(*shape))


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_non_float_dtype(builder, dtype):
    with pytest.raises(TypeError, match=rf"states must be a floating-point tensor.*{dtype}"):
        builder.build(torch.zeros(1, 10, 64, dtype=dtype))
    with pytest.raises(TypeError, match="states must be a torch.Tensor"):
        builder.build([[0.0] * 64] * 10)


def test_temporal_wrong():
    gated = GraphBuilder(GraphConfig(k=4, temporal_gate=True))
    x = torch.randn(2, 10, 64)
    with pytest.raises(ValueError, match="temporal is None"):
        gated.build(x)
    with pytest.raises(ValueError, match=r"temporal must have shape \(2, 10, 32\).*got \(2, 10, 16\)"):
        gated.build(x, torch.randn(2, 10, 16))
    with pytest.raises(TypeError, match="temporal must be a floating-point"):
        gated.build(x, torch.zeros(2, 10, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="temporal contains NaN"):
        gated.build(x, torch.full((2, 10, 32), float("nan")))


def test_padding_mask_wrong(builder):
    x = torch.randn(2, 10, 64)
    with pytest.raises(TypeError, match=r"padding_mask must be a torch.bool.*torch.int64"):
        builder.build(x, padding_mask=torch.ones(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"padding_mask must have shape \(2, 10\).*got \(2, 9\)"):
        builder.build(x, padding_mask=torch.ones(2, 9, dtype=torch.bool))


def test_inputs_untouched_on_error(builder):
    x = torch.randn(1, 10, 64)
    x[0, 0, 0] = float("nan")
    before = x.clone()
    with pytest.raises(ValueError):
        builder.build(x)
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(before))


def test_half_precision_is_accepted(builder):
    g = builder.build(torch.randn(1, 12, 64).to(torch.bfloat16))
    assert g.num_edges > 0
