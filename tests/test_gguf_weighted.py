"""Quantizing with an importance matrix, and the IQ4 formats, give ggml's bytes and floats exactly
(oracle: ggml_quantize_chunk with its imatrix argument, built by tests/oracles/ggml.py, and
gguf.quants for decoding)."""
import gguf
import numpy as np
import pytest
import torch
from oracles.ggml import ggml  # noqa: F401  (the session fixture)
from test_gguf_blocks import KINDS, rows, same_floats

from lec19quant.gguf import blocks, iquants

WEIGHTED = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
K = 512


def importance(kind: str, n: int = K) -> np.ndarray:
    """Importance per column: like real ones (squares of activations, a few channels far larger),
    and adversarial."""
    g = np.random.default_rng(len(kind))
    a = g.standard_normal((64, n)).astype(np.float32)
    a[:, 5] *= 40  # an outlier channel
    typical = (a * a).mean(axis=0).astype(np.float32)
    if kind == "typical":
        return typical
    if kind == "zeros":
        return np.zeros(n, np.float32)
    if kind == "one huge":
        out = np.full(n, 1e-3, np.float32)
        out[300] = 1e30
        return out
    if kind == "one nonzero":
        out = np.zeros(n, np.float32)
        out[17] = 2.0
        return out
    if kind == "tiny":
        return typical * np.float32(1e-38)
    raise ValueError(kind)


IMPORTANCE = ["typical", "zeros", "one huge", "one nonzero", "tiny"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", WEIGHTED)
def test_weighted_bytes_equal_ggml(ggml, fmt, kind):
    x = rows(kind)
    for imp in IMPORTANCE:
        qw = importance(imp)
        ours, want = blocks.quantize(x, fmt, imatrix=qw), ggml.quantize(x, fmt, qw)
        bad = np.flatnonzero((ours != want).any(axis=1))
        assert bad.size == 0, f"{fmt} {kind}, importance {imp}: rows {bad.tolist()} differ from ggml"


@pytest.mark.parametrize("fmt", WEIGHTED)
def test_the_importance_changes_the_bytes(ggml, fmt):
    """The weighted search is not the reference one: on Gaussian rows the bytes differ."""
    x = rows("gaussian")
    assert not np.array_equal(blocks.quantize(x, fmt, imatrix=importance("typical")), blocks.quantize(x, fmt))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fmt", ["IQ4_NL", "IQ4_XS"])
def test_iq4_dequantize_equals_ggml_and_gguf_py(ggml, fmt, kind):
    x = rows(kind)
    raw = ggml.quantize(x, fmt, importance("typical"))
    ours = blocks.dequantize(torch.from_numpy(raw), fmt, x.shape).numpy()
    assert same_floats(ours.ravel(), ggml.to_float(raw, fmt, x.size))
    assert same_floats(ours, gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[fmt]))


def test_levels_are_ggmls_and_gguf_pys():
    assert np.array_equal(iquants.LEVELS, np.asarray(gguf.quants.IQ4_NL.kvalues, np.float32))


def test_nearest_level_ties_and_ends():
    v = np.array([-1e9, -127, -115.5, -115.6, 0, -4.5, 113, 1e9, np.nan], np.float32)
    # −115.5 is halfway between −127 and −104: ggml keeps the upper level; −4.5 between −10 and 1
    assert iquants.nearest_level(v).tolist() == [0, 0, 1, 0, 8, 8, 15, 15, 15]


def test_weighted_real_weights_with_real_importance(ggml):
    """Every weighted format on real weights of the running example with the importance of their
    input channels collected on real text (a layer's attention and MLP inputs)."""
    from lec19quant import models
    from lec19quant.gguf import imatrix

    model, tok = models.load_model()
    imat = imatrix.collect(model, tok(models.load_text("sotu", "train")[:2000])["input_ids"], chunk_size=64, chunks=1)
    layer = model.model.layers[5]
    compared = 0
    for name, weight in (("blk.5.attn_q.weight", layer.self_attn.q_proj.weight),
                         ("blk.5.ffn_down.weight", layer.mlp.down_proj.weight)):
        x, qw = weight.detach().numpy()[:64], imat.weights(name)
        for fmt in WEIGHTED:
            if x.shape[1] % blocks.FORMATS[fmt].block_size == 0:
                assert np.array_equal(blocks.quantize(x, fmt, imatrix=qw), ggml.quantize(x, fmt, qw)), f"{fmt} {name}"
                compared += 1
    assert compared == 5 + 11  # rows of 576 take only the blocks of 32


def test_many_chunks_with_a_ragged_end_weighted(ggml, monkeypatch):
    monkeypatch.setattr(blocks, "CHUNK_WEIGHTS", 3 * 256)
    x, qw = rows("heavy-tailed"), importance("typical")
    for fmt in ("Q4_0", "Q4_K", "IQ4_NL"):
        assert np.array_equal(blocks.quantize(x, fmt, imatrix=qw), ggml.quantize(x, fmt, qw))


def test_q8_0_ignores_the_importance_as_ggml_does(ggml):
    x = rows("gaussian")
    assert np.array_equal(blocks.quantize(x, "Q8_0", imatrix=importance("typical")), ggml.quantize(x, "Q8_0"))


def test_bad_importance_is_named():
    x = np.ones((2, 256), np.float32)
    with pytest.raises(ValueError, match=r"one importance per column.*\(256,\)"):
        blocks.quantize(x, "Q4_K", imatrix=np.ones(128, np.float32))
    for bad in (np.nan, np.inf, -1.0):
        qw = np.ones(256, np.float32)
        qw[3] = bad
        with pytest.raises(ValueError, match="finite and ≥ 0"):
            blocks.quantize(x, "Q4_K", imatrix=qw)
    with pytest.raises(TypeError, match="numbers"):
        blocks.quantize(x, "Q4_K", imatrix=np.array(["a"] * 256))


def test_importance_may_be_a_tensor():
    x, qw = rows("gaussian"), importance("typical")
    assert np.array_equal(blocks.quantize(x, "IQ4_XS", imatrix=torch.from_numpy(qw)),
                          blocks.quantize(x, "IQ4_XS", imatrix=qw))
