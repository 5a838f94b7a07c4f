"""quantize_model swaps exactly the intended Linear layers, and the model still runs."""
import pytest
import torch
from torch import nn

from lec19quant import nn as qnn
from lec19quant.quantize import absmax_blockwise, dequantize_blockwise
from toy_models import ResidualReaders

transformers = pytest.importorskip("transformers")


def tiny_llama(tie=False):
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100, tie_word_embeddings=tie)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def linear_names(model):
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_every_linear_but_the_head_is_replaced_and_the_model_runs():
    model = tiny_llama()
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    names = linear_names(model)
    report = qnn.quantize_model(model, "w8-row")
    assert set(report.replaced) == names - {"lm_head"} and report.skipped == ["lm_head"]
    assert len(report.replaced) == 2 * 7
    assert linear_names(model) == {"lm_head"}
    assert all(isinstance(model.get_submodule(n), qnn.QuantizedLinear) for n in report.replaced)
    with torch.no_grad():
        after = model(ids).logits
    assert after.shape == before.shape and not torch.equal(after, before)
    assert torch.allclose(after, before, atol=0.05)  # 8-bit rows barely move a random model


def test_quantized_linear_computes_with_the_dequantized_weight():
    torch.manual_seed(1)
    linear = nn.Linear(96, 40)
    q = qnn.WeightOnlyRTN(4, "group", 32).quantize_linear(linear)
    codes, absmax = absmax_blockwise(linear.weight.detach(), 32, 4)
    assert torch.equal(q.codes, codes) and torch.equal(q.absmax, absmax)
    w_hat = dequantize_blockwise(codes, absmax, 32, 4)
    x = torch.randn(5, 96)
    assert torch.equal(q(x), nn.functional.linear(x, w_hat, linear.bias))
    assert q.codes.abs().max() == 7
    assert q.nbytes == 96 * 40 // 2 + (96 * 40 // 32) * 4 + 40 * 4


@pytest.mark.parametrize("name, block", [("w8-tensor", 64 * 128), ("w4-row", 64), ("w3-g32", 32)])
def test_granularity_sets_the_block(name, block):
    model = tiny_llama()
    qnn.quantize_model(model, name)
    up = model.model.layers[0].mlp.up_proj  # 64 → 128
    assert up.block_size == block and up.absmax.numel() == 64 * 128 // block
    assert up.bits == int(name[1])


def test_skip_patterns_and_a_custom_scheme():
    model = ResidualReaders(n_layers=3)

    class Halve:
        name = "halve"

        def quantize_linear(self, linear):
            return nn.Identity()

    report = qnn.quantize_model(model, Halve(), skip=("lm_head", "layers.0.*", "down_proj"))
    assert report.scheme == "halve"
    assert set(report.skipped) == {"lm_head", "layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj",
                                   "layers.0.self_attn.v_proj", "layers.0.self_attn.o_proj",
                                   "layers.0.mlp.up_proj", "layers.0.mlp.down_proj", "layers.1.mlp.down_proj",
                                   "layers.2.mlp.down_proj"}
    assert isinstance(model.layers[1].self_attn.q_proj, nn.Identity)
    assert isinstance(model.layers[0].self_attn.q_proj, nn.Linear)


def test_report_counts_bytes_and_tied_weights_once():
    model = tiny_llama(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    params = {p.data_ptr(): p.nbytes for p in model.parameters()}
    report = qnn.quantize_model(model, "w4-g32")
    assert report.bytes_before == sum(params.values())
    n = 2 * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 128 * 3)  # q, o; k, v; gate, up, down in 2 layers
    assert report.bytes_before - report.bytes_after == n * 4 - (n // 2 + n // 32 * 4)  # 4 bits + fp32 absmax per 32
    assert "w4-g32: 14 Linear layers quantized" in repr(report)


def test_scheme_names():
    assert qnn.get_scheme("w4-g128") == qnn.WeightOnlyRTN(4, "group", 128)
    assert qnn.get_scheme("w3-row").name == "w3-row"
    assert all(qnn.get_scheme(n).name == n for n in qnn.available_schemes())
    assert {"w8-tensor", "w4-row", "w4-g32", "w3-g32"} <= set(qnn.available_schemes())


@pytest.mark.parametrize("scheme, error, match", [
    ("int4", ValueError, "unknown scheme 'int4'"),
    ("w9-row", ValueError, "bits must be an int from 2 to 8"),
    ("w4-g0", ValueError, "group_size must be a positive int"),
    (42, TypeError, "quantize_linear"),
])
def test_bad_schemes(scheme, error, match):
    with pytest.raises(error, match=match):
        qnn.quantize_model(tiny_llama(), scheme)


def test_group_must_divide_the_rows():
    with pytest.raises(ValueError, match="in_features=64 is not a multiple of group_size=48"):
        qnn.quantize_model(tiny_llama(), "w4-g48")
    with pytest.raises(ValueError, match="group_size is required"):
        qnn.WeightOnlyRTN(4, "group")
