"""Group-wise storage (GPTQ/AWQ checkpoints) against compressed-tensors (llm-compressor's format
library): the same packed words, the same scales, zero points and codes; the hub layout's facts
(AutoGPTQ's 3-bit straddling, v1's z − 1); the Triton kernels against the torch reference."""
import pytest
import torch
from torch import nn

from lec19quant.groupwise import (GroupQuantLinear, bits_per_weight, default_g_idx, dequantize_codes,
                                  group_params, pack, quantize_codes, unpack)

ct_pack = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
ct_quant = pytest.importorskip("compressed_tensors.quantization")
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402


def ct_args(bits, group_size, sym):
    return ct_quant.QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy="group",
                                     group_size=group_size)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("n", [1, 31, 32, 33, 100, 576])
def test_pack_equals_compressed_tensors(bits, n):
    g = torch.Generator().manual_seed(bits * 1000 + n)
    codes = torch.randint(0, 2**bits, (7, n), generator=g)
    codes[0] = 2**bits - 1  # every bit set
    codes[1] = 0
    signed = (codes - 2 ** (bits - 1)).to(torch.int8)
    expected = ct_pack.pack_to_int32(signed, bits, packed_dim=1)
    assert torch.equal(pack(codes, bits), expected)
    # qweight's orientation: packed along the input dimension (dim 0 of codes.T)
    assert torch.equal(pack(codes, bits).t(), ct_pack.pack_to_int32(signed.t().contiguous(), bits, packed_dim=0))
    assert torch.equal(unpack(expected, bits, n).long(), codes)


def test_three_bit_values_straddle_words_as_autogptq_packs_them():
    # AutoGPTQ: value 10 of 32 has its low two bits at bits 30–31 of word 0 and its high bit at bit 0
    # of word 1; value 21 its low bit at bit 31 of word 1 and its two high bits at bits 0–1 of word 2
    codes = torch.zeros(1, 32, dtype=torch.int64)
    codes[0, 10] = 0b111
    assert pack(codes, 3).tolist() == [[-(2**30), 1, 0]]  # 0xC0000000 as int32
    codes[0, 10], codes[0, 21], codes[0, 31] = 0, 0b111, 0b101
    assert pack(codes, 3).tolist() == [[0, -(2**31), (3 | (0b101 << 29)) - 2**32]]


def test_pack_rejects_out_of_range_values_and_wrong_word_counts():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack(torch.tensor([[16]]), 4)
    with pytest.raises(ValueError, match="words"):
        unpack(torch.zeros(1, 3, dtype=torch.int32), 4, 8)
    with pytest.raises(TypeError, match="int32"):
        unpack(torch.zeros(1, 1, dtype=torch.int64), 4, 8)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("bits", [3, 4, 8])
def test_scales_zero_points_and_codes_equal_compressed_tensors(bits, sym):
    g = torch.Generator().manual_seed(bits)
    x = torch.randn(64, 8, 128, generator=g) * torch.rand(64, 8, 1, generator=g)
    x[0, 0] = x[0, 0].abs()  # all positive: min clamps to 0
    x[0, 1] = -x[0, 1].abs()
    x[1, 0, :5] = 40.0  # an outlier
    scale, zero = group_params(x, bits, sym)
    args = ct_args(bits, 128, sym)
    ct_scale, ct_zero = calculate_qparams(x.amin(-1), x.amax(-1), args)
    assert torch.equal(scale[..., 0], ct_scale.to(torch.float16))
    ours = zero[..., 0] - 2 ** (bits - 1)  # compressed-tensors' codes are signed
    differ = ours != ct_zero
    if sym:
        assert not differ.any()
    else:
        # compressed-tensors takes −min/s with the float32 scale, we with the stored float16 one
        # (relative difference ≤ 2⁻¹¹): they differ only where −min/s is that close to a
        # half-integer — a few groups in a thousand at 3–4 bits, more at 8 where −min/s reaches 255
        assert differ.float().mean() < (0.005 if bits < 8 else 0.05)
        # (float16 subnormal scales are coarser still); each difference is a half-integer between
        lo = -x.amin(-1).clamp(max=0)
        ours_exact, theirs_exact = (lo / scale[..., 0].float())[differ], (lo / ct_scale)[differ]
        between = torch.minimum(ours_exact, theirs_exact) < ours_exact.round().minimum(theirs_exact.round()) + 0.5
        assert between.all() and (torch.maximum(ours_exact, theirs_exact) >= ours_exact.round().minimum(theirs_exact.round()) + 0.5).all()
    # given the same scale and zero point, the same codes
    w = x.reshape(64, -1)
    codes = quantize_codes(x, scale, zero, bits).reshape(64, -1)
    ct_codes = ct_quantize(w, scale[..., 0].float(), (zero[..., 0] - 2 ** (bits - 1)).to(torch.int8), args)
    # it rounds x/s + z, we round(x/s) + z: adding z first can round x/s onto a tie (1 in 65536 here)
    differ = codes - 2 ** (bits - 1) != ct_codes.float()
    assert differ.sum() <= 2 and (codes - 2 ** (bits - 1) - ct_codes.float()).abs().max() <= 1
    near_tie = (w / scale.float().repeat_interleave(128, -1).reshape(64, -1))[differ]
    assert ((near_tie - near_tie.floor() - 0.5).abs() < 1e-4).all()


