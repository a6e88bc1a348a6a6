"""The shared leaf: atomic writes, config helpers, features used by both graph and kernels."""
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sosm.common import atomic_dir, atomic_path, atomic_write, reject_unknown_keys, rename_keys, write_synced
from sosm.common.features import block_units, candidate_mask, featurize, rescale, sinusoidal_positions


@pytest.mark.parametrize("content", [b"\x00bytes", "text ü", lambda handle: handle.write(b"callback")])
def test_atomic_write_takes_bytes_text_or_a_callback(tmp_path, content):
    path = atomic_write(tmp_path / "sub" / "f.bin", content)
    expected = {bytes: b"\x00bytes", str: "text ü".encode()}.get(type(content), b"callback")
    assert path.read_bytes() == expected and os.listdir(tmp_path / "sub") == ["f.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual mode, not a temporary file's 0600


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "g.json"
    path.write_text("old")

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["g.json"]
    with pytest.raises(TypeError, match="content must be"):
        atomic_write(path, 3)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["g.json"]


def test_atomic_path_hands_a_writer_a_path_and_cleans_up(tmp_path):
    target = tmp_path / "lib.so"
    with atomic_path(target, suffix=".tmp.so") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp.so") and tmp.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(OSError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"torn")
            raise OSError("compiler died")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["lib.so"]


def test_atomic_dir_replaces_a_folder_in_one_rename(tmp_path):
    final = tmp_path / "step_1"
    with atomic_dir(final) as tmp:
        write_synced(tmp / "a.txt", "one")
    assert (final / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            write_synced(tmp / "a.txt", "two")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "one" and os.listdir(tmp_path) == ["step_1"]
    with atomic_dir(final) as tmp:
        write_synced(tmp / "b.txt", "three")
    assert os.listdir(final) == ["b.txt"] and os.listdir(tmp_path) == ["step_1"]


@dataclass
class _Toy:
    topk_tile: int = 1
    window: int = 2


def test_config_helpers_name_keys_and_renames():
    with pytest.raises(ValueError, match=r"unknown Toy keys \['windw'\].*did you mean 'window'"):
        reject_unknown_keys({"windw": 1}, _Toy, "Toy keys")
    with pytest.warns(FutureWarning, match="'block_size' is deprecated.*now called 'topk_tile'"):
        assert rename_keys({"block_size": 4}, {"block_size": "topk_tile"}, "Toy") == {"topk_tile": 4}
    with pytest.raises(ValueError, match="both 'block_size' \\(deprecated\\) and 'topk_tile'"):
        rename_keys({"block_size": 4, "topk_tile": 8}, {"block_size": "topk_tile"}, "Toy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = {"topk_tile": 4}
        assert rename_keys(data, {"block_size": "topk_tile"}, "Toy") == data  # nothing to rename: silent


def test_features_definitions():
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(0))
    f = featurize(x, "full")
    torch.testing.assert_close((f[0] @ f[0].T).diagonal(), torch.ones(7))
    weights = torch.zeros(16)
    weights[[0, 4]] = torch.tensor([3.0, 1.0])
    fb = featurize(x, "blocks", weights)
    units = block_units(x, "blocks")  # [2, 7, 16, 4]
    cos = (units[0, 1] * units[0, 5]).sum(-1)  # [16]
    torch.testing.assert_close(fb[0, 1] @ fb[0, 5], (weights / weights.sum() * cos).sum())
    with pytest.raises(ValueError, match="similarity='nope'"):
        featurize(x, "nope")
    pos = torch.arange(5)
    assert candidate_mask(pos, pos, causal=False, window=1).sum().item() == 12  # |i - j| > 1
    assert not candidate_mask(pos, pos, causal=True, window=0).triu().any()  # causal: j < i only
    table = sinusoidal_positions(6)
    torch.testing.assert_close(table[:, :16].pow(2) + table[:, 16:].pow(2), torch.ones(6, 16))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@settings(max_examples=200, deadline=None)
@given(mantissas=st.lists(st.floats(0.5, 1.0, exclude_max=True), min_size=8, max_size=8),
       exponents=st.lists(st.integers(-160, 128), min_size=8, max_size=8),
       signs=st.lists(st.booleans(), min_size=8, max_size=8), zeros=st.integers(0, 255), block=st.sampled_from([0, 2, 4]))
def test_float32_rescale_is_the_float64_route_bit_for_bit(mantissas, exponents, signs, zeros, block):
    """rescale's float32 path (no float64 copy) against the float64 route on the same values: the same bits.

    Values span float32's whole range: subnormals (2^-149..), 1e38, exact zeros, and rows whose largest
    value needs scaling up (small) or down (>= 1), so each branch rounds (or not) where the reference does.
    """
    m = np.array(mantissas) * np.where(signs, -1.0, 1.0)
    x = torch.from_numpy(np.ldexp(m, exponents)).float()  # float32 rounding of the float64 value: finite, maybe 0
    x = torch.where(torch.tensor([(zeros >> i) & 1 == 1 for i in range(8)]), torch.zeros(()), x)
    x = x.reshape(1, 8)
    want = rescale(x.double(), block)  # the float64 route: exact product, one rounding to float32
    got = rescale(x, block)
    assert got.dtype == torch.float32
    assert torch.equal(_bits(got), _bits(want)), (x, got, want)
    assert torch.equal(_bits(rescale(x.to(torch.bfloat16), block)), _bits(rescale(x.to(torch.bfloat16).double(), block)))


def test_rescale_brings_each_row_or_block_into_half_to_one():
    x = torch.tensor([[3e38, -1e-3, 0.0, 5.0], [2.0 ** -149, 2.0 ** -148, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = rescale(x)
    assert torch.equal(out[2], torch.zeros(4))  # an all-zero row stays zero
    top = out[:2].abs().amax(-1)
    assert bool(((top >= 0.5) & (top < 1)).all())
    assert out[1, 1] == 2 * out[1, 0]  # subnormal inputs scale up exactly
    blocks = rescale(x, 2).unflatten(-1, (-1, 2)).abs().amax(-1)  # [3, 2] per 2-wide block
    assert bool(((blocks >= 0.5) & (blocks < 1) | (blocks == 0)).all())
