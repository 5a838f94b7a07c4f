"""AWQ: the scale search equal to llm-compressor's (losses, chosen α, scales, folded weights),
the clip search against its definition, the salient-channel experiment, and the schemes."""
import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lec19quant import awq, groupwise, models, smoothquant
from lec19quant import nn as qnn
from oracles import llm_compressor as oracle


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_model()[1]


@pytest.fixture(scope="module")
def calibration(tokenizer):
    return torch.stack(models.token_windows(tokenizer, models.load_text("sotu", "train"), 64, 256))


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens, use_cache=False).logits


@pytest.mark.parametrize("bits", [3, 4])
def test_fake_quantize_is_what_group_quant_linear_stores(bits):
    """Ragged: 576 columns are four groups of 128 and one of 64."""
    linear = nn.Linear(576, 40)
    with torch.no_grad():
        linear.weight[3, :200] *= 50
        linear.weight[5] = 0
    stored = groupwise.GroupQuantLinear.from_linear(linear, bits, 128).dequantized_weight()
    assert torch.equal(awq.fake_quantize(linear.weight, bits, 128), stored)


def test_grid_equals_llm_compressors():
    from llmcompressor.modifiers.transform.awq import AWQModifier

    for duo in (False, True):
        for n in (20, 10):
            assert awq.grid(n, duo) == AWQModifier(duo_scaling=duo, n_grid=n)._get_grid_search_params()
    assert len(awq.grid()) == 20 and awq.grid()[-1] == (1.0, False)
    with pytest.raises(ValueError, match="n_grid"):
        awq.grid(2)


def test_weight_means_equal_llm_compressors():
    from compressed_tensors.quantization import QuantizationArgs
    from llmcompressor.modifiers.transform.awq import AWQModifier

    torch.manual_seed(0)
    linears = [nn.Linear(256, 64), nn.Linear(256, 32)]
    with torch.no_grad():
        linears[0].weight[:, 7] *= 100
        linears[1].weight[:, :64] = 0
    args = QuantizationArgs(num_bits=4, strategy="group", group_size=64, symmetric=False)
    for m in linears:
        m.quantization_scheme = SimpleNamespace(weights=args)
    expected = AWQModifier._compute_layer_means(linears)
    torch.testing.assert_close(awq.weight_means(linears, 64), expected.float(), rtol=1e-6, atol=0)


def test_awq_scales_are_normalized():
    m = torch.tensor([0.01, 0.5, 2.0, 300.0, 0.0])
    s = awq.awq_scales(m, 0.5)
    torch.testing.assert_close(s.max() * s.min(), torch.tensor(1.0))
    torch.testing.assert_close(s[1] / s[2], torch.tensor(0.5))
    assert s[4] == s.min()  # 0 is floored at 1e-4 before the normalization
    assert torch.equal(awq.awq_scales(m, 0.0), torch.ones(5))


