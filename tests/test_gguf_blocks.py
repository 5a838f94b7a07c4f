"""GGUF block formats give llama.cpp's bytes and floats exactly (oracle: ggml, built from the
llama-cpp-python sdist by tests/oracles/ggml.py, and gguf.quants)."""
import gguf
import numpy as np
import pytest
import torch
from oracles.ggml import ggml  # noqa: F401  (the session fixture)

from lec19quant.gguf import blocks, scales

FORMATS = list(blocks.FORMATS)
K = 512  # two super-blocks, sixteen blocks of 32


def rows(kind: str) -> np.ndarray:
    """Rows of K float32 weights of one kind."""
    g = np.random.default_rng(KINDS.index(kind))
    normal = g.standard_normal((6, K)).astype(np.float32)
    if kind == "gaussian":
        return normal * np.float32(0.02)
    if kind == "heavy-tailed":
        return g.standard_t(2, (6, K)).astype(np.float32)
    if kind == "all-zero":
        return np.zeros((2, K), np.float32)
    if kind == "signed zeros":
        return np.where(g.random((2, K)) < 0.5, -0.0, 0.0).astype(np.float32)
    if kind == "constant":
        return np.array([[0.37] * K, [-1.5] * K, [1e-3] * K], np.float32)
    if kind == "tiny":
        return normal * np.float32(1e-30)
    if kind == "subnormal":
        return normal * np.float32(1e-40)
    if kind == "huge outlier":
        normal[:, 7] = 1e4
        normal[2, 300] = -6e4
        normal[3, ::32] = 500.0  # one per block of 32
        return normal
    if kind == "ties":  # values on rounding midpoints of the 8-bit and 4-bit grids
        return np.tile(np.arange(-127.5, 128.5, 0.5, dtype=np.float32)[:K], (2, 1))
    if kind == "opposite extremes":  # +a and −a in every block, in either order
        normal[:, 3::16], normal[:, 9::16] = 4.0, -4.0
        normal[1::2, 3::16], normal[1::2, 9::16] = -4.0, 4.0
        return normal
    if kind == "one-sided":
        return np.abs(normal) + np.float32(3)
    raise ValueError(kind)


KINDS = ["gaussian", "heavy-tailed", "all-zero", "signed zeros", "constant", "tiny", "subnormal", "huge outlier",
         "ties", "opposite extremes", "one-sided"]


def same_floats(a, b) -> bool:
    return np.array_equal(np.asarray(a, np.float32).view(np.int32), np.asarray(b, np.float32).view(np.int32))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_bytes_equal_llama_cpp(ggml, fmt, kind):
    x = rows(kind)
    ours = blocks.quantize(x, fmt)
    want = ggml.quantize(x, fmt)
    assert ours.dtype == np.uint8 and ours.shape == want.shape == (x.shape[0], ggml.row_bytes(fmt, K))
    bad = np.flatnonzero((ours != want).any(axis=1))
    assert bad.size == 0, f"{fmt} {kind}: rows {bad.tolist()} differ from llama.cpp"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_equals_ggml_and_gguf_py(ggml, fmt, kind):
    x = rows(kind)
    raw = ggml.quantize(x, fmt)
    ours = blocks.dequantize(torch.from_numpy(raw), fmt, x.shape)
    assert ours.dtype == torch.float32 and ours.shape == x.shape
    assert same_floats(ours.numpy().ravel(), ggml.to_float(raw, fmt, x.size))
    assert same_floats(ours.numpy(), gguf.quants.dequantize(raw, blocks.FORMATS[fmt].ggml_type))


