"""LLM.int8(): the decomposition against its equation and against bitsandbytes (CPU, eval mode),
the Triton path against the torch reference, Int8Linear and its schemes, the chapter's figures
and checks."""
import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from kernel_device import near_ties  # noqa: E402
from lec19quant import checks, int8, plots  # noqa: E402
from lec19quant import nn as qnn  # noqa: E402
from lec19quant.kernels import llm_int8 as kernel  # noqa: E402
from lec19quant.models import ChannelStats  # noqa: E402
from lec19quant.quantize import absmax_quantize, zeropoint_quantize  # noqa: E402


def planted(m: int, k: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Gaussian activations with planted outlier columns: column 3 ten times larger (and 12 once),
    −7 once in the last column, exactly 6.0 (an outlier: the rule is ≥), 5.99 (not one, also in
    float16), and 300 once."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g)
    x[:, 3] *= 10
    x[-1, 3] = 12.0
    x[0, k - 1] = -7.0
    x[-1, k // 2] = 6.0
    x[m // 2, 1] = 5.99
    x[0, 5] = 300.0
    return x.to(dtype)


def linear(n_in: int, n_out: int, seed: int = 0, bias: bool = True) -> nn.Linear:
    """A Linear layer with float32 weights that float16 does not hold exactly, a few large weights,
    an all-zero row, and a row of float16 subnormals."""
    torch.manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        layer.weight[0, 0] = 2.5
        layer.weight[n_out - 1, n_in // 2] = -4.0
        if n_out > 2:
            layer.weight[1] = 0.0
            layer.weight[2] = torch.linspace(-3e-6, 3e-6, n_in)
    return layer


# --------------------------------------------------------------------------------- bitsandbytes


def bitsandbytes_layer(layer: nn.Linear, threshold: float = 6.0):
    import bitsandbytes as bnb
    ref = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              has_fp16_weights=False, threshold=threshold)
    ref.load_state_dict(layer.state_dict())
    return ref.to("cpu").eval()  # moving it quantizes the weight; in training mode it skips outliers


def bitsandbytes_scale(absmax: torch.Tensor) -> torch.Tensor:
    """The multiplier bitsandbytes quantizes with, 127.0 / absmax; 0 where absmax is 0 (bitsandbytes
    gets inf there and codes 0; we store scale 0)."""
    return torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("shape", [(70, 200), (3, 33), (128, 256)])
def test_weight_codes_and_scales_equal_bitsandbytes(shape):
    layer = linear(shape[1], shape[0], seed=shape[0])
    ref = bitsandbytes_layer(layer)
    ours = int8.Int8Linear.from_linear(layer, variant="bitsandbytes")
    assert torch.equal(ours.codes.t(), ref.weight.CB)
    assert torch.equal(ours.scale.flatten(), bitsandbytes_scale(ref.weight.SCB))
    if shape[0] > 2:
        assert ref.weight.SCB[1] == 0 and ours.scale[0, 1] == 0 and (ours.codes[:, 1] == 0).all()
        assert (ours.codes[:, 2] != 0).any()  # float16 subnormals still get codes


def test_bitsandbytes_scale_is_rounded_twice():
    """bitsandbytes' 127.0 / a is 127 · (1/a) in PyTorch: for many a it is not the correctly
    rounded 127 / a of absmax_quantize, which the ideal variant uses."""
    w = torch.rand(40, 64) + 0.01
    twice = int8.quantize_weight(w, variant="bitsandbytes").scale
    exact = int8.quantize_weight(w, variant="ideal").scale
    a = w.half().float().abs().amax(0, keepdim=True)
    assert torch.equal(twice, 127.0 / a) and torch.equal(exact, torch.full_like(a, 127.0) / w.abs().amax(0))
    assert (twice != torch.full_like(a, 127.0) / a).any()


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("threshold", [6.0, 3.5, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("m, k", [(1, 7), (5, 100), (64, 256)])
def test_activation_codes_and_outlier_columns_equal_bitsandbytes(threshold, dtype, m, k):
    import bitsandbytes.functional as F
    x = planted(m, k, seed=m + k, dtype=dtype)
    if m > 2:
        x[2] = 0.0  # an all-zero row
    ca, sca, columns = F.int8_vectorwise_quant(x.half().clone(), threshold=threshold)
    q, ours = int8.split_outliers(x, threshold, variant="bitsandbytes")
    assert torch.equal(q.codes, ca) and torch.equal(q.scale.flatten(), bitsandbytes_scale(sca))
    assert torch.equal(ours, columns if threshold else torch.zeros(0, dtype=torch.long))
    if threshold == 6.0:
        assert {3, 5, k - 1, k // 2} <= set(ours.tolist()) and 1 not in ours.tolist()


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_outputs_agree_with_bitsandbytes_within_float16_rounding(dtype, bias):
    layer = linear(96, 40, seed=3, bias=bias)
    ref = bitsandbytes_layer(layer)
    ours = int8.Int8Linear.from_linear(layer, variant="bitsandbytes")
    x = planted(4 * 9, 96, seed=4).reshape(4, 9, 96).to(dtype)
    want = ref(x)
    got = ours(x)
    assert got.dtype == want.dtype == dtype and got.shape == (4, 9, 40)
    assert torch.equal(ref.state.idx, int8.outlier_columns(x.reshape(-1, 96).half()))
    # bitsandbytes rounds each part to float16 (for float16 x) and dequantizes with 6.200124e-05 ≈ 1/127²
    tolerance = 2**-10 * want.abs().max().item()
    assert (got.float() - want.float()).abs().max().item() <= tolerance
    assert ours.fraction_16bit == len(ref.state.idx) / 96


# ---------------------------------------------------------------------------- the equation


def test_ideal_variant_is_the_equation():
    """X·W ≈ int8_matmul(X without the columns O, W) + X[:, O]·W16[O, :]."""
    x, w = planted(16, 64), torch.randn(64, 24) / 8
    columns = int8.outlier_columns(x)
    rest = x.clone()
    rest[:, columns] = 0
    expected = int8.int8_matmul(rest, w) + x[:, columns] @ w.half().float()[columns]
    assert torch.equal(int8.llm_int8_matmul(x, w, variant="ideal"), expected)


@pytest.mark.parametrize("threshold", [0, 1e30])
def test_without_outliers_it_is_vectorwise_int8(threshold):
    x, w = torch.randn(9, 40), torch.randn(40, 7)
    assert torch.equal(int8.llm_int8_matmul(x, w, threshold, variant="ideal"), int8.int8_matmul(x, w))


@pytest.mark.parametrize("variant", int8.VARIANTS)
def test_every_column_an_outlier_is_the_16bit_product(variant):
    x, w = torch.randn(9, 40), torch.randn(40, 7)
    y = int8.llm_int8_matmul(x, w, 1e-30, variant=variant)
    if variant == "ideal":
        torch.testing.assert_close(y, x @ w.half().float(), rtol=0, atol=0)
    else:
        dequantized = int8.quantize_weight(w, "bitsandbytes")
        torch.testing.assert_close(y, x @ (dequantized.codes / dequantized.scale), rtol=1e-6, atol=1e-6)


def test_decomposition_removes_the_outlier_error():
    """The ideal variant leaves only the int8 error of ordinary values; bitsandbytes' keeps the
    int8 error of W in the outlier rows, which an outlier of 300 magnifies."""
    x, w = planted(32, 128), torch.randn(128, 32) / 11
    exact = x @ w
    without = (int8.int8_matmul(x, w) - exact).norm()
    ideal = (int8.llm_int8_matmul(x, w, variant="ideal") - exact).norm()
    bnb = (int8.llm_int8_matmul(x, w, variant="bitsandbytes") - exact).norm()
    assert ideal < without / 5 and ideal < bnb < without / 2


def test_the_variants_choose_the_row_scale_differently():
    """A row whose largest entry (5) sits below the threshold in an outlier column: the ideal variant's row
    scale ignores the column, bitsandbytes' counts it."""
    x = torch.tensor([[5.0, 0.5, -0.25, 0.125], [7.0, 1.0, 2.0, -1.0]])
    ideal, columns = int8.split_outliers(x, 6.0, variant="ideal")
    bnb, same = int8.split_outliers(x, 6.0, variant="bitsandbytes")
    assert columns.tolist() == same.tolist() == [0]
    assert ideal.scale[0].item() == 127 / 0.5 and bnb.scale[0].item() == (127.0 / torch.tensor([5.0])).item()
    assert ideal.codes[0].tolist() == [0, 127, -64, 32] and bnb.codes[0].tolist() == [0, 13, -6, 3]


def test_ideal_variant_quantizes_like_absmax_quantize():
    x = planted(8, 50)
    q, columns = int8.split_outliers(x, variant="ideal")
    rest = x.index_fill(1, columns, 0)
    reference = absmax_quantize(rest, 8, dim=0)
    assert torch.equal(q.codes, reference.codes) and torch.equal(q.scale, reference.scale)


def test_zeropoint_product_is_exact_in_integers():
    torch.manual_seed(5)
    layer = nn.Linear(48, 12)
    x = torch.randn(2, 7, 48).relu() + 0.5  # one-sided: zero points far from 0
    for activations in ("tensor", "token"):
        for weights in ("tensor", "row"):
            ours = int8.W8A8Linear(layer, activations, weights=weights, method="zeropoint")
            qx = zeropoint_quantize(x.reshape(-1, 48), 8, dim=0 if activations == "token" else None)
            qw = zeropoint_quantize(layer.weight.detach().t(), 8, dim=1 if weights == "row" else None)
            z = (qx.codes.long() - qx.zero_point) @ (qw.codes.long() - qw.zero_point)
            expected = torch.where(qx.scale * qw.scale > 0, z.float() / (qx.scale * qw.scale), 0) + layer.bias
            assert torch.equal(ours(x).reshape(-1, 12), expected)


def test_zeropoint_decomposition():
    x, w = planted(12, 64).relu(), torch.randn(64, 10) / 8
    error = {threshold: (int8.Int8Linear(w.t(), threshold=threshold, variant="ideal", method="zeropoint")(x)
                         - x @ w).norm() for threshold in (0, 6.0)}
    assert error[6.0] < error[0] / 10


# ------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_is_an_error(bad):
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    x[1, 2] = bad
    for variant in int8.VARIANTS:
        with pytest.raises(ValueError, match="NaN or inf"):
            int8.llm_int8_matmul(x, w, variant=variant)
    with pytest.raises(ValueError, match="NaN or inf"):
        int8.outlier_columns(x)


def test_float16_overflow_is_an_outlier_or_an_error():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    x[0, 1] = 1e6  # beyond float16: bitsandbytes' cast makes it inf, and it is an outlier
    y = int8.llm_int8_matmul(x, w, variant="bitsandbytes")
    assert torch.isfinite(y).all() and torch.allclose(y[0], (x @ w)[0], rtol=1e-2)
    with pytest.raises(ValueError, match="float16's range"):
        int8.llm_int8_matmul(x, w, 0, variant="bitsandbytes")
    with pytest.raises(ValueError, match="float16's range"):
        int8.llm_int8_matmul(torch.randn(4, 8), w * 1e6, variant="bitsandbytes")


@pytest.mark.parametrize("options, match", [
    ({"threshold": -1.0}, "threshold must be a finite number"),
    ({"threshold": float("nan")}, "threshold must be a finite number"),
    ({"threshold": float("inf")}, "threshold must be a finite number"),
    ({"threshold": True}, "threshold must be a finite number"),
    ({"threshold": "6"}, "threshold must be a finite number"),
    ({"variant": "fp16"}, "variant must be one of"),
    ({"method": "minmax"}, "method must be one of"),
    ({"activations": "channel"}, "'tensor' or 'token'"),
    ({"weights": "column"}, "'tensor' or 'row'"),
    ({"method": "zeropoint"}, "use variant='ideal'"),
    ({"activations": "tensor"}, "use variant='ideal'"),
])
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        int8.Int8Linear(torch.randn(4, 8), **{"variant": "bitsandbytes", **options})


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"must be \(M, K\) and \(K, N\)"):
        int8.llm_int8_matmul(torch.randn(3, 4), torch.randn(5, 2))
    with pytest.raises(ValueError, match="non-empty matrix"):
        int8.split_outliers(torch.randn(0, 4))
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        int8.outlier_columns(torch.randn(3, 4), 0)
    with pytest.raises(ValueError, match="x has 5 features, the layer takes 8"):
        int8.Int8Linear(torch.randn(4, 8))(torch.randn(2, 5))


# ----------------------------------------------------------------------- layers and schemes


def test_nbytes_counts_what_is_stored():
    layer = linear(64, 32)
    bnb = int8.Int8Linear.from_linear(layer)
    ideal = int8.Int8Linear.from_linear(layer, variant="ideal")
    zero = int8.Int8Linear.from_linear(layer, variant="ideal", method="zeropoint", threshold=0)
    codes, scales, bias = 64 * 32, 32 * 4, 32 * 4
    assert bnb.nbytes == codes + scales + bias
    assert ideal.nbytes == codes + scales + bias + 2 * 64 * 32  # the 16-bit W the outliers meet
    assert zero.nbytes == codes + scales + 32 * 4 + bias  # zero points, no 16-bit copy
    assert qnn.model_nbytes(nn.Sequential(bnb)) == bnb.nbytes


def test_llm_int8_schemes_by_name():
    named = qnn.named_schemes()
    assert named["llm_int8"] == int8.LLMInt8() and named["llm_int8-ideal"] == int8.LLMInt8(variant="ideal")
    assert int8.LLMInt8(2.0, "ideal", "zeropoint").name == "llm_int8-ideal-zp-t2"
    assert int8.W8A8("token", "tensor", "zeropoint").name == "w8a8-zp-token-wtensor"
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(5, 16)
    x[0, 7] = 8.0
    report = qnn.quantize_model(model, "llm_int8", skip=())
    assert report.replaced == ["0", "2"] and isinstance(model[0], int8.Int8Linear)
    assert report.bytes_after == (16 * 32 + 32 * 4 + 32 * 4) + (32 * 4 + 4 * 4 + 4 * 4)  # codes, scales, bias
    assert model(x).shape == (5, 4) and model[0].fraction_16bit > 0


def test_w8a8_with_per_tensor_weights():
    layer = linear(32, 8)
    ours = int8.W8A8Linear(layer, "token", weights="tensor")
    q = absmax_quantize(layer.weight.detach(), 8)
    assert ours.scale.shape == (1, 1) and torch.equal(ours.codes.t(), q.codes)


# ----------------------------------------------------------------------------------- Triton

TRITON_SHAPES = [(1, 7, 3), (5, 100, 65), (17, 256, 33)]


@pytest.mark.parametrize("variant", int8.VARIANTS)
@pytest.mark.parametrize("m, k, n", TRITON_SHAPES)
def test_triton_split_equals_torch(variant, m, k, n, device):
    x = planted(m, k, seed=k)
    if m > 2:
        x[2] = 0.0
    x = x.to(device)
    for threshold in (6.0, 0):
        q, columns = int8.split_outliers(x, threshold, variant, backend="torch")
        qt, columns_t = int8.split_outliers(x, threshold, variant, backend="triton")
        assert torch.equal(q.codes, qt.codes) and torch.equal(q.scale, qt.scale)
        assert torch.equal(columns, columns_t)


@pytest.mark.parametrize("variant", int8.VARIANTS)
@pytest.mark.parametrize("m, k, n", TRITON_SHAPES)
def test_triton_product_equals_torch(variant, m, k, n, device):
    x, w = planted(m, k, seed=n), torch.randn(k, n) / 5
    w[:, 1] = 0.0  # an all-zero output column
    x, w = x.to(device), w.to(device)
    exact = int8.llm_int8_matmul(x, w, 0, variant, backend="triton")
    assert torch.equal(exact, int8.llm_int8_matmul(x, w, 0, variant, backend="torch"))  # int8 only
    y = int8.llm_int8_matmul(x, w, 6.0, variant, backend="triton")
    torch.testing.assert_close(y, int8.llm_int8_matmul(x, w, 6.0, variant, backend="torch"),
                               rtol=1e-6, atol=1e-5)


def test_triton_layer_with_bias_and_strided_input(device):
    layer = linear(80, 20, seed=7).to(device)
    x = planted(80, 30, seed=8).to(device).t()  # a transposed view: (30, 80), not contiguous
    for variant in int8.VARIANTS:
        torch_layer = int8.Int8Linear.from_linear(layer, variant=variant, backend="torch")
        triton_layer = int8.Int8Linear.from_linear(layer, variant=variant, backend="triton")
        torch.testing.assert_close(triton_layer(x), torch_layer(x), rtol=1e-6, atol=1e-5)


def test_triton_float16_input(device):
    x, w = planted(9, 64, dtype=torch.float16).to(device), (torch.randn(64, 16) / 8).to(device)
    q, columns = int8.split_outliers(x, variant="ideal", backend="torch")
    qt, columns_t = int8.split_outliers(x, variant="ideal", backend="triton")
    assert torch.equal(q.codes, qt.codes) and torch.equal(q.scale, qt.scale) and torch.equal(columns, columns_t)
    torch.testing.assert_close(int8.llm_int8_matmul(x, w, backend="triton"),
                               int8.llm_int8_matmul(x, w, backend="torch"), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("variant", int8.VARIANTS)
def test_triton_rounds_near_ties_like_torch(variant, device):
    """Products x·s that round to k + ½ in float32 but are not ties: codes as torch's (a kernel
    that fused x·s into a multiply-add would round about half of them the other way)."""
    a, qmax = torch.tensor(3.0), torch.tensor(127.0)  # (127.0 / a would be 127 · (1/a), rounded twice)
    ties = near_ties(qmax * (1.0 / a) if variant == "bitsandbytes" else qmax / a)
    x = torch.tensor([[3.0, *ties]], device=device)
    q, _ = int8.split_outliers(x, 6.0, variant, backend="torch")
    qt, _ = int8.split_outliers(x, 6.0, variant, backend="triton")
    assert len(ties) > 200 and torch.equal(qt.codes, q.codes) and torch.equal(qt.scale, q.scale)


def test_kernel_threshold_is_rounded_like_torch(device):
    """PyTorch compares a float16 tensor with a float threshold in float16: 6.0009 becomes 6.0."""
    x = torch.tensor([[6.0, 1.0], [2.0, 3.0]], dtype=torch.float16, device=device)
    assert kernel.outlier_flags(x, 6.0009).tolist() == [1, 0]
    assert int8.outlier_columns(x, 6.0009).tolist() == [0]


# ------------------------------------------------------------------------ figures and checks


def fake_stats(layers: int = 4, width: int = 8) -> dict:
    stats = {}
    for i in range(layers):
        s = ChannelStats(torch.zeros(width), torch.zeros(width, dtype=torch.long), torch.zeros(width, dtype=torch.float64),
                         100, 6.0)
        s.count_over[2] = 10 * i
        stats[f"model.layers.{i}.self_attn.q_proj"] = s
    return stats


def test_outlier_token_fractions_plots_percentages():
    ax = plots.outlier_token_fractions(fake_stats(), [2, 5]).axes[0]
    lines = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert list(lines["channel 2"]) == [0, 10, 20, 30] and list(lines["channel 5"]) == [0, 0, 0, 0]
    assert list(lines["6% of the tokens"]) == [6, 6]
    with pytest.raises(ValueError, match="no captured layer"):
        plots.outlier_token_fractions(fake_stats(), [2], module="up_proj")


def test_threshold_tradeoff_draws_both_panels():
    fig = plots.threshold_tradeoff([1, 6, 10], [80.0, 81.0, 82.0], [0.2, 0.01, 0.001], 79.9, 82.4)
    left, right = fig.axes
    assert list(left.get_lines()[0].get_ydata()) == [80.0, 81.0, 82.0]
    assert list(right.get_lines()[0].get_ydata()) == pytest.approx([20.0, 1.0, 0.1])
    with pytest.raises(ValueError, match="one perplexity"):
        plots.threshold_tradeoff([1, 2], [80.0], [0.1, 0.2], 79.9, 82.4)


def right_columns(x, threshold):
    return torch.nonzero((x.abs() >= threshold).any(0)).flatten()


def right_llm_int8(x, w, threshold):
    columns = right_columns(x, threshold)
    rest = x.clone()
    rest[:, columns] = 0
    return int8.int8_matmul(rest, w) + x[:, columns] @ w[columns]  # float32 W passes too


def test_right_answers_pass():
    assert "all 5 matrices right" in repr(checks.check_outlier_columns(right_columns))
    assert "all 5 products right" in repr(checks.check_llm_int8_matmul(right_llm_int8))


@pytest.mark.parametrize("wrong", [
    lambda x, t: torch.nonzero((x.abs() > t).any(0)).flatten(),  # > instead of ≥
    lambda x, t: torch.nonzero((x >= t).any(0)).flatten(),  # forgets negative outliers
    lambda x, t: torch.nonzero((x.abs() >= t).any(1)).flatten(),  # rows, not columns
])
def test_outlier_column_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_outlier_columns"):
        checks.check_outlier_columns(wrong)


def no_decomposition(x, w, t):
    return int8.int8_matmul(x, w)


def rows_scaled_with_the_outliers(x, w, t):
    """Subtracts the outlier columns' int8 part instead of leaving them out of each row's scale."""
    columns = right_columns(x, t)
    qx, qw = absmax_quantize(x, 8, dim=0), absmax_quantize(w, 8, dim=1)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[columns] = False
    int8_part = (qx.codes[:, keep].float() @ qw.codes[keep].float()) / (qx.scale * qw.scale)
    return int8_part + x[:, columns] @ w[columns]


def forgets_the_outlier_part(x, w, t):
    rest = x.clone()
    rest[:, right_columns(x, t)] = 0
    return int8.int8_matmul(rest, w)


@pytest.mark.parametrize("wrong", [no_decomposition, rows_scaled_with_the_outliers, forgets_the_outlier_part])
def test_llm_int8_mistakes_fail(wrong):
    with pytest.raises(checks.CheckFailed, match="check_llm_int8_matmul"):
        checks.check_llm_int8_matmul(wrong)


def test_cases_have_what_they_promise():
    cases = checks.llm_int8_cases()
    x = cases[1][0]
    assert (x == 6.0).any() and (x <= -6).any() and ((x.abs() > 5.9) & (x.abs() < 6)).any()
    assert len(int8.outlier_columns(cases[3][0])) == 0 and len(int8.outlier_columns(*cases[4][::2])) > 60
    assert math.isclose(cases[0][2], 6.0)


def test_llm_int8_on_an_opt_model():
    """The chapter's full-size sweep runs the OPT family: OPT's layers (q/k/v/out_proj, fc1/fc2)
    are replaced, the tied output head is skipped, and the logits stay close."""
    transformers = pytest.importorskip("transformers")
    config = transformers.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                    num_attention_heads=4, max_position_embeddings=32, word_embed_proj_dim=32)
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        before = model(ids).logits
        report = qnn.quantize_model(model, int8.LLMInt8(variant="ideal"))
        after = model(ids).logits
    assert len(report.replaced) == 2 * 6 and report.skipped == ["lm_head"]
    assert all(isinstance(model.get_submodule(name), int8.Int8Linear) for name in report.replaced)
    assert (after - before).abs().max() < 0.02 * before.abs().max()