@pytest.fixture(scope="module", params=[
    {"kv_heads": 4, "duo_scaling": False, "bits": 4, "group_size": 128},  # v_proj → o_proj included
    {"kv_heads": 2, "duo_scaling": True, "bits": 3, "group_size": 64},  # grouped-query: no v_proj → o_proj
], ids=["w4g128", "w3g64-duo-gqa"])
def llm_compressor_awq(request, tokenizer, calibration):
    """llm-compressor's AWQModifier + W{b}A16_ASYM on a 2-layer model, and our search on the same
    tokens with compressed-tensors' rounding plugged in (its float32 scales; `fake_quantize`
    stores float16 scales)."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    p = request.param
    model = oracle.tiny_llama(layers=2, kv_heads=p["kv_heads"], seed=11)
    scheme = {"num_bits": p["bits"], "type": "int", "symmetric": False, "strategy": "group", "group_size": p["group_size"]}
    recipe = [AWQModifier(duo_scaling=p["duo_scaling"]),
              QuantizationModifier(config_groups={"g": {"targets": ["Linear"], "weights": scheme}}, ignore=["lm_head"])]
    theirs, losses, scales = oracle.run(model, tokenizer, calibration, recipe)
    ours = copy.deepcopy(model)
    results = awq.apply_awq(ours, calibration, p["bits"], p["group_size"], duo_scaling=p["duo_scaling"],
                            quantizer=oracle.ct_quantizer(p["bits"], p["group_size"]))
    return p, model, theirs, losses, scales, ours, results


def test_awq_search_equals_llm_compressors(llm_compressor_awq):
    p, model, theirs, losses, scales, ours, results = llm_compressor_awq
    assert [r.group.smooth for r in results] == list(losses)  # the same groups, in the same order
    kinds = [r.group.kind for r in results]
    assert kinds == (["qkv", "o", "gate_up", "down"] if p["kv_heads"] == 4 else ["qkv", "gate_up", "down"]) * 2
    for r in results:
        their_losses = torch.tensor(losses[r.group.smooth], dtype=torch.float64)
        # float32 sums in other orders (llm-compressor sums mean |x| batch by batch): a weight that
        # lies at a rounding boundary may round the other way, which moves a loss by up to ~1%
        torch.testing.assert_close(torch.tensor(r.losses, dtype=torch.float64), their_losses, rtol=1e-2, atol=0)
        assert awq.grid(20, p["duo_scaling"])[int(their_losses.argmin())] == (r.alpha, r.duo_scaling)
        torch.testing.assert_close(r.scales, scales[r.group.smooth].float(), rtol=1e-5, atol=0)
        assert r.losses[0] > min(r.losses)  # the search found something better than no scaling
    for name in ("input_layernorm", "post_attention_layernorm"):  # folded: equal norm weights
        for i in (0, 1):
            full = f"model.layers.{i}.{name}"
            torch.testing.assert_close(ours.get_submodule(full).weight, theirs.get_submodule(full).weight,
                                       rtol=1e-5, atol=0)


def test_awq_without_clip_leaves_the_float_model_unchanged(llm_compressor_awq, calibration):
    _, model, _, _, _, ours, _ = llm_compressor_awq
    before, after = logits(model, calibration[:2]), logits(ours, calibration[:2])
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def test_clip_search_minimizes_the_partial_product_error():
    """The bound chosen for each (row, group) is the candidate whose rounded group gives the
    smallest mean of (Σ_c x_c·(ŵ_c − w_c))² over the tokens, computed here product by product."""
    torch.manual_seed(0)
    w = torch.randn(6, 96)
    w[0, 5] = 40.0  # an outlier weight that clipping should cut
    x = torch.randn(50, 96)
    x[:, 5] *= 0.01  # ... because its input is small
    bound = awq.search_clip(w, x, 3, 32)
    assert bound.shape == (6, 3)
    peak = w.view(6, 3, 32).abs().amax(-1)
    for r in range(6):
        for g in range(3):
            cols = slice(32 * g, 32 * g + 32)
            errors = []
            for i in range(10):
                c = peak[r, g] * (1 - i / 20)
                wg = w[r, cols].clamp(-c, c)[None]
                scale, zero = groupwise.group_params(wg, 3)
                delta = groupwise.dequantize_codes(groupwise.quantize_codes(wg, scale, zero, 3), scale, zero) - w[r, cols]
                errors.append(((x[:, cols] @ delta[0]) ** 2).mean().item())
            chosen = round((1 - (bound[r, g] / peak[r, g]).item()) * 20)
            assert torch.isclose(bound[r, g], peak[r, g] * (1 - chosen / 20))
            assert errors[chosen] <= min(errors) * (1 + 1e-5)
    assert bound[0, 0] <= 0.75 * peak[0, 0]  # the outlier weight, which meets small inputs, is clipped


def test_apply_clip_clamps_each_group():
    linear = nn.Linear(40, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.linspace(-4, 4, 80).view(2, 40))
    bound = torch.tensor([[1.0, 2.0], [0.5, 3.0]])
    awq.apply_clip(linear, bound, 32)
    w = linear.weight
    assert w[0, :32].abs().max() == 1.0 and w[0, 32:].abs().max() <= 2.0 and w[1, :32].abs().max() == 0.5
    assert w[1, 32:].abs().max() == 3.0


def test_salient_channels():
    m = torch.tensor([0.1, 5.0, 0.2, 9.0, 0.3] + [0.01] * 195)
    assert awq.salient_channels(m, 0.01).tolist() == [1, 3]
    assert awq.salient_channels(m[:5], 0.01).tolist() == [3]  # at least one
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            awq.salient_channels(m, bad)


@pytest.mark.parametrize("protect", ["fp16", "scale"])
@pytest.mark.parametrize("which", ["salient", "random"])
def test_protect_channels(protect, which, calibration):
    model = oracle.tiny_llama(seed=12)
    original = copy.deepcopy(model)
    rows = calibration.flatten().tolist()
    stats = models.capture_activations(model, lambda _: {"input_ids": rows}, "", context=64, max_tokens=None)
    awq.protect_channels(model, stats, 3, 64, fraction=0.02, which=which, protect=protect)
    name = "model.layers.0.mlp.down_proj"
    w, w_new = original.get_submodule(name).weight, model.get_submodule(name).weight
    if which == "salient":
        channels = stats[name].mean_abs.topk(5).indices
    else:
        channels = torch.randperm(256, generator=torch.Generator().manual_seed(0))[:5]
    s = torch.ones(256)
    s[channels] = 2.0
    if protect == "fp16":
        expected = awq.fake_quantize(w, 3, 64)
        expected[:, channels] = w[:, channels]
    else:
        expected = awq.fake_quantize(w * s, 3, 64) / s
    assert torch.equal(w_new, expected)
    assert torch.equal(model.lm_head.weight, original.lm_head.weight)
    with pytest.raises(ValueError, match="which"):
        awq.protect_channels(model, stats, 3, 64, which="largest")


def test_awq_scheme_calibrates_searches_and_stores(tokenizer, tmp_path):
    """quantize_model(model, "awq-w3-g128"): the search on the calibration text, then
    GroupQuantLinear layers (honest nbytes), and a smaller output error than RTN at equal storage."""
    from transformers import AutoModelForCausalLM

    oracle.tiny_llama(layers=2, hidden=256, intermediate=512, seed=13).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tokens = torch.stack(models.token_windows(tokenizer, models.load_text("moby-dick"), 64, 256))
    reference = logits(model, tokens)
    errors, sizes = {}, {}
    for scheme in ("rtn-w3-g128", "awq-w3-g128"):
        m = copy.deepcopy(model)
        report = qnn.quantize_model(m, scheme)
        assert all(isinstance(m.get_submodule(n), groupwise.GroupQuantLinear) for n in report.replaced)
        errors[scheme] = ((logits(m, tokens) - reference).norm() / reference.norm()).item()
        sizes[scheme] = report.bytes_after
    assert sizes["awq-w3-g128"] == sizes["rtn-w3-g128"]
    assert errors["awq-w3-g128"] < 0.8 * errors["rtn-w3-g128"]


def test_scheme_names_and_checks():
    assert qnn.get_scheme("awq-w4-g128") == awq.AWQ(4, 128)
    assert qnn.get_scheme("awq-w3-g128").storage() == groupwise.RTN(3, 128)
    assert awq.AWQ(4, 64, clip=True).name == "awq-w4-g64-clip"
    with pytest.raises(ValueError, match="bits"):
        awq.AWQ(9)
    with pytest.raises(ValueError, match="n_grid"):
        awq.AWQ(4, n_grid=1)
    with pytest.raises(TypeError, match="tokens"):
        awq.apply_awq(oracle.tiny_llama(), torch.zeros(2, 8))
    assert smoothquant.Calibration().text == "sotu"  # calibrate on one text, evaluate on the other