@pytest.mark.parametrize("fmt", FORMATS)
def test_any_bytes_decode_like_ggml(ggml, fmt):
    """Decoding random blocks (finite scales) tests every bit of the layout, whoever encoded it."""
    f = blocks.FORMATS[fmt]
    g = np.random.default_rng(7)
    raw = g.integers(0, 256, (64, f.type_size), dtype=np.uint8)
    anatomy = f.unpack(torch.from_numpy(raw.copy()))
    for field in ("d", "dmin", "m"):  # overwrite the fp16 scales with finite values
        if field in anatomy:
            at = {"Q6_K": 208, "Q3_K": 108, "Q2_K": 80}.get(fmt, 0) + (2 if field in ("dmin", "m") else 0)
            raw[:, at:at + 2] = (g.standard_normal(64) * 0.01).astype("<f2").view(np.uint8).reshape(64, 2)
    ours = blocks.dequantize(torch.from_numpy(raw), fmt, (64 * f.block_size,))
    assert same_floats(ours.numpy(), ggml.to_float(raw, fmt, 64 * f.block_size))


def test_real_weights_of_the_running_example(ggml):
    from safetensors.torch import load_file

    from lec19quant import models

    saved = load_file(models._smollm2_dir() / "model.safetensors")  # the model's weights, without transformers
    weights = {"down_proj": saved["model.layers.3.mlp.down_proj.weight"],
               "q_proj": saved["model.layers.17.self_attn.q_proj.weight"],
               "embed_tokens": saved["model.embed_tokens.weight"][:2048]}
    compared = 0
    for name, w in weights.items():
        x = w.detach().numpy()
        for fmt in FORMATS:
            if x.shape[1] % blocks.FORMATS[fmt].block_size:
                continue
            ours, want = blocks.quantize(w, fmt), ggml.quantize(x, fmt)
            assert np.array_equal(ours, want), f"{fmt} on {name}"
            assert same_floats(blocks.dequantize(torch.from_numpy(ours), fmt, x.shape).numpy().ravel(),
                               ggml.to_float(want, fmt, x.size))
            compared += 1
    assert compared == 6 + 12 + 6  # q_proj and embed_tokens have rows of 576: only the blocks of 32 fit


def test_many_chunks_with_a_ragged_end(ggml, monkeypatch):
    monkeypatch.setattr(blocks, "CHUNK_WEIGHTS", 3 * 256)
    x = rows("heavy-tailed")
    for fmt in ("Q4_K", "Q8_0"):
        assert np.array_equal(blocks.quantize(x, fmt), ggml.quantize(x, fmt))


def test_half_precision_input_is_read_as_float32():
    x = torch.randn(3, 256)
    for dtype in (torch.float16, torch.bfloat16):
        assert np.array_equal(blocks.quantize(x.to(dtype), "Q4_K"), blocks.quantize(x.to(dtype).float(), "Q4_K"))


