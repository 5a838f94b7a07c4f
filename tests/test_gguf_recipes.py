"""llama.cpp's per-tensor recipes and the size of a GGUF file."""
import pytest

from lec19quant import memory, models
from lec19quant.gguf import io, recipes

QWEN3_8B = memory.CONFIGS["Qwen/Qwen3-8B"]
SMOLLM2 = memory.CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"]


def test_use_more_bits_follows_llama_cpp():
    more = [i for i in range(36) if recipes.use_more_bits(i, 36)]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35]
    assert [i for i in range(30) if recipes.use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


@pytest.mark.parametrize("name", list(memory.CONFIGS))
def test_model_tensors_hold_every_parameter(name):
    tensors = recipes.model_tensors(memory.CONFIGS[name])
    total = sum(int(__import__("math").prod(shape)) for shape in tensors.values())
    assert total == memory.count_params(memory.CONFIGS[name])


def test_qwen3_8b_q4_k_m():
    tensors = recipes.model_tensors(QWEN3_8B)
    assert len(tensors) == 399
    types = recipes.choose_types(tensors, "Q4_K_M")
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"  # untied: the base type
    assert all(types[n] == "F32" for n in tensors if n.endswith("norm.weight"))
    more = {i for i in range(36) if recipes.use_more_bits(i, 36)}
    for i in range(36):
        want = "Q6_K" if i in more else "Q4_K"
        assert types[f"blk.{i}.attn_v.weight"] == types[f"blk.{i}.ffn_down.weight"] == want
        assert types[f"blk.{i}.attn_q.weight"] == types[f"blk.{i}.ffn_up.weight"] == "Q4_K"


def test_qwen3_8b_other_file_types():
    tensors = recipes.model_tensors(QWEN3_8B)
    small = recipes.choose_types(tensors, "Q4_K_S")
    assert [i for i in range(36) if small[f"blk.{i}.attn_v.weight"] == "Q5_K"] == [0, 1, 2, 3]
    assert [i for i in range(36) if small[f"blk.{i}.ffn_down.weight"] == "Q5_K"] == [0, 1, 2, 3]  # i < 36 // 8
    medium5 = recipes.choose_types(tensors, "Q5_K_M")
    assert medium5["blk.0.attn_v.weight"] == "Q6_K" and medium5["blk.4.attn_v.weight"] == "Q5_K"
    assert recipes.choose_types(tensors, "Q8_0")["output.weight"] == "Q8_0"
    assert set(recipes.choose_types(tensors, "Q6_K").values()) == {"Q6_K", "F32"}


def test_tied_small_model_falls_back_like_llama_cpp():
    types = recipes.choose_types(recipes.model_tensors(SMOLLM2), "Q4_K_M")
    assert types["token_embd.weight"] == "Q8_0"  # tied, so treated as the output; 576 % 256 ≠ 0
    assert types["blk.0.attn_q.weight"] == "Q5_0"  # Q4_K does not fit rows of 576
    assert types["blk.0.attn_v.weight"] == "Q8_0" and types["blk.3.attn_v.weight"] == "Q5_0"  # Q6_K → Q8_0
    assert types["blk.0.ffn_down.weight"] == "Q6_K" and types["blk.3.ffn_down.weight"] == "Q4_K"  # rows of 1536


def test_fallback_chain():
    assert recipes.fallback("Q4_K", 512) == "Q4_K"
    assert [recipes.fallback(t, 96) for t in ("Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q8_0")] == [
        "Q5_0", "Q5_1", "Q8_0", "Q4_0", "Q8_0"]
    assert recipes.fallback("Q4_K", 48) == recipes.fallback("Q8_0", 48) == "F16"


@pytest.mark.parametrize("ftype, published", [("Q4_K_M", 5.03), ("Q5_K_M", 5.85), ("Q6_K", 6.73), ("Q8_0", 8.71)])
def test_qwen3_8b_file_sizes_match_the_published_ones(ftype, published):
    size = io.predict_size(QWEN3_8B, ftype)
    assert round(size.gb, 2) == published
    assert size.tokenizer_estimated and 5.0e6 < size.header < 6.0e6  # ~5.6 MB of metadata, mostly tokenizer
    assert sum(size.types.values()) == 399


def test_tokenizer_estimate_is_what_the_running_example_file_holds():
    import gguf

    reader = gguf.GGUFReader(models.smollm2_gguf())
    arrays = [reader.fields[k] for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")]
    stored = sum(sum(part.nbytes for part in field.parts) for field in arrays)
    assert io.TOKENIZER_BYTES_PER_TOKEN == stored / len(arrays[0].data) == stored / 49_152


def test_bad_recipes_are_named():
    with pytest.raises(ValueError, match="unknown file type 'Q4_K_L'"):
        recipes.choose_types({}, "Q4_K_L")
    with pytest.raises(ValueError, match="model_type 'gpt2'"):
        recipes.model_tensors({**SMOLLM2, "model_type": "gpt2"})
    with pytest.raises(ValueError, match="no layer number"):
        recipes.choose_types({"attn_v.weight": (8, 256)}, "Q4_K_M")


def test_the_package_does_not_shadow_pypi_gguf():
    import gguf as pypi

    import lec19quant.gguf as ours
    from lec19quant.gguf import blocks, io

    assert hasattr(pypi, "GGUFWriter") and not hasattr(ours, "GGUFWriter")
    assert blocks.gguf is pypi and io.gguf is pypi and recipes.gguf is pypi