def test_all_zero_group_gets_gptq_range_and_dequantizes_to_zero():
    scale, zero = group_params(torch.zeros(2, 16), 4)
    assert torch.equal(scale, torch.full((2, 1), 2 / 15).half()) and (zero == 8).all()
    codes = quantize_codes(torch.zeros(2, 16), scale, zero, 4)
    assert (dequantize_codes(codes, scale, zero) == 0).all()


def test_ragged_last_group_on_576_columns():
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(576, 24)
    nn.init.normal_(linear.weight, generator=g)
    linear.weight.data[:, 512:] *= 0.01  # the short last group has its own, small range
    layer = GroupQuantLinear.from_linear(linear, 4, 128)
    assert layer.scales.shape == (5, 24)
    for k, (lo, hi) in enumerate([(0, 128), (128, 256), (256, 384), (384, 512), (512, 576)]):
        scale, zero = group_params(linear.weight.detach()[:, lo:hi], 4)
        assert torch.equal(layer.scales[k], scale[:, 0]) and torch.equal(layer.zeros()[:, k].float(), zero[:, 0])
        codes = quantize_codes(linear.weight.detach()[:, lo:hi], scale, zero, 4)
        assert torch.equal(layer.dequantized_weight()[:, lo:hi], dequantize_codes(codes, scale, zero))