def test_one_dimensional_input_is_one_row():
    x = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    assert np.array_equal(blocks.quantize(x, "Q6_K"), blocks.quantize(x[None], "Q6_K"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_bits_per_weight_and_types(fmt):
    f = blocks.FORMATS[fmt]
    assert f.ggml_type.name == fmt
    assert gguf.GGML_QUANT_SIZES[f.ggml_type] == (f.block_size, f.type_size)
    assert blocks.quantize(np.ones((1, 256), np.float32), fmt).shape == (1, 256 // f.block_size * f.type_size)


def test_bad_input_is_named():
    x = np.ones((2, 256), np.float32)
    with pytest.raises(ValueError, match="unknown block format 'Q4_X'"):
        blocks.quantize(x, "Q4_X")
    with pytest.raises(ValueError, match="a row of 100 weights does not divide"):
        blocks.quantize(np.ones((2, 100), np.float32), "Q8_0")
    with pytest.raises(ValueError, match="blocks of 256"):
        blocks.quantize(np.ones((2, 288), np.float32), "Q4_K")
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[1, 3] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            blocks.quantize(y, "Q4_K")
    with pytest.raises(ValueError, match="non-empty"):
        blocks.quantize(np.ones((0, 256), np.float32), "Q4_K")
    with pytest.raises(TypeError, match="float"):
        blocks.quantize(torch.ones(2, 256, dtype=torch.int32), "Q4_K")
    raw = blocks.quantize(x, "Q4_K")
    with pytest.raises(ValueError, match="do not hold 512 weights of Q4_K: that takes 288"):
        blocks.dequantize(raw[:, :100], "Q4_K", (2, 256))
    with pytest.raises(TypeError, match="uint8"):
        blocks.dequantize(raw.astype(np.int16), "Q4_K", (2, 256))


def test_explain_block_of_q4_k():
    x = torch.randn(256) * torch.linspace(0.1, 2, 256)
    raw = torch.from_numpy(blocks.quantize(x, "Q4_K"))[0]
    block = blocks.explain_block(raw, "Q4_K")
    assert block.format == "Q4_K" and set(block.fields) == {"d", "dmin", "scales", "mins", "codes"}
    assert block["scales"].shape == block["mins"].shape == (8,) and block["codes"].shape == (8, 32)
    assert int(block["scales"].max()) == 63 and int(block["codes"].max()) <= 15  # the largest scale is 63·d
    q = raw.numpy()  # get_scale_min_k4, one j at a time, as REFERENCE.md states it
    for j in range(8):
        sc, m = ((q[4 + j] & 63, q[8 + j] & 63) if j < 4 else
                 ((q[12 + j - 4] & 0xF) | ((q[4 + j - 4] >> 6) << 4), (q[12 + j - 4] >> 4) | ((q[4 + j] >> 6) << 4)))
        assert (int(block["scales"][j]), int(block["mins"][j])) == (sc, m)
    d, dmin = block["d"].item(), block["dmin"].item()
    expected = (d * block["scales"].float())[:, None] * block["codes"].float() - (dmin * block["mins"].float())[:, None]
    assert torch.equal(block.values, expected.reshape(256))
    assert torch.equal(block.values, blocks.dequantize(raw, "Q4_K", (256,)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_explain_block_decodes_every_format(fmt):
    f = blocks.FORMATS[fmt]
    x = torch.randn(f.block_size)
    block = blocks.explain_block(blocks.quantize(x, fmt)[0], fmt)
    assert set(block.fields) == set(f.fields) and block["d"].dim() == 0
    assert block.values.shape == (f.block_size,) and (block.values - x).abs().max() < 0.6 * x.abs().max()
    with pytest.raises(ValueError, match="bytes do not hold"):
        blocks.explain_block(torch.zeros(f.type_size + 1, dtype=torch.uint8), fmt)


def test_sums_are_sequential_float32():
    """The trap: numpy's pairwise sum (and float64) differ from C's loop."""
    g = np.random.default_rng(3)
    a = (g.standard_normal((32, 4000)) * np.exp(3 * g.standard_normal((32, 4000)))).astype(np.float32)
    loop = a[0].copy()
    for row in a[1:]:
        loop = loop + row
    assert np.array_equal(scales.sequential_sum(a), loop)
    assert not np.array_equal(a.T.copy().sum(axis=1), loop)  # pairwise
    assert not np.array_equal(a.astype(np.float64).sum(axis=0).astype(np.float32), loop)


def test_nearest_int_is_round_half_even_like_ggml():
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, 1e6 + 0.5, -3.7, 4194303.0], np.float32)
    assert scales.nearest_int(v).tolist() == [0, 2, 2, 0, -2, 0, 1000000, -4, 4194303]
    assert scales.nearest_int(np.float32(np.nan)) == 0  # NaN's mantissa bits, as in C


def test_roundf_rounds_halves_away_from_zero():
    ties = np.arange(-127.5, 128, 1.0, dtype=np.float32)
    near = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                           np.float32([0.49999997, -0.49999997, 0.0, -0.0])])
    exact = np.sign(near.astype(np.float64)) * np.floor(np.abs(near.astype(np.float64)) + 0.5)
    assert np.array_equal(blocks._roundf(near), exact.astype(np.int32))
