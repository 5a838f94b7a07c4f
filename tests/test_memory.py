"""Parameter counts and memory footprints, checked against transformers' own models."""
import pytest
import torch

from lec19quant import memory

transformers = pytest.importorskip("transformers")


def hf_param_count(config: dict) -> int:
    """Build the model on the meta device (no memory) and count its parameters."""
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


TINY = dict(hidden_size=64, num_hidden_layers=3, intermediate_size=160, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1000)
VARIANTS = {
    "qwen3 untied": dict(TINY, model_type="qwen3", head_dim=24, tie_word_embeddings=False),
    "qwen3 tied, biases": dict(TINY, model_type="qwen3", head_dim=16, tie_word_embeddings=True, attention_bias=True),
    "qwen2 (q/k/v biases)": dict(TINY, model_type="qwen2", tie_word_embeddings=False),
    "llama tied": dict(TINY, model_type="llama", tie_word_embeddings=True),
    "llama biases": dict(TINY, model_type="llama", attention_bias=True, mlp_bias=True),
    "llama MHA, no kv key": dict({k: v for k, v in TINY.items() if k != "num_key_value_heads"}, model_type="llama"),
    "mistral": dict(TINY, model_type="mistral", tie_word_embeddings=False),
}


def test_qwen3_8b_has_the_published_count():
    assert memory.count_params(memory.CONFIGS["Qwen/Qwen3-8B"]) == 8_190_735_360


@pytest.mark.parametrize("name", list(memory.CONFIGS))
def test_shipped_configs_match_transformers(name):
    assert memory.count_params(memory.CONFIGS[name]) == hf_param_count(memory.CONFIGS[name])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_architecture_variants_match_transformers(name):
    assert memory.count_params(VARIANTS[name]) == hf_param_count(VARIANTS[name])


def test_a_transformers_config_object_is_accepted():
    cfg = transformers.AutoConfig.for_model(**memory.CONFIGS["HuggingFaceTB/SmolLM2-135M-Instruct"])
    assert memory.count_params(cfg) == 134_515_008  # the 134.5M of the model card


def test_breakdown_sums_to_the_count_and_ties_the_head():
    cfg = memory.CONFIGS["Qwen/Qwen3-0.6B"]
    parts = memory.param_breakdown(cfg)
    assert sum(parts.values()) == memory.count_params(cfg)
    assert parts["lm_head"] == 0 and parts["embedding"] == 151936 * 1024


def test_the_lectures_numbers_for_qwen3_8b():
    n = memory.count_params(memory.CONFIGS["Qwen/Qwen3-8B"])
    bf16 = memory.weight_bytes(n, "BF16")
    assert round(bf16 / memory.GB) == 16
    assert round(memory.footprint(n, "BF16") / memory.GB) == 25  # "≈ 24 GB" with 1.5× overhead
    assert not memory.fits(memory.footprint(n, "BF16"), "macbook-air-16gb")
    assert not memory.fits(memory.footprint(n, "BF16"), "t4")
    four_bit = memory.footprint(n, 4)
    assert 5 * memory.GB < four_bit < 6.5 * memory.GB
    assert memory.fits(four_bit, "macbook-air-16gb") and memory.fits(four_bit, "t4")
    assert memory.fits(memory.footprint(n, "BF16"), "a100-80gb")


def test_block_formats_count_their_scales():
    assert memory.BITS_PER_WEIGHT["Q4_K"] == 4.5
    assert memory.BITS_PER_WEIGHT["Q8_0"] == 8.5
    assert memory.BITS_PER_WEIGHT["Q6_K"] == 6.5625
    assert round(memory.BITS_PER_WEIGHT["NF4 (double quant)"] - 4, 3) == 0.127  # QLoRA's 0.127 bits
    assert memory.weight_bytes(256, "Q4_K") == 144  # one super-block


def test_devices():
    t4 = memory.DEVICES["t4"]
    # nvidia-smi's 15360 MiB, less CUDA's context (about 400 MB, pytorch/pytorch#109888)
    assert t4.usable == (15360 - 400) * 2**20 and t4.usable < t4.memory
    mac = memory.DEVICES["macbook-air-16gb"]
    assert round(mac.usable / 1e6, 2) == pytest.approx(11453.25, abs=0.01)  # 10922.67 MiB
    assert memory.fits(mac.usable, mac) and not memory.fits(mac.usable + 1, mac)


