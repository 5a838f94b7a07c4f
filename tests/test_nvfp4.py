"""NVFP4 against torchao's NVFP4Tensor (same bytes), MXFP4 against torchao's MX quantizer and
gguf's, NF4 against bitsandbytes; the Triton matmul under the interpreter; the layers and schemes."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lec19quant import checks
from lec19quant import formats as F
from lec19quant import nn as qnn
from lec19quant import nvfp4 as N

FOUR_BIT_TIES = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]  # → 0, 1, 1, 2, 2, 4, 4 (ties to even)


def inputs() -> dict[str, torch.Tensor]:
    """Random, heavy-tailed, all-zero, tiny, huge and adversarial inputs, float32 and bfloat16."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(64, 256, generator=g)
    ties = torch.tensor([6.0, *FOUR_BIT_TIES, *(-t for t in FOUR_BIT_TIES), -0.0])  # scale 1
    signed_zeros = torch.tensor([0.0, -0.0, -1e-9, 1e-9] * 4)
    return {
        "normal": normal,
        "heavy-tailed": normal * torch.exp(3 * torch.randn(64, 256, generator=g)),
        "rows of different magnitude": normal * torch.exp(4 * torch.randn(64, 1, generator=g)),
        "one huge outlier": torch.cat([normal[:4, :64], torch.full((4, 64), 1e-3)]).index_put_(
            (torch.tensor([1]), torch.tensor([5])), torch.tensor(3e4)),
        "all zero": torch.zeros(4, 32),
        "ties and signed zeros": torch.stack([ties, signed_zeros, 4 * ties, ties / 64]),
        "tiny (scales at the clamp)": normal[:8, :64] * 1e-3,
        "very tiny": normal[:8, :64] * 1e-30,
        "huge": normal[:8, :64] * 1e36,
        "near float32's max": normal[:4, :32].sign() * 3.4e38,
        "bfloat16": normal[:32].bfloat16(),
        "bfloat16 heavy-tailed": (normal * torch.exp(3 * normal.flip(0)))[:16].bfloat16(),
        "3-D": torch.randn(2, 8, 48, generator=g),
    }


INPUTS = inputs()


# ---------------------------------------------------------------------------------------------
# E2M1 and E4M3 rounding


@pytest.mark.parametrize("fmt", [F.FP4_E2M1, F.FP8_E4M3])
def test_fast_encoder_matches_formats_encode(fmt):
    cases = checks.encode_cases(fmt)
    cases = cases[~cases.isnan()]
    g = torch.Generator().manual_seed(1)
    wide = torch.randn(200_000, generator=g) * torch.exp2(torch.randint(-12, 12, (200_000,), generator=g))
    for x in (cases, wide, torch.tensor([3e38, -3e38, math.inf, -math.inf, 1e-45])):
        assert torch.equal(N._encode_saturating(x, fmt), F.encode(x, fmt, overflow="saturate"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=64))
def test_fast_encoder_matches_formats_encode_on_any_float(values):
    x = torch.tensor(values, dtype=torch.float32)
    for fmt in (F.FP4_E2M1, F.FP8_E4M3):
        assert torch.equal(N._encode_saturating(x, fmt), F.encode(x, fmt, overflow="saturate"))


def test_the_e2m1_ties_go_to_even():
    x = torch.tensor(FOUR_BIT_TIES)
    assert F.round_to(x, F.FP4_E2M1).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    q = N.nvfp4_quantize(torch.cat([torch.tensor([6.0]), x, torch.zeros(8)]), None)
    assert q.block_scales.tolist() == [0x38]  # max 6 → s = 1.0
    assert q.dequantize()[1:8].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]


