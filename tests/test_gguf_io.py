"""Writing GGUF files and reading them back: exhaustively on a tiny random Llama with the
running example's tokenizer, and once on the running example itself."""
import copy

import gguf
import numpy as np
import pytest
import torch

from lec19quant import models
from lec19quant.gguf import blocks, io


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE of 300 tokens trained on a page of the evaluation text."""
    import transformers
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers.models import BPE

    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([models.load_text("moby-dick")[:20_000]], trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer Llama whose rows fit the K-quants (256, 512)."""
    import transformers

    config = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                      tie_word_embeddings=False, rope_theta=10000.0, max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q4_K_S", "Q8_0"])
def test_tiny_round_trip_is_exact(tiny, tokenizer, tmp_path, ftype):
    path = tmp_path / "tiny.gguf"
    types = io.write_gguf(tiny, tokenizer, path, ftype, progress=False)
    assert path.stat().st_size == io.predict_size(tiny.config, ftype, tokenizer).total
    assert not path.with_name("tiny.gguf.partial").exists()
    contents = io.read_gguf(path)
    assert contents.types == types and types["output.weight"] == ("Q8_0" if ftype == "Q8_0" else "Q6_K")
    loaded = io.load_weights(copy.deepcopy(tiny), contents).state_dict()
    expected, _ = io.quantized_weights(tiny, ftype)
    assert set(loaded) == set(expected)
    for name, w in expected.items():
        assert torch.equal(loaded[name], w), name
    reader = gguf.GGUFReader(path)
    q = tiny.state_dict()["model.layers.1.self_attn.q_proj.weight"]
    raw = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert np.array_equal(raw["blk.1.attn_q.weight"], blocks.quantize(io.rope_interleave(q, 4), types["blk.1.attn_q.weight"]))
    assert contents.metadata["tokenizer.ggml.tokens"][:2] == ["<|endoftext|>", "!"]
    assert len(contents.metadata["tokenizer.ggml.tokens"]) == 512  # padded to the model's vocabulary


def test_recipes_share_a_cache(tiny, tokenizer, tmp_path):
    cache = {}
    q6, _ = io.quantized_weights(tiny, "Q6_K", cache)
    assert len(cache) == 16  # the 2-D weights: embedding, head, 7 per layer
    io.quantized_weights(tiny, "Q8_0", cache)
    assert len(cache) == 32
    q4, types = io.quantized_weights(tiny, "Q4_K_S", cache)
    assert types["output.weight"] == "Q6_K" and types["blk.1.attn_v.weight"] == "Q5_K"
    assert len(cache) == 32 + 15  # all but the head are new: Q4_K, and Q5_K for attn_v
    assert torch.equal(q4["lm_head.weight"], q6["lm_head.weight"])
    path = tmp_path / "cached.gguf"
    io.write_gguf(tiny, tokenizer, path, "Q4_K_S", progress=False, cache=cache)
    assert len(cache) == 47  # everything was there
    fresh = tmp_path / "fresh.gguf"
    io.write_gguf(tiny, tokenizer, fresh, "Q4_K_S", progress=False)
    assert path.read_bytes() == fresh.read_bytes()


