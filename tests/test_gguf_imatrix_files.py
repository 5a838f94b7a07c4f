"""Recipes and GGUF files with an importance matrix: llama-quant.cpp's rules for the K-quant and
IQ4 file types (read from src/llama-quant.cpp of the bundled llama.cpp), `write_gguf(imatrix=)`
bytes against ggml with the same weights, and sizes predicted exactly."""
import gguf
import numpy as np
import pytest
import torch
from oracles.ggml import ggml  # noqa: F401  (the session fixture)
from test_gguf_io import tiny, tokenizer  # noqa: F401  (fixtures: a 2-layer Llama, a small BPE)

from lec19quant import memory
from lec19quant.gguf import imatrix, io, recipes

QWEN = recipes.model_tensors(memory.CONFIGS["Qwen/Qwen3-8B"])  # 36 layers, 32 query heads per 8 key/value heads


def kinds(types, kind):
    """The formats of one kind of matrix, layer by layer."""
    n = sum(name.endswith(f".{kind}.weight") for name in types)
    return [types[f"blk.{i}.{kind}.weight"] for i in range(n)]


def test_q2_k_on_qwen3():
    t = recipes.choose_types(QWEN, "Q2_K")
    assert set(kinds(t, "attn_v")) == {"Q4_K"}  # 4 query heads per key/value head
    assert set(kinds(t, "ffn_down")) == set(kinds(t, "attn_output")) == {"Q3_K"}
    assert set(kinds(t, "attn_q")) == set(kinds(t, "ffn_up")) == {"Q2_K"}
    assert t["output.weight"] == "Q6_K" and t["token_embd.weight"] == "Q2_K"
    assert recipes.choose_types(QWEN, "Q2_K", imatrix=True) == t  # the importance changes bytes, not formats


def test_q3_k_recipes_on_qwen3():
    m = recipes.choose_types(QWEN, "Q3_K_M")
    assert kinds(m, "attn_v") == ["Q5_K"] * 2 + ["Q4_K"] * 34
    assert kinds(m, "ffn_down") == ["Q5_K"] * 2 + ["Q4_K"] * 34  # 36 // 16 = 2
    assert set(kinds(m, "attn_output")) == {"Q4_K"} and set(kinds(m, "ffn_gate")) == {"Q3_K"}
    large = recipes.choose_types(QWEN, "Q3_K_L")
    assert set(kinds(large, "attn_v")) == set(kinds(large, "ffn_down")) == set(kinds(large, "attn_output")) == {"Q5_K"}
    small = recipes.choose_types(QWEN, "Q3_K_S")
    assert {q for n, q in small.items() if n.startswith("blk.") and "norm" not in n} == {"Q3_K"}


@pytest.mark.parametrize("ftype", ["IQ4_XS", "IQ4_NL"])
def test_iq4_recipes_depend_on_the_imatrix(ftype):
    without = recipes.choose_types(QWEN, ftype)
    with_ = recipes.choose_types(QWEN, ftype, imatrix=True)
    assert kinds(without, "ffn_down") == ["Q5_K"] * 4 + [ftype] * 32  # the first eighth, without an imatrix
    assert kinds(with_, "ffn_down") == [ftype] * 36
    assert set(kinds(with_, "attn_v")) == {"Q5_K"} and set(kinds(with_, "attn_k")) == {ftype}
    assert with_["output.weight"] == "Q6_K"


def test_the_running_example_falls_back_to_blocks_of_32():
    smollm2 = recipes.model_tensors(memory.CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"])
    t = recipes.choose_types(smollm2, "IQ4_XS", imatrix=True)
    assert set(kinds(t, "attn_q")) == {"IQ4_NL"}  # rows of 576: IQ4_XS → IQ4_NL
    assert set(kinds(t, "ffn_down")) == {"IQ4_XS"}  # rows of 1536
    q2 = recipes.choose_types(smollm2, "Q2_K")
    assert set(kinds(q2, "attn_q")) == {"Q4_0"} and set(kinds(q2, "ffn_down")) == {"Q3_K"}
    assert q2["token_embd.weight"] == "Q8_0"  # tied to the head, rows of 576


def _importance(model, seed=0):
    """A synthetic importance matrix for every block matrix of `model`."""
    g = np.random.default_rng(seed)
    sums = {name: (g.random(m.in_features) ** 4 * 50).astype(np.float32) for name, m in imatrix.matrices(model).items()}
    return imatrix.ImportanceMatrix(sums, dict.fromkeys(sums, 100), chunk_count=2, chunk_size=50, datasets=["sotu"])


@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ4_XS", "Q2_K"])
def test_write_gguf_with_an_imatrix(tiny, tokenizer, tmp_path, ggml, ftype):  # noqa: F811
    imat = _importance(tiny)
    path = tmp_path / "tiny.gguf"
    types = io.write_gguf(tiny, tokenizer, path, ftype, progress=False, imatrix=imat)
    assert path.stat().st_size == io.predict_size(tiny.config, ftype, tokenizer, imatrix=imat).total
    reader = gguf.GGUFReader(path)
    assert reader.fields["quantize.imatrix.entries_count"].contents() == 14
    assert reader.fields["quantize.imatrix.dataset"].contents() == "sotu"
    params = tiny.state_dict()
    names = io.gguf_names(tiny)
    raw = {t.name: np.asarray(t.data) for t in reader.tensors}
    for hf_name, name in names.items():
        qtype = types[name]
        if qtype == "F32":
            continue
        w = params[hf_name].numpy()
        heads = {"attn_q": 4, "attn_k": 2}.get(name.split(".")[-2])
        if heads:
            w = io.rope_interleave(torch.from_numpy(w), heads).numpy()
        weights = imat.weights(name) if name in imat else None  # the head and embedding have none
        assert np.array_equal(raw[name], ggml.quantize(w, qtype, weights)), name
    weighted, _ = io.quantized_weights(tiny, ftype, imatrix=imat)
    plain, _ = io.quantized_weights(tiny, ftype)
    assert not torch.equal(weighted["model.layers.0.mlp.down_proj.weight"], plain["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(weighted["lm_head.weight"], plain["lm_head.weight"])


def test_a_cache_keeps_the_bytes_of_each_importance_matrix_apart(tiny):  # noqa: F811
    cache = {}
    a, _ = io.quantized_weights(tiny, "Q4_K_M", cache, imatrix=_importance(tiny, 1))
    b, _ = io.quantized_weights(tiny, "Q4_K_M", cache, imatrix=_importance(tiny, 2))
    c, _ = io.quantized_weights(tiny, "Q4_K_M", cache)
    name = "model.layers.1.mlp.up_proj.weight"
    assert not torch.equal(a[name], b[name]) and not torch.equal(a[name], c[name])


def test_only_some_tensors_are_quantized(tiny):  # noqa: F811
    weights, _ = io.quantized_weights(tiny, "Q4_K_M", only=lambda name: name.startswith("blk.1."))
    params = tiny.state_dict()
    assert torch.equal(weights["model.layers.0.mlp.down_proj.weight"], params["model.layers.0.mlp.down_proj.weight"])
    assert torch.equal(weights["lm_head.weight"], params["lm_head.weight"])
    changed = weights["model.layers.1.mlp.down_proj.weight"]
    assert not torch.equal(changed, params["model.layers.1.mlp.down_proj.weight"])
    full, _ = io.quantized_weights(tiny, "Q4_K_M")
    assert torch.equal(changed, full["model.layers.1.mlp.down_proj.weight"])