def test_pack_puts_the_first_value_in_the_low_nibble():
    x = torch.zeros(16)
    x[0], x[1] = 1.0, 6.0  # codes 2 and 7 (scale 1)
    q = N.nvfp4_quantize(x, None)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (8,)
    assert q.codes[0].item() == 0x72
    codes = torch.randint(0, 16, (3, 10), dtype=torch.uint8)
    assert torch.equal(N.unpack(N.pack(codes)), codes)
    with pytest.raises(ValueError, match="even"):
        N.pack(torch.zeros(3, dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------
# NVFP4 against torchao


@pytest.fixture(scope="module")
def torchao_nvfp4():
    mx = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    return mx


def torchao_quantize(mx, x, tensor_scale):
    if tensor_scale == "auto":
        tensor_scale = mx.per_tensor_amax_to_scale(x.abs().max())
    elif tensor_scale is not None:
        tensor_scale = torch.tensor(tensor_scale, dtype=torch.float32)
    return mx.NVFP4Tensor.to_nvfp4(x, per_tensor_scale=tensor_scale)


def assert_same_bytes(ours, theirs):
    assert torch.equal(ours.codes, theirs.qdata)
    assert torch.equal(ours.block_scales, theirs.scale.view(torch.uint8))
    if theirs.per_tensor_scale is None:
        assert ours.tensor_scale is None
    else:
        assert ours.tensor_scale.view(torch.int32) == theirs.per_tensor_scale.view(torch.int32)
    mine, reference = ours.dequantize(), theirs.dequantize(torch.float32)
    assert torch.equal(mine.view(torch.int32), reference.view(torch.int32))  # ±0 too


@pytest.mark.parametrize("tensor_scale", [None, "auto"], ids=["one level", "two levels"])
@pytest.mark.parametrize("name", [n for n in INPUTS if n != "all zero"])
def test_nvfp4_matches_torchao(torchao_nvfp4, name, tensor_scale):
    x = INPUTS[name]
    assert_same_bytes(N.nvfp4_quantize(x, tensor_scale), torchao_quantize(torchao_nvfp4, x, tensor_scale))


@pytest.mark.parametrize("tensor_scale", [1.0, 3e-4, 2.0**-120, 1e30])
def test_nvfp4_with_a_given_tensor_scale_matches_torchao(torchao_nvfp4, tensor_scale):
    for x in (INPUTS["normal"], INPUTS["heavy-tailed"], INPUTS["all zero"]):
        assert_same_bytes(N.nvfp4_quantize(x, tensor_scale), torchao_quantize(torchao_nvfp4, x, tensor_scale))
    given = N.nvfp4_quantize(INPUTS["normal"], torch.tensor([3e-4]))
    assert given.tensor_scale.item() == torch.tensor(3e-4).item()


def test_all_zero_input_matches_torchao_with_one_level_and_is_documented_with_two(torchao_nvfp4):
    x = INPUTS["all zero"]
    assert_same_bytes(N.nvfp4_quantize(x, None), torchao_quantize(torchao_nvfp4, x, None))
    theirs = torchao_quantize(torchao_nvfp4, x, "auto")  # tensor scale 0: NaN block scales
    assert theirs.dequantize(torch.float32).isnan().all()
    ours = N.nvfp4_quantize(x, "auto")
    assert ours.tensor_scale is None and ours.block_scales.eq(0x08).all() and ours.codes.eq(0).all()
    assert ours.dequantize().eq(0).all()
    # the same for anything too small for a tensor scale of at least 2^−120
    tiny = N.nvfp4_quantize(torch.full((2, 16), 1e-34), "auto")
    assert tiny.tensor_scale is None and tiny.dequantize().eq(0).all()


def test_nvfp4_fields_and_bits_per_weight():
    x = INPUTS["normal"]  # (64, 256)
    q = N.nvfp4_quantize(x)
    assert q.codes.shape == (64, 128) and q.block_scales.shape == (64, 16) and q.shape == x.shape
    assert q.block_scales.dtype == torch.uint8 and q.tensor_scale.dtype == torch.float32
    assert q.tensor_scale.item() == (x.abs().max() / 2688).item()
    assert q.block_scales.max().item() == 0x7E  # the largest block's scale is 448
    assert q.nbytes == 64 * 128 + 64 * 16 + 4
    assert q.bits_per_weight == 4.5 + 32 / x.numel()
    assert N.nvfp4_quantize(x, None).bits_per_weight == 4.5
    assert N.mxfp4_quantize(x).bits_per_weight == 4.25
    assert N.nf4_quantize(x).bits_per_weight == 4.5


def test_dequantize_is_e2m1_times_the_scales():
    x = INPUTS["heavy-tailed"]
    q = N.nvfp4_quantize(x)
    e2m1 = F.decode(N.unpack(q.codes), F.FP4_E2M1).view(64, 16, 16)
    scales = q.tensor_scale * F.decode(q.block_scales, F.FP8_E4M3)
    assert torch.equal(q.dequantize(), (e2m1 * scales[..., None]).view(64, 256))
    err = (q.dequantize() - x).abs() / x.abs().view(64, 16, 16).amax(-1, keepdim=True).expand(64, 16, 16).reshape(64, 256)
    assert err.max() < 0.2  # at most half a step of the block's grid, relative to its max


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("quantize", [N.nvfp4_quantize, N.mxfp4_quantize, N.nf4_quantize])
def test_bad_inputs_are_clear_errors(quantize):
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.randn(2, 64)
        x[1, 7] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            quantize(x)
        with pytest.raises(ValueError, match="NaN or inf"):
            quantize(x.bfloat16())
    with pytest.raises(ValueError, match="multiple of the block size"):
        quantize(torch.randn(4, 24))
    with pytest.raises(ValueError, match="multiple of the block size"):
        quantize(torch.zeros(0, 64))
    with pytest.raises(ValueError, match="multiple of the block size"):
        quantize(torch.tensor(1.0))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        quantize(torch.ones(64, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        quantize([1.0] * 64)
    assert torch.equal(quantize(torch.ones(2, 64).half()).dequantize(), quantize(torch.ones(2, 64)).dequantize())


@pytest.mark.parametrize("bad, error, match", [
    (0.0, ValueError, "at least 2\\^−120"), (-1.0, ValueError, "at least"), (1e-37, ValueError, "at least"),
    (math.nan, ValueError, "at least"), (math.inf, ValueError, "finite"), ("max", ValueError, "'auto'"),
    (True, TypeError, "a number"), (torch.ones(2), ValueError, "one number"),
])
def test_bad_tensor_scales_are_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        N.nvfp4_quantize(torch.randn(16), bad)


# ---------------------------------------------------------------------------------------------
# MXFP4 against torchao and gguf


def test_mxfp4_matches_torchaos_mx_quantizer():
    mx = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
    for name in ("normal", "heavy-tailed", "rows of different magnitude", "ties and signed zeros",
                 "huge", "near float32's max", "bfloat16", "all zero"):
        x = INPUTS[name].reshape(-1, 32)
        scale, data = mx.to_mx(x, torch.float4_e2m1fn_x2, 32)
        ours = N.mxfp4_quantize(x)
        assert torch.equal(ours.block_scales, scale.view(torch.uint8)), name
        assert torch.equal(ours.codes, data), name
    # documented difference: below 2^−124 torchao scales by 2^−126 but stores 2^−127
    x = torch.full((1, 32), 2.0**-126)
    scale, data = mx.to_mx(x, torch.float4_e2m1fn_x2, 32)
    ours = N.mxfp4_quantize(x)
    assert scale.view(torch.uint8).item() == ours.block_scales.item() == 0
    assert N.unpack(ours.codes)[0, 0] == 0b0100 and N.unpack(data)[0, 0] == 0b0010  # 2 vs 1
    assert ours.dequantize()[0, 0].item() == 2.0**-126


def gguf_mxfp4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gguf's MXFP4 as (scale bytes, codes in order): a block is 1 scale byte and 16 bytes whose
    low nibbles hold values 0–15 and high nibbles values 16–31."""
    gguf = pytest.importorskip("gguf")
    raw = gguf.quants.quantize(x.numpy(), gguf.GGMLQuantizationType.MXFP4)
    blocks = torch.from_numpy(raw).view(*x.shape[:-1], -1, 17)
    qs = blocks[..., 1:]
    return blocks[..., 0], torch.cat([qs & 15, qs >> 4], dim=-1).view(x.shape)


def test_mxfp4_matches_gguf_but_for_the_documented_differences():
    for name in ("normal", "heavy-tailed", "rows of different magnitude", "huge"):
        x = INPUTS[name]
        scales, codes = gguf_mxfp4(x)
        ours = N.mxfp4_quantize(x)
        assert torch.equal(scales, ours.block_scales), name
        mine = N.unpack(ours.codes)
        differ = mine != codes
        # (2): gguf stores +0 where the value rounds to −0; no ties in random data
        assert torch.all(mine[differ] == 0b1000) and torch.all(codes[differ] == 0), name
    # (1): ties toward zero, where OCP rounds to even (0.75 → 0.5 vs 1, 1.75 → 1.5 vs 2, 3.5 → 3 vs 4)
    x = torch.tensor([[4.0, 0.75, 1.75, 3.5, -0.75, -1.75, -3.5] + [0.0] * 25])
    _, codes = gguf_mxfp4(x)
    values = F.decode(codes, F.FP4_E2M1)[0, 1:7].tolist()
    assert values == [0.5, 1.5, 3.0, -0.5, -1.5, -3.0]
    assert N.mxfp4_quantize(x).dequantize()[0, 1:7].tolist() == [1.0, 2.0, 4.0, -1.0, -2.0, -4.0]
    # (3): ⌊log2⌋ in float32: just below 8 gguf takes the power of two above
    x = torch.full((1, 32), float(np.nextafter(np.float32(8), np.float32(0))))
    scales, _ = gguf_mxfp4(x)
    assert scales.item() == N.mxfp4_quantize(x).block_scales.item() + 1 == 127 + 1


def test_mxfp4_scale_puts_the_block_max_in_4_to_8_and_clips_above_6():
    x = INPUTS["heavy-tailed"]
    q = N.mxfp4_quantize(x)
    ratio = x.view(64, 8, 32).abs().amax(-1) / q.scales()
    assert ratio.min() >= 4 and ratio.max() < 8
    clipped = ratio > 6
    assert clipped.any() and torch.equal(q.dequantize().view(64, 8, 32).abs().amax(-1)[clipped], 6 * q.scales()[clipped])
    zero = N.mxfp4_quantize(torch.zeros(2, 32))
    assert zero.block_scales.eq(0).all() and zero.dequantize().eq(0).all()


# ---------------------------------------------------------------------------------------------
# NF4 against bitsandbytes


@pytest.mark.bitsandbytes
def test_nf4_matches_bitsandbytes():
    import bitsandbytes.functional as bnb
    for name in ("normal", "heavy-tailed", "rows of different magnitude", "ties and signed zeros"):
        x = INPUTS[name].reshape(-1, 64)
        packed, state = bnb.quantize_4bit(x, blocksize=64, quant_type="nf4")
        flat = packed.flatten()
        theirs = torch.stack([flat >> 4, flat & 15], dim=-1).view(x.shape)  # first value high
        ours = N.nf4_quantize(x)
        assert torch.equal(N.unpack(ours.codes), theirs), name
        assert torch.equal(ours.block_scales.flatten(), state.absmax), name
        assert torch.equal(ours.dequantize(), bnb.dequantize_4bit(packed, state)), name
    zero = N.nf4_quantize(torch.zeros(64))  # bitsandbytes' CPU kernel gives the same 0x77
    assert N.unpack(zero.codes).eq(7).all() and zero.dequantize().eq(0).all()


# ---------------------------------------------------------------------------------------------
# The Triton kernel under the interpreter


def exact_weight(q: N.NVFP4Tensor) -> torch.Tensor:
    """Ŵ = t · e2m1 · s_b in float64 (exact)."""
    e2m1 = F.decode(N.unpack(q.codes), F.FP4_E2M1).double()
    s = F.decode(q.block_scales, F.FP8_E4M3).double().repeat_interleave(16, dim=-1)
    t = 1.0 if q.tensor_scale is None else q.tensor_scale.double()
    return t * e2m1 * s


def moved(q: N.NVFP4Tensor, device) -> N.NVFP4Tensor:
    """The same NVFP4 tensor with its codes and scales on `device`."""
    t = None if q.tensor_scale is None else q.tensor_scale.to(device)
    return N.NVFP4Tensor(q.codes.to(device), q.block_scales.to(device), t, q.shape)


@pytest.mark.parametrize("m, k, n", [(1, 16, 1), (3, 48, 5), (17, 80, 70), (5, 208, 130), (64, 128, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("tensor_scale", [None, "auto"])
def test_triton_matmul_matches_the_reference(m, k, n, dtype, tensor_scale, device):
    g = torch.Generator().manual_seed(m * k + n)
    w = torch.randn(n, k, generator=g) * torch.exp(torch.randn(n, 1, generator=g)) * 0.05
    x = (torch.randn(m, k, generator=g) * 3).to(dtype)
    q = N.nvfp4_quantize(w, tensor_scale)
    y = N.nvfp4_matmul(x.to(device), moved(q, device), backend="triton").cpu()
    assert y.dtype == torch.float32 and y.shape == (m, n)
    reference = x.half().double() @ exact_weight(q).t()  # the kernel multiplies x in float16
    # exact products, K float32 additions and the multiplication by t: (K + 1) roundings at most,
    # each of half a unit in the last place (2^-24); a GPU's tensor cores truncate the products
    # they align and add, which costs up to a whole unit (2^-23) per addition
    unit = 2.0**-23 if device.type == "cuda" else 2.0**-24
    bound = (k + 1) * unit * (x.half().double().abs() @ exact_weight(q).abs().t()) + 1e-30
    assert torch.all((y.double() - reference).abs() <= bound)
    torch_path = N.nvfp4_matmul(x.to(device), moved(q, device), backend="torch").cpu()
    assert torch.allclose(y, torch_path, rtol=1e-2, atol=1e-2 * torch_path.abs().max().item())


def test_triton_decodes_every_code_and_scale_exactly(device):
    # x = I picks out Ŵᵀ itself, so the kernel's output is each weight, rounded once to float32
    # (a sum cannot keep the sign of −0, so zeros compare as numbers)
    codes = torch.arange(256, dtype=torch.uint8).repeat(4, 1)  # every pair of E2M1 codes
    scales = torch.arange(128, dtype=torch.uint8).clamp(max=126).view(4, 32)  # every E4M3 scale
    for t in (None, torch.tensor(3e-3)):
        q = N.NVFP4Tensor(codes, scales, t, torch.Size((4, 512)))
        y = N.nvfp4_matmul(torch.eye(512, device=device), moved(q, device), backend="triton")
        assert torch.equal(y.t().cpu(), exact_weight(q).float())
    q = moved(q, device)
    assert torch.equal(N.nvfp4_matmul(torch.eye(512, device=device), q, backend="torch").t(), q.dequantize())


def test_triton_matmul_takes_strided_x_and_checks_shapes(device):
    w = N.nvfp4_quantize(torch.randn(24, 64, device=device))
    x = torch.randn(64, 9, device=device).t()  # (9, 64), not contiguous
    assert torch.allclose(N.nvfp4_matmul(x, w, "triton"), N.nvfp4_matmul(x.contiguous(), w, "triton"))
    with pytest.raises(ValueError, match="must be \\(M, K\\) with K = 64"):
        N.nvfp4_matmul(torch.randn(3, 32), w)
    with pytest.raises(TypeError, match="NVFP4Tensor"):
        N.nvfp4_matmul(torch.randn(3, 64), N.mxfp4_quantize(torch.randn(24, 64)))
    with pytest.raises(ValueError, match="65504"):
        N.nvfp4_matmul(torch.full((2, 64), 7e4, device=device), w, "triton")
    assert torch.isfinite(N.nvfp4_matmul(torch.full((2, 64), 7e4, device=device), w, "torch")).all()


# ---------------------------------------------------------------------------------------------
# Layers and schemes


def test_four_bit_linear_computes_with_the_dequantized_weight():
    torch.manual_seed(2)
    linear = nn.Linear(128, 48)
    x = torch.randn(3, 5, 128) * 4
    for fmt, quantize in N.QUANTIZERS.items():
        layer = N.FourBitLinear(linear, fmt)
        w = quantize(linear.weight.detach())
        assert torch.equal(layer.codes, w.codes) and torch.equal(layer.block_scales, w.block_scales)
        assert torch.equal(layer(x), nn.functional.linear(x, w.dequantize(), linear.bias))
        assert layer.nbytes == w.nbytes + 48 * 4
        both = N.FourBitLinear(linear, fmt, activations=True)
        x_hat = quantize(x.reshape(15, 128)).dequantize().view(3, 5, 128)
        assert torch.equal(both(x), nn.functional.linear(x_hat, w.dequantize(), linear.bias))


def test_switching_activations_on_gives_the_w4a4_layer():
    torch.manual_seed(4)
    linear = nn.Linear(64, 24)
    x = torch.randn(6, 64)
    for fmt in ("nvfp4", "mxfp4"):
        layer = N.FourBitLinear(linear, fmt)
        layer.activations = True
        assert torch.equal(layer(x), N.FourBitLinear(linear, fmt, activations=True)(x))


def test_four_bit_linear_uses_the_kernel_when_asked(device):
    torch.manual_seed(3)
    linear = nn.Linear(64, 40).to(device)
    x = torch.randn(7, 64, device=device)
    fast = N.FourBitLinear(linear, "nvfp4", backend="triton")(x)
    assert torch.allclose(fast, N.FourBitLinear(linear, "nvfp4")(x), rtol=1e-2, atol=1e-2)


def test_schemes_by_name_quantize_a_model():
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=100)
    ids = torch.randint(0, 100, (2, 9))
    for name in ("nvfp4", "nvfp4-w4a4", "mxfp4", "mxfp4-w4a4"):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        with torch.no_grad():
            before = model(ids).logits
        report = qnn.quantize_model(model, name)
        assert len(report.replaced) == 14 and report.skipped == ["lm_head"]
        layer = model.get_submodule(report.replaced[0])
        assert isinstance(layer, N.FourBitLinear) and qnn.get_scheme(name).name == report.scheme
        with torch.no_grad():
            after = model(ids).logits
        assert torch.isfinite(after).all() and (after - before).abs().max() < 0.5
    assert qnn.get_scheme("nvfp4-w4a4") == N.FourBit("nvfp4", activations=True)
    with pytest.raises(ValueError, match="fmt must be one of"):
        N.FourBit("int4")
    with pytest.raises(ValueError, match="NF4Scheme"):
        N.FourBit("nf4")


# ---------------------------------------------------------------------------------------------
# The chapter's comparison, figures and checks


def test_compare_reports_each_format():
    x = torch.randn(32, 128, generator=torch.Generator().manual_seed(4))
    rows = N.compare(x)
    assert [r["format"] for r in rows] == list(N.COMPARED)
    bits = {r["format"]: r["bits per value"] for r in rows}
    assert bits["INT4 g16"] == 6 and bits["INT4 g32"] == 5 and bits["MXFP4"] == 4.25
    sqnr = {r["format"]: r["SQNR (dB)"] for r in rows}
    assert sqnr["NVFP4"] > sqnr["MXFP4"]
    assert all(r["MSE"] > 0 for r in rows)


def test_figures_draw_the_package_numbers():
    import matplotlib

    matplotlib.use("Agg")
    from lec19quant import plots

    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(5))
    x[3, 7] = 5000.0  # a block beyond one level's reach: 5000 / 6 > 448
    ax = plots.block_max_placement(x).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("NVFP4: 512 blocks") and labels[1].startswith("MXFP4: 256 blocks")
    ax = plots.scale_windows(x).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].endswith("1 above") and labels[1].endswith("0 above")
    results = {"a": N.compare(x), "b": N.compare(x * 2)}
    ax = plots.format_errors(results).axes[0]
    widths = [bar.get_width() for bar in ax.patches]
    assert len(widths) == 2 * len(N.COMPARED) and widths[0] == results["a"][0]["SQNR (dB)"]


def my_nvfp4(x, tensor_scale=None):
    """A student's NVFP4, written with torch's float8 type for the block scales."""
    blocks = x.float().reshape(*x.shape[:-1], -1, 16)
    t = None if tensor_scale is None else x.abs().max().float() / 2688
    s = blocks.abs().amax(-1) / 6
    s = (s if t is None else s / t).clamp(2**-6, 448).to(torch.float8_e4m3fn)
    r = 1 / s.float() if t is None else (1 / t) / s.float()
    codes = F.encode((blocks * r[..., None]).clamp(-6, 6), F.FP4_E2M1).reshape(x.shape)
    return (codes, s.view(torch.uint8)) if t is None else (codes, s.view(torch.uint8), t)


def my_dequantize(codes, block_scales, tensor_scale):
    values = F.decode(torch.stack([codes & 15, codes >> 4], -1).flatten(-2), F.FP4_E2M1)
    s = F.decode(block_scales, F.FP8_E4M3) * (1 if tensor_scale is None else tensor_scale)
    return (values.view(*block_scales.shape, 16) * s[..., None]).flatten(-2)


def test_checks_pass_right_answers_and_catch_mistakes():
    assert "✓ check_nvfp4_quantize" in repr(checks.check_nvfp4_quantize(my_nvfp4))
    assert "✓" in repr(checks.check_nvfp4_quantize(lambda x: my_nvfp4(x, "auto"), tensor_scale="auto"))
    assert "✓ check_nvfp4_dequantize" in repr(checks.check_nvfp4_dequantize(my_dequantize))
    with pytest.raises(checks.CheckFailed, match="check_nvfp4_quantize"):  # rounds the scale up
        checks.check_nvfp4_quantize(lambda x: (my_nvfp4(x)[0], my_nvfp4(x * 1.1)[1]))
    with pytest.raises(checks.CheckFailed, match="wrong"):  # truncates instead of rounding
        checks.check_nvfp4_quantize(lambda x: (F.encode(x.trunc().clamp(-6, 6), F.FP4_E2M1), my_nvfp4(x)[1]))
    with pytest.raises(checks.CheckFailed, match="check_nvfp4_dequantize"):  # high nibble first
        checks.check_nvfp4_dequantize(lambda c, s, t: my_dequantize((c >> 4) | (c << 4), s, t))
