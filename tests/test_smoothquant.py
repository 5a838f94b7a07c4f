"""SmoothQuant: layer groups, folding (the float model is unchanged), smoothing factors equal to
llm-compressor's, the W8A8 scheme, and the fused divide-and-quantize kernel."""
import copy

import pytest
import torch
from torch import nn

from lec19quant import int8, models, smoothquant
from lec19quant import nn as qnn
from lec19quant.quantize import absmax_quantize
from oracles import llm_compressor as oracle


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_model()[1]


@pytest.fixture(scope="module")
def calibration(tokenizer):
    """Windows of the calibration text, the same token rows for ours and for the oracle."""
    windows = models.token_windows(tokenizer, models.load_text("sotu", "train"), 64, 256)
    return torch.stack(windows)


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens, use_cache=False).logits


def stats_on(model, tokens):
    """capture_activations' statistics on exactly these token rows (text decoded and re-encoded
    would not round-trip, so the windows are fed through a tokenizer that returns them)."""
    class Rows:
        def __call__(self, text):
            return {"input_ids": tokens.flatten().tolist()}

    return models.capture_activations(model, Rows(), "", context=tokens.shape[1], max_tokens=None)


def test_layer_groups_of_a_llama_model():
    mha = smoothquant.layer_groups(oracle.tiny_llama(layers=2, kv_heads=4))
    assert [(g.kind, g.smooth, g.parent) for g in mha[:4]] == [
        ("qkv", "model.layers.0.input_layernorm", "model.layers.0.self_attn"),
        ("o", "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"),
        ("gate_up", "model.layers.0.post_attention_layernorm", "model.layers.0.mlp"),
        ("down", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj")]
    assert mha[0].balance == tuple(f"model.layers.0.self_attn.{p}_proj" for p in "qkv")
    assert len(mha) == 8 and mha[4].layer == "model.layers.1"
    gqa = smoothquant.layer_groups(oracle.tiny_llama(layers=2, kv_heads=2))  # v_proj: 64 outputs, o_proj: 128 inputs
    assert [g.kind for g in gqa] == ["qkv", "gate_up", "down"] * 2
    assert [g.kind for g in smoothquant.layer_groups(oracle.tiny_llama(), smoothquant.SMOOTHQUANT_KINDS)] == ["qkv", "gate_up"]


def test_layer_groups_reject_other_models_and_kinds():
    with pytest.raises(ValueError, match="no Llama-type decoder layers"):
        smoothquant.layer_groups(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="kinds"):
        smoothquant.layer_groups(oracle.tiny_llama(), ("qkv", "fc1"))
    with pytest.raises(ValueError, match="kinds"):
        smoothquant.layer_groups(oracle.tiny_llama(), "qkv")


@pytest.mark.parametrize("kind", smoothquant.KINDS)
def test_folding_leaves_the_float_model_unchanged(kind, calibration):
    """For every layer group: scales spanning 10⁻³…10³ folded in, the logits stay (float rounding)."""
    model = oracle.tiny_llama(layers=2, kv_heads=4, seed=3)
    before = logits(model, calibration[:2])
    generator = torch.Generator().manual_seed(0)
    groups = smoothquant.layer_groups(model, (kind,))
    assert len(groups) == 2
    for group in groups:
        n = model.get_submodule(group.balance[0]).in_features
        s = 10 ** (6 * torch.rand(n, generator=generator) - 3)
        weights = {name: model.get_submodule(name).weight.clone() for name in (group.smooth, *group.balance)}
        smoothquant.fold_scales(model, group, s)
        assert not torch.equal(weights[group.smooth], model.get_submodule(group.smooth).weight)
        assert all(not torch.equal(weights[b], model.get_submodule(b).weight) for b in group.balance)
    after = logits(model, calibration[:2])
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def test_smoothquant_leaves_the_float_model_unchanged(calibration):
    model = oracle.tiny_llama(layers=2, kv_heads=4, seed=4)
    before = logits(model, calibration[:2])
    factors = smoothquant.smooth(model, stats_on(model, calibration), 0.85, smoothquant.KINDS)
    assert len(factors) == 8 and all(s.max() / s.min() > 4 for s in factors.values())
    torch.testing.assert_close(logits(model, calibration[:2]), before, rtol=1e-4, atol=1e-4 * before.abs().max().item())


def test_a_layer_norm_with_bias_folds_too():
    norm, linear = nn.LayerNorm(6), nn.Linear(6, 3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    model = nn.ModuleDict({"norm": norm, "linear": linear})
    x = torch.randn(5, 6)
    before = linear(norm(x))
    smoothquant.fold_scales(model, smoothquant.LayerGroup("qkv", "", "norm", ("linear",), "linear"),
                            torch.tensor([0.1, 2.0, 8.0, 1.0, 0.5, 30.0]))
    torch.testing.assert_close(linear(norm(x)), before, rtol=1e-5, atol=1e-6)


def test_fold_scales_rejects_bad_scales_and_unfoldable_modules():
    model = oracle.tiny_llama()
    group = smoothquant.layer_groups(model)[0]
    for bad in (torch.ones(5), torch.zeros(128), -torch.ones(128), torch.full((128,), float("nan")),
                torch.full((128,), float("inf"))):
        with pytest.raises(ValueError, match="scales"):
            smoothquant.fold_scales(model, group, bad)

    class GemmaRMSNorm(nn.Module):  # computes (1 + w)·x/rms(x): dividing w would not divide the output
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(128))

    model.model.layers[0].input_layernorm = GemmaRMSNorm()
    with pytest.raises(TypeError, match="GemmaRMSNorm"):
        smoothquant.fold_scales(model, group, torch.ones(128))


def test_smoothing_factors_formula_and_edges():
    a = torch.tensor([4.0, 0.0, 9.0, 100.0])
    w = torch.tensor([1.0, 0.5, 0.0, 0.25])
    torch.testing.assert_close(smoothquant.smoothing_factors(a, w, 0.5),
                               torch.tensor([2.0, 1e-5, 3 / 1e-5**0.5, 20.0]))
    torch.testing.assert_close(smoothquant.smoothing_factors(a, w, 1.0), torch.tensor([4.0, 1e-5, 9.0, 100.0]))
    torch.testing.assert_close(smoothquant.smoothing_factors(a, w, 0.0), torch.tensor([1.0, 2.0, 1e5, 4.0]))
    for alpha in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            smoothquant.smoothing_factors(a, w, alpha)
    with pytest.raises(ValueError, match="same length"):
        smoothquant.smoothing_factors(a, w[:3])
    with pytest.raises(ValueError, match="finite and non-negative"):
        smoothquant.smoothing_factors(torch.tensor([float("nan")]), torch.ones(1))
    with pytest.raises(ValueError, match="non-negative"):
        smoothquant.smoothing_factors(torch.tensor([-1.0]), torch.ones(1))


def test_paper_factors_from_the_raw_activations(calibration):
    """convention="paper": s from max|X_j| over the calibration tokens, recomputed here from the
    whole activation matrix of q_proj's input, and max|W_:,j| over q, k and v."""
    model = oracle.tiny_llama(seed=5)
    stats = stats_on(model, calibration)
    group = smoothquant.layer_groups(model)[0]
    seen = []
    hook = model.get_submodule(group.balance[0]).register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    logits(model, calibration)
    hook.remove()
    a = torch.cat(seen).flatten(0, 1).abs().amax(0)
    w = torch.cat([model.get_submodule(b).weight for b in group.balance]).abs().amax(0)
    expected = (a.double() ** 0.7 / w.double() ** 0.3).float()
    torch.testing.assert_close(smoothquant.group_factors(model, group, stats, 0.7), expected, rtol=2e-6, atol=0)


def test_captured_statistics_equal_the_raw_activations(calibration):
    """models.capture_activations' min, max and mean |x| per channel (what SmoothQuant's and AWQ's
    conventions read), against the whole input matrix of one Linear."""
    model = oracle.tiny_llama(seed=9)
    stats = stats_on(model, calibration)["model.layers.0.mlp.down_proj"]
    seen = []
    hook = model.model.layers[0].mlp.down_proj.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    logits(model, calibration)
    hook.remove()
    x = torch.cat(seen).flatten(0, 1)
    assert stats.tokens == x.shape[0] == calibration.numel()
    assert torch.equal(stats.minimum, x.amin(0)) and torch.equal(stats.maximum, x.amax(0))
    torch.testing.assert_close(stats.mean_abs, x.abs().double().mean(0).float(), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def llm_compressor_smoothquant(tokenizer, calibration):
    """llm-compressor's SmoothQuantModifier (its default Llama mappings) at α = 0.8, and ours."""
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    model = oracle.tiny_llama(layers=2, seed=6)
    theirs = oracle.run(model, tokenizer, calibration, [SmoothQuantModifier(smoothing_strength=0.8)])[0]
    ours = copy.deepcopy(model)
    factors = smoothquant.smooth(ours, stats_on(ours, calibration), 0.8, convention="llm-compressor")
    return model, theirs, ours, factors


def test_smoothing_factors_equal_llm_compressors(llm_compressor_smoothquant):
    model, theirs, ours, factors = llm_compressor_smoothquant
    assert sorted(factors) == [f"model.layers.{i}.{n}" for i in (0, 1)
                               for n in ("input_layernorm", "post_attention_layernorm")]
    for name, s in factors.items():
        their_s = model.get_submodule(name).weight / theirs.get_submodule(name).weight  # they divide the norm by s
        torch.testing.assert_close(s, their_s, rtol=1e-6, atol=0)
        assert s.max() / s.min() > 10  # the outlier channels were smoothed
    for name, module in ours.named_modules():
        if isinstance(module, (nn.Linear,)) or name.endswith("layernorm"):
            torch.testing.assert_close(module.weight, theirs.get_submodule(name).weight, rtol=1e-6, atol=1e-7)


def test_the_paper_convention_differs_from_llm_compressors_by_design(llm_compressor_smoothquant, calibration):
    """max|X| vs max X − min X, and max|W| vs 2·max|W|: llm-compressor's s over the paper's is
    ((max − min)/max|X|)^α · 2^(α−1), which varies from channel to channel (a uniform factor would
    not change absmax quantization)."""
    model, theirs, _, _ = llm_compressor_smoothquant
    stats = stats_on(model, calibration)
    for group in smoothquant.layer_groups(model, smoothquant.SMOOTHQUANT_KINDS):
        paper = smoothquant.group_factors(model, group, stats, 0.8)
        ratio = model.get_submodule(group.smooth).weight / theirs.get_submodule(group.smooth).weight / paper
        st = stats[group.balance[0]]
        expected = ((st.maximum - st.minimum) / st.absmax) ** 0.8 * 2 ** (0.8 - 1)
        torch.testing.assert_close(ratio, expected, rtol=1e-5, atol=0)
        assert ratio.max() / ratio.min() > 1.1


def test_the_scheme_calibrates_then_quantizes(tokenizer, tmp_path, calibration):
    """quantize_model(model, "smoothquant-w8a8-tensor") smooths on the calibration text (the
    tokenizer saved with the model), then stores W8A8 layers; on a model with outlier channels its
    error is well below plain per-tensor W8A8's."""
    from transformers import AutoModelForCausalLM

    oracle.tiny_llama(layers=2, seed=7).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    reference = logits(model, calibration[:2])
    errors = {}
    for scheme in ("w8a8-tensor", "smoothquant-w8a8-tensor"):
        m = copy.deepcopy(model)
        report = qnn.quantize_model(m, scheme)
        assert report.scheme == scheme and len(report.replaced) == 14
        assert all(isinstance(m.get_submodule(n), int8.W8A8Linear) for n in report.replaced)
        errors[scheme] = ((logits(m, calibration[:2]) - reference).norm() / reference.norm()).item()
    assert errors["smoothquant-w8a8-tensor"] < 0.7 * errors["w8a8-tensor"]


def test_scheme_names_and_checks():
    assert qnn.get_scheme("smoothquant-w8a8-tensor") == smoothquant.SmoothQuantW8A8("tensor")
    assert qnn.get_scheme("smoothquant-w8a8-token") == smoothquant.SmoothQuantW8A8("token")
    assert smoothquant.SmoothQuantW8A8("token", 0.85, smoothquant.KINDS).name == "smoothquant-w8a8-token-a0.85-qkv+o+gate_up+down"
    with pytest.raises(ValueError, match="activations"):
        smoothquant.SmoothQuantW8A8("row")
    with pytest.raises(ValueError, match="alpha"):
        smoothquant.SmoothQuantW8A8("tensor", 2.0)
    layer = smoothquant.SmoothQuantW8A8().quantize_linear(nn.Linear(8, 4))
    assert isinstance(layer, int8.W8A8Linear) and layer.activations == "tensor"


@pytest.mark.parametrize("shape", [(1, 5), (7, 576), (33, 300), (3, 1024)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_quantize_smoothed_kernel_equals_torch(shape, dtype, device):
    generator = torch.Generator().manual_seed(shape[1])
    x = torch.randn(shape, generator=generator)
    x[:, 0] *= 3000  # a massive outlier channel
    x[0] = 0  # an all-zero token
    if shape[0] > 2:
        x[1, -1] = -0.0
        x[2, :] = 1e-30  # a token whose scale overflows: codes 0
    s = 10 ** (4 * torch.rand(shape[1], generator=generator) - 2)
    x, s = x.to(dtype).to(device), s.to(device)
    got = smoothquant.quantize_smoothed(x, s, backend="triton")
    ref = smoothquant.quantize_smoothed(x, s, backend="torch")
    assert torch.equal(got.codes, ref.codes) and got.codes.dtype == torch.int8
    assert torch.equal(got.scale, ref.scale)
    assert shape[0] == 1 or (got.codes.abs().amax(1)[1:] == 127).any()


def test_quantize_smoothed_is_absmax_of_the_divided_input():
    x, s = torch.randn(4, 6), torch.tensor([1.0, 2.0, 4.0, 0.5, 3.0, 1e3])
    q = smoothquant.quantize_smoothed(x, s, backend="torch")
    ref = absmax_quantize(x / s, 8, dim=0)
    assert torch.equal(q.codes, ref.codes) and torch.equal(q.scale, ref.scale)
    with pytest.raises(ValueError, match="scales"):
        smoothquant.quantize_smoothed(x, torch.ones(5))
    with pytest.raises(ValueError, match="matrix"):
        smoothquant.quantize_smoothed(x[0], torch.ones(6))
    with pytest.raises(ValueError, match="NaN or inf"):
        smoothquant.quantize_smoothed(torch.full((2, 6), float("nan")), torch.ones(6))