def test_truncated_and_corrupt_files_are_named(tiny, tokenizer, tmp_path):
    path = tmp_path / "tiny.gguf"
    io.write_gguf(tiny, tokenizer, path, "Q8_0", progress=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])  # inside the last tensor
    with pytest.raises(io.GGUFError, match=r"cut.gguf \(.* bytes\) is truncated or corrupt: gguf cannot parse"):
        io.read_gguf(cut)
    cut.write_bytes(data[:5000])  # inside the tokenizer's arrays
    with pytest.raises(io.GGUFError, match="truncated or corrupt"):
        io.read_gguf(cut)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04" + data[4:1000])
    with pytest.raises(io.GGUFError, match="not a GGUF file: it starts with b'PK"):
        io.read_gguf(bad)
    bad.write_bytes(data[:24] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(io.GGUFError, match="truncated or corrupt"):
        io.read_gguf(bad)


def test_write_refuses_what_it_cannot_write(tiny, tokenizer, tmp_path):
    with pytest.raises(ValueError, match="unknown file type"):
        io.write_gguf(tiny, tokenizer, tmp_path / "x.gguf", "Q3_K_XL")
    scaled = copy.deepcopy(tiny)
    scaled.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}
    with pytest.raises(ValueError, match="RoPE scaling 'llama3'"):
        io.write_gguf(scaled, tokenizer, tmp_path / "x.gguf", "Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_rope_reordering_is_a_permutation_of_rows():
    w = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(16, 3)  # 2 heads of 8 rows
    inter = io.rope_interleave(w, 2)
    assert inter[:, 0].tolist()[:8] == [0, 12, 3, 15, 6, 18, 9, 21]  # head 0: rows 0, 4, 1, 5, 2, 6, 3, 7
    assert torch.equal(io.rope_deinterleave(inter, 2), w)


@pytest.fixture(scope="module")
def example():
    return models.load_model()


@pytest.fixture(scope="module")
def written(example, tmp_path_factory):
    model, tokenizer = example
    path = tmp_path_factory.mktemp("gguf") / "smollm2-q4_k_m.gguf"
    types = io.write_gguf(model, tokenizer, path, "Q4_K_M", tokenizer_pre="smollm", progress=False)
    return path, types


def test_the_running_example_round_trip(example, written):
    model, tokenizer = example
    path, types = written
    assert path.stat().st_size == io.predict_size(model.config, "Q4_K_M", tokenizer, tokenizer_pre="smollm").total
    contents = io.read_gguf(path)
    assert contents.types == types and "output.weight" not in types  # the head is tied
    assert types["blk.0.ffn_down.weight"] == "Q6_K" and types["blk.3.ffn_down.weight"] == "Q4_K"
    m = contents.metadata
    assert m["general.architecture"] == "llama" and m["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    assert m["llama.block_count"] == 30 and m["llama.embedding_length"] == 576
    assert m["llama.attention.head_count"] == 9 and m["llama.attention.head_count_kv"] == 3
    assert m["llama.rope.freq_base"] == 100000.0 and m["llama.rope.dimension_count"] == 64
    assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == "smollm"
    assert len(m["tokenizer.ggml.tokens"]) == 49152 and len(m["tokenizer.ggml.merges"]) == 48900
    assert m["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert m["tokenizer.ggml.token_type"][:4] == [3, 3, 3, 3] and m["tokenizer.ggml.token_type"][100] == 1
    assert m["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id == 2
    assert m["tokenizer.chat_template"] == tokenizer.chat_template
    loaded = io.load_weights(copy.deepcopy(model), contents).state_dict()
    params = model.state_dict()
    for hf_name, qtype in [("model.layers.3.mlp.down_proj.weight", "Q4_K"), ("model.layers.0.mlp.down_proj.weight", "Q6_K"),
                           ("model.layers.3.self_attn.q_proj.weight", "Q5_0"), ("model.layers.0.self_attn.v_proj.weight", "Q8_0")]:
        w = params[hf_name]
        assert torch.equal(loaded[hf_name], blocks.dequantize(blocks.quantize(w, qtype), qtype, w.shape)), hf_name
    assert torch.equal(loaded["model.layers.2.input_layernorm.weight"], params["model.layers.2.input_layernorm.weight"])


def test_gguf_reader_sees_the_running_example_bytes(example, written):
    model, _ = example
    found = {t.name: t for t in gguf.GGUFReader(written[0]).tensors}
    params = model.state_dict()
    k = params["model.layers.5.self_attn.k_proj.weight"]
    expected = {"blk.5.ffn_down.weight": ("Q6_K", params["model.layers.5.mlp.down_proj.weight"]),
                "blk.5.attn_k.weight": ("Q5_0", io.rope_interleave(k, 3)),
                "blk.5.attn_v.weight": ("Q8_0", params["model.layers.5.self_attn.v_proj.weight"])}
    for name, (qtype, w) in expected.items():
        assert found[name].tensor_type.name == qtype
        assert found[name].shape.tolist() == list(reversed(w.shape))
        assert np.array_equal(np.asarray(found[name].data), blocks.quantize(w, qtype)), name
