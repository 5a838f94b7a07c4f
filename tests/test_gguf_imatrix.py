"""Importance matrices as llama.cpp's llama-imatrix computes and stores them (oracle for the file
layout: gguf.GGUFReader)."""
import struct

import gguf
import numpy as np
import pytest
import torch

from lec19quant import models
from lec19quant.gguf import imatrix

CHUNK = 64  # tokens per chunk (llama-imatrix -c 64)
CHUNKS = 2


@pytest.fixture(scope="module")
def model():
    return models.load_model()


@pytest.fixture(scope="module")
def text():
    return models.load_text("sotu", "train")[:6000]


@pytest.fixture(scope="module")
def collected(model, text):
    _, tokenizer = model
    return imatrix.collect(model[0], tokenizer(text)["input_ids"], chunk_size=CHUNK, chunks=CHUNKS, dataset="sotu")


def test_entries_are_the_block_matrices_not_the_head(model, collected):
    names = sorted(collected.sums)
    assert len(names) == 210 == 7 * 30  # attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
    assert {n.split(".")[2] for n in names} == {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                                "ffn_down"}
    assert "output.weight" not in collected and "token_embd.weight" not in collected
    assert set(collected.counts.values()) == {CHUNK * CHUNKS}
    assert collected.sums["blk.0.ffn_down.weight"].shape == (1536,) and collected.sums["blk.0.attn_q.weight"].shape == (576,)
    assert (collected.chunk_count, collected.chunk_size, collected.datasets) == (CHUNKS, CHUNK, ["sotu"])


def test_sums_are_the_squares_of_each_layers_input(model, text, collected):
    """Σx² of one layer's input, captured independently by a forward hook, chunk by chunk."""
    net, tokenizer = model
    ids = torch.tensor(tokenizer(text)["input_ids"][:CHUNK * CHUNKS]).reshape(CHUNKS, CHUNK)
    seen = []
    hook = net.model.layers[4].mlp.down_proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        with torch.no_grad():
            for chunk in ids:
                net(chunk[None])
    finally:
        hook.remove()
    want = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).double().square().sum(0).float().numpy()
    np.testing.assert_allclose(collected.sums["blk.4.ffn_down.weight"], want, rtol=1e-6)
    np.testing.assert_allclose(collected.weights("blk.4.ffn_down.weight"), want / (CHUNK * CHUNKS), rtol=1e-6)


def test_gguf_file_layout(tmp_path, collected):
    path = collected.save(tmp_path / "imatrix.gguf")
    reader = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert fields == {"general.type": "imatrix", "imatrix.datasets": ["sotu"], "imatrix.chunk_count": CHUNKS,
                      "imatrix.chunk_size": CHUNK}
    names = [t.name for t in reader.tensors]
    assert names[:2] == ["blk.0.attn_k.weight.in_sum2", "blk.0.attn_k.weight.counts"] and len(names) == 420
    first = reader.tensors[0]
    # one dimension, as llama-imatrix writes a dense matrix's entry (test_imatrix_llama_cpp: the same bytes)
    assert first.tensor_type == gguf.GGMLQuantizationType.F32 and list(first.shape) == [576]
    assert np.array_equal(np.asarray(first.data).ravel(), collected.sums["blk.0.attn_k.weight"])
    assert float(np.asarray(reader.tensors[1].data).ravel()[0]) == CHUNK * CHUNKS


def test_files_round_trip(tmp_path, collected):
    back = imatrix.ImportanceMatrix.load(collected.save(tmp_path / "a.gguf"))
    assert back.counts == collected.counts and all(np.array_equal(back.sums[k], v) for k, v in collected.sums.items())
    assert (back.chunk_count, back.chunk_size, back.datasets) == (CHUNKS, CHUNK, ["sotu"])
    legacy = imatrix.ImportanceMatrix.load(collected.save(tmp_path / "a.dat", legacy=True))
    assert legacy.chunk_count == CHUNKS and legacy.datasets == ["sotu"] and legacy.chunk_size == 0
    for name in collected.sums:  # the legacy file keeps the mean times the chunks: the weights survive
        np.testing.assert_allclose(legacy.weights(name), collected.weights(name), rtol=1e-6)


def test_legacy_bytes_as_specified(tmp_path):
    imat = imatrix.ImportanceMatrix({"blk.0.b": np.array([2.0, 4.0], np.float32), "blk.0.a": np.array([9.0], np.float32)},
                                    {"blk.0.b": 5, "blk.0.a": 3}, chunk_count=3, chunk_size=2, datasets=["t.txt"])
    data = imat.save(tmp_path / "x.dat", legacy=True).read_bytes()
    # sorted names; ncall = ceil(count / chunk_size); values (sum/count)·ncall; then chunks and dataset
    want = (struct.pack("<i", 2) + struct.pack("<i", 7) + b"blk.0.a" + struct.pack("<iif", 2, 1, 9.0 / 3 * 2)
            + struct.pack("<i", 7) + b"blk.0.b" + struct.pack("<iiff", 3, 2, 2.0 / 5 * 3, 4.0 / 5 * 3)
            + struct.pack("<ii", 3, 5) + b"t.txt")
    assert data == want


def test_bad_input_is_named(tmp_path, model):
    net, _ = model
    with pytest.raises(ValueError, match="chunk_size must be an int ≥ 16"):
        imatrix.collect(net, list(range(100)), chunk_size=8)
    with pytest.raises(ValueError, match="do not make one chunk"):
        imatrix.collect(net, list(range(20)), chunk_size=32)
    with pytest.raises(ValueError, match="chunks must be None or a positive int"):
        imatrix.collect(net, list(range(64)), chunk_size=32, chunks=0)
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x02\x00\x00\x00garbage")
    with pytest.raises(ValueError, match="neither a GGUF nor a legacy imatrix file"):
        imatrix.ImportanceMatrix.load(bad)
    with pytest.raises(KeyError, match="no entry for 'output.weight'"):
        imatrix.ImportanceMatrix({}, {}).weights("output.weight")
    with pytest.raises(ValueError, match="chunk_size must be > 0"):
        imatrix.ImportanceMatrix({"a": np.ones(2, np.float32)}, {"a": 1}).save(tmp_path / "y.dat", legacy=True)


def test_weights_of_an_entry_without_tokens_are_ones():
    imat = imatrix.ImportanceMatrix({"a": np.full(3, 7, np.float32)}, {"a": 0})
    assert imat.weights("a").tolist() == [1, 1, 1]