def test_nbytes_counts_what_is_stored():
    layer = GroupQuantLinear.from_linear(nn.Linear(576, 1536), 4, 128)
    # codes 4 bits, 5 groups of float16 scales and 4-bit zero points per row, float32 bias
    assert layer.nbytes == 576 * 1536 // 2 + 5 * 1536 * 2 + 5 * 1536 // 2 + 1536 * 4
    assert bits_per_weight(4, 128) == 4 + 20 / 128
    act = GroupQuantLinear(layer.codes(), layer.scales.t(), layer.zeros(), 4, 128,
                           torch.randperm(576) // 128, None)
    assert act.nbytes == layer.nbytes - 1536 * 4 + 576 * 4  # no bias, a stored g_idx


@pytest.mark.parametrize("bits,sym", [(4, False), (3, False), (4, True), (8, False), (2, True)])
def test_hub_round_trip(bits, sym):
    g = torch.Generator().manual_seed(bits)
    linear = nn.Linear(96, 64)
    nn.init.normal_(linear.weight, generator=g)
    layer = GroupQuantLinear.from_linear(linear, bits, 32, sym)
    layer.zeros()  # a zero of 0 would need v2: make sure none is (the range contains 0 strictly)
    tensors = layer.to_gptq()
    assert tensors["qweight"].shape == (96 * bits // 32, 64) and tensors["qweight"].dtype == torch.int32
    assert tensors["qzeros"].shape == (3, 64 * bits // 32) and tensors["scales"].dtype == torch.float16
    assert torch.equal(tensors["g_idx"], torch.arange(96, dtype=torch.int32) // 32)
    if sym and bits == 4:  # AutoGPTQ's symmetric 4-bit files: zero 8 stored as 7 in every nibble
        assert (tensors["qzeros"] == 0x77777777).all()
    loaded = GroupQuantLinear.from_gptq(tensors, bits, 32, backend="torch")
    assert torch.equal(loaded.dequantized_weight(), layer.dequantized_weight())
    assert torch.equal(loaded.bias, layer.bias.half())  # checkpoints keep the bias in float16
    x = torch.randn(5, 96, generator=g)
    assert torch.equal(loaded(x), nn.functional.linear(x, layer.dequantized_weight()) + layer.bias.half().float())
    v2 = GroupQuantLinear.from_gptq(layer.to_gptq("gptq_v2"), bits, 32, "gptq_v2")
    assert torch.equal(v2.qzeros, layer.qzeros)


def test_v1_cannot_store_a_zero_point_of_zero():
    linear = nn.Linear(32, 8)
    linear.weight.data = torch.rand(8, 32) + 0.1  # all positive: min clamps to 0, z = 0
    layer = GroupQuantLinear.from_linear(linear, 4, 32)
    assert (layer.zeros() == 0).all()
    with pytest.raises(ValueError, match="gptq_v2"):
        layer.to_gptq()
    loaded = GroupQuantLinear.from_gptq(layer.to_gptq("gptq_v2"), 4, 32, "gptq_v2")
    assert torch.equal(loaded.dequantized_weight(), layer.dequantized_weight())


def test_act_order_g_idx_is_used_and_kept():
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 16, (8, 40), generator=g)
    scales, zeros = torch.rand(8, 3, generator=g) + 0.5, torch.randint(1, 16, (8, 3), generator=g)
    g_idx = torch.randperm(40, generator=g) % 3
    layer = GroupQuantLinear(codes, scales, zeros, 4, 16, g_idx)
    expected = (codes - zeros[:, g_idx]) * scales.half().float()[:, g_idx]
    assert torch.equal(layer.dequantized_weight(), expected)
    assert torch.equal(GroupQuantLinear.from_gptq(layer.to_gptq(), 4, 16).g_idx, g_idx.int())
    plain = GroupQuantLinear(codes, scales, zeros, 4, 16, default_g_idx(40, 16))
    assert plain.g_idx is None  # c // g is not stored


def test_bad_input_is_named():
    linear = nn.Linear(32, 8)
    with pytest.raises(ValueError, match="bits"):
        GroupQuantLinear.from_linear(linear, 9, 32)
    with pytest.raises(ValueError, match="group_size"):
        GroupQuantLinear.from_linear(linear, 4, 0)
    linear.weight.data[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GroupQuantLinear.from_linear(linear, 4, 32)
    with pytest.raises(ValueError, match="g_idx"):
        GroupQuantLinear(torch.zeros(2, 8), torch.ones(2, 1), torch.zeros(2, 1), 4, 8, torch.zeros(7))
    with pytest.raises(ValueError, match="scales"):
        GroupQuantLinear(torch.zeros(2, 8), torch.ones(2, 2), torch.zeros(2, 2), 4, 8)
    with pytest.raises(ValueError, match="checkpoint_format"):
        GroupQuantLinear.from_linear(nn.Linear(8, 8), 4, 8).to_gptq("awq")


# -- Triton kernels under the interpreter ---------------------------------------------------------

def _layer(bits, n, k, group_size, act_order, seed, backend):
    g = torch.Generator().manual_seed(seed)
    groups = -(-k // group_size)
    codes = torch.randint(0, 2**bits, (n, k), generator=g)
    scales = torch.rand(n, groups, generator=g) * 0.1 + 1e-3
    zeros = torch.randint(0, 2**bits, (n, groups), generator=g)
    g_idx = default_g_idx(k, group_size)[torch.randperm(k, generator=g)] if act_order else None
    return GroupQuantLinear(codes, scales, zeros, bits, group_size, g_idx, torch.randn(n, generator=g), backend)


@pytest.mark.parametrize("bits,n,k,group_size,act_order",
                         [(4, 37, 100, 32, False), (3, 50, 96, 32, True), (2, 8, 33, 16, True),
                          (8, 70, 64, 128, False), (5, 3, 130, 64, True)])
def test_triton_dequantize_is_bit_exact(bits, n, k, group_size, act_order, device):
    ref = _layer(bits, n, k, group_size, act_order, bits, "torch").to(device)
    tri = _layer(bits, n, k, group_size, act_order, bits, "triton").to(device)
    assert torch.equal(tri.dequantized_weight(), ref.dequantized_weight())


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("bits,k,act_order", [(4, 100, False), (3, 96, True), (4, 130, True)])
def test_triton_matmul_equals_reference(bits, k, act_order, dtype, tol, device):
    from lec19quant.kernels import groupwise as kernel

    ref = _layer(bits, 45, k, 32, act_order, 7, "torch").to(device)
    tri = _layer(bits, 45, k, 32, act_order, 7, "triton").to(device)
    for m in (1, 3, 20):  # the fused kernel, and past SMALL_M dequantize + matmul
        x = torch.randn(m, k).to(dtype).to(device)
        expected = ref(x.float()).to(dtype).float()
        scale = expected.abs().max()
        assert (tri(x).float() - expected).abs().max() <= tol * scale
        if act_order:
            gathered = kernel.matmul(tri, x, act_order="gather").float() + tri.bias.to(dtype).float()
            assert (gathered - expected).abs().max() <= tol * scale
    with pytest.raises(ValueError, match="features"):
        tri(torch.randn(2, k + 1, device=device))


def test_rtn_scheme_through_nn_quantize_model():
    from lec19quant import nn as qnn
    from lec19quant.groupwise import RTN

    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 8))
    expected = GroupQuantLinear.from_linear(model[0], 3, 32).dequantized_weight()
    report = qnn.quantize_model(model, RTN(3, 32), skip=())
    assert report.scheme == "rtn-w3-g32" and len(report.replaced) == 2
    assert torch.equal(model[0].dequantized_weight(), expected)