@pytest.mark.parametrize("change, match", [
    (dict(hidden_size=None), "missing 'hidden_size'"),
    (dict(intermediate_size=0), r"config\['intermediate_size'\] must be a positive int"),
    (dict(num_hidden_layers=2.5), "num_hidden_layers"),
    (dict(num_hidden_layers=True), "num_hidden_layers"),
    (dict(num_key_value_heads=3), "not a multiple of num_key_value_heads=3"),
    (dict(num_attention_heads=5), "num_attention_heads=5 is not a multiple"),
    (dict(num_experts=8), "mixture-of-experts"),
])
def test_bad_configs_are_named(change, match):
    cfg = {k: v for k, v in {**TINY, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=match):
        memory.count_params(cfg)


def test_head_dim_must_divide_when_absent():
    with pytest.raises(ValueError, match="give head_dim"):
        memory.count_params(dict(TINY, num_attention_heads=6, num_key_value_heads=6))
    with pytest.raises(ValueError, match="missing 'head_dim'"):  # Qwen3's default is 128, not d / h
        memory.count_params(dict(TINY, model_type="qwen3"))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="config must be a dict"):
        memory.count_params([("hidden_size", 4)])
    with pytest.raises(ValueError, match="unknown format 'Q3'"):
        memory.weight_bytes(10, "Q3")
    with pytest.raises(ValueError, match="positive number"):
        memory.weight_bytes(10, 0)
    with pytest.raises(ValueError, match="non-negative int"):
        memory.weight_bytes(-1, 4)
    with pytest.raises(ValueError, match="factor ≥ 1"):
        memory.footprint(10, 4, overhead=0.5)
    with pytest.raises(ValueError, match="unknown device 'iphone'"):
        memory.fits(1, "iphone")


def test_get_config_returns_a_copy():
    cfg = memory.get_config("Qwen/Qwen3-8B")
    cfg["hidden_size"] = 1
    assert memory.CONFIGS["Qwen/Qwen3-8B"]["hidden_size"] == 4096


def test_kv_cache_matches_the_cache_transformers_builds():
    config = VARIANTS["qwen3 untied"]
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    out = model.to(torch.bfloat16)(torch.randint(0, 1000, (2, 7)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    n_bytes = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    assert memory.kv_cache_bytes(config, n_tokens=7, bits=16, batch=2) == n_bytes


def test_kv_cache_of_qwen3_8b_per_token():
    # 2 · 36 layers · 8 kv heads · 128 dims · 2 bytes = 147,456 bytes per token in BF16
    assert memory.kv_cache_bytes(memory.CONFIGS["Qwen/Qwen3-8B"], 1) == 147_456
    with pytest.raises(ValueError, match="n_tokens"):
        memory.kv_cache_bytes(memory.CONFIGS["Qwen/Qwen3-8B"], -1)


def test_inference_bytes_are_the_tensors_a_model_holds_while_it_runs():
    """Weights + KV cache + runtime: the bytes of a real float16 model's parameters and of the cache
    it builds over the context, plus the allowance."""
    config = VARIANTS["llama tied"]
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    model = model.to(torch.float16)
    out = model(torch.randint(0, 1000, (1, 11)), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    kv = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    weights = sum(p.nbytes for p in model.parameters())
    assert memory.inference_bytes(config, "FP16", context=11, runtime=1000) == weights + kv + 1000
    assert memory.inference_bytes(config, 16, context=0, runtime=0) == weights


def test_the_rule_of_thumb_and_the_count_differ_where_the_issue_says():
    """1.5× the weights puts 8 GB of overhead beside BF16 and 2.3 GB beside Q4_K; the KV cache of
    4,096 tokens is 0.6 GB in both."""
    config = memory.CONFIGS["Qwen/Qwen3-8B"]
    n = memory.count_params(config)
    for fmt, rule_overhead in [("BF16", 8.2), ("Q4_K", 2.3)]:
        weights = memory.weight_bytes(n, fmt)
        assert round((memory.footprint(n, fmt) - weights) / memory.GB, 1) == rule_overhead
        overhead = memory.inference_bytes(config, fmt) - weights
        assert overhead == 147_456 * 4096 + memory.RUNTIME
    assert not memory.fits(memory.inference_bytes(config, "BF16"), "t4")
    assert memory.fits(memory.inference_bytes(config, "Q4_K", context=32768), "macbook-air-16gb")


@pytest.mark.parametrize("runtime", [-1, float("nan"), True, "1 GB"])
def test_inference_bytes_rejects_a_bad_runtime(runtime):
    with pytest.raises(ValueError, match="runtime must be a non-negative number"):
        memory.inference_bytes(memory.CONFIGS["Qwen/Qwen3-8B"], "BF16", runtime=runtime)


def test_size_ratio_of_bf16_to_q4_k_is_ggmls_block_size():
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_K]  # 256 weights in 144 bytes
    assert memory.size_ratio("BF16", "Q4_K") == 16 / (type_size * 8 / block)
    assert round(memory.size_ratio("BF16", "Q4_K"), 1) == 3.6
    assert memory.size_ratio(8, 4) == 2.0
    with pytest.raises(ValueError, match="unknown format 'Q3'"):
        memory.size_ratio("BF16", "Q3")
