"""Fake quantization and QAT: outputs and gradients equal torchao's and PyTorch's, the clipped
STE's mask at the range's edges, the Triton kernels bit for bit, LSQ, prepare / convert."""
import copy
import math
import warnings

import pytest
import torch
from torch import nn

from kernel_device import near_ties
from lec19quant import nn as qnn
from lec19quant import qat

BACKENDS = ["torch", "triton"]


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so that equality sees −0 ≠ +0."""
    return t.view({torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}[t.dtype])


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same bits, except that any NaN equals any NaN (torch's own NaN bits vary by code path)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(bits_of(a)[~nan], bits_of(b)[~nan])


def w4a8(backend="torch"):
    return qat.QATConfig(qat.FakeQuantConfig(4, "group", 32), qat.FakeQuantConfig(8, "row", symmetric=False),
                         backend=backend)


def torchao_qat():
    pytest.importorskip("torchao")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchao.quantization import quantize_
        from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer, QATConfig
    return quantize_, QATConfig, IntxFakeQuantizeConfig, IntxFakeQuantizer


def inputs(shape, seed):
    """Normal values with heavy-tailed rows and a few huge outliers."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp(torch.randn(*shape[:-1], 1, generator=g))
    x.view(-1)[:: 97] *= 50
    return x


# --- against torchao ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens, n_in, n_out", [((5, 7), 96, 40), ((1,), 32, 3), ((3, 2), 64, 65)])
def test_qat_linear_equals_torchao_outputs_and_gradients(backend, tokens, n_in, n_out, device):
    quantize_, QATConfig, IntxConfig, _ = torchao_qat()
    torch.manual_seed(n_in * n_out)
    theirs = nn.Sequential(nn.Linear(n_in, n_out)).to(device)
    ours = copy.deepcopy(theirs)
    quantize_(theirs, QATConfig(activation_config=IntxConfig(torch.int8, "per_token", is_symmetric=False),
                                weight_config=IntxConfig(torch.int4, group_size=32), step="prepare"))
    qat.prepare_qat(ours, w4a8(backend), skip=())
    x = inputs((*tokens, n_in), seed=n_out).to(device)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_theirs, y_ours = theirs(x_theirs), ours(x_ours)
    g = torch.randn_like(y_theirs)
    y_theirs.backward(g)
    y_ours.backward(g)
    assert torch.equal(bits_of(y_ours), bits_of(y_theirs))
    assert torch.equal(bits_of(x_ours.grad), bits_of(x_theirs.grad))
    assert torch.equal(bits_of(ours[0].weight.grad), bits_of(theirs[0].weight.grad))
    assert torch.equal(ours[0].bias.grad, theirs[0].bias.grad)
    assert (x_ours.grad == 0).any() or (ours[0].weight.grad == 0).any()  # some values were clipped


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_qparams_equal_torchao(dtype):
    *_, IntxConfig, IntxFakeQuantizer = torchao_qat()
    w = inputs((8, 64), seed=1).to(dtype)
    w[3] = 0  # an all-zero row: the step is the smallest normal number
    for config, ours in [(IntxConfig(torch.int4, group_size=32), qat.FakeQuantConfig(4, "group", 32)),
                         (IntxConfig(torch.int2, "per_channel"), qat.FakeQuantConfig(2, "row")),
                         (IntxConfig(torch.int8, "per_token", is_symmetric=False),
                          qat.FakeQuantConfig(8, "row", symmetric=False))]:
        theirs = IntxFakeQuantizer(config)
        out = theirs(w)
        step, zero = qat.choose_qparams(ours.groups(w), ours.bits, ours.symmetric)
        assert torch.equal(step.flatten(), theirs.scale.float().flatten())
        assert torch.equal(zero.flatten(), theirs.zero_point.float().flatten())
        assert torch.equal(bits_of(qat.FakeQuantizer(ours, backend="torch")(w)), bits_of(out))


def test_symmetric_steps_use_all_codes():
    # torchao's rule: Δ = max|x| / 7.5 for 4 bits, so −max lands on −8 and +max (7.5) is clamped to 7
    x = torch.tensor([[-3.0, 1.0, 2.0, 3.0]])
    step, zero = qat.choose_qparams(x, 4)
    assert step.item() == pytest.approx(0.4) and zero.item() == 0
    codes, *_ = qat.FakeQuantizer(qat.FakeQuantConfig(4, "tensor")).quantize(x)
    assert codes.tolist() == [[-8, 2, 5, 7]]


# --- the clipped straight-through estimator ------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zero", [0, 3, -128])
def test_gradient_mask_at_the_range_edges(backend, zero, device):
    qmin, qmax, step = -128, 127, 0.25  # a power-of-two step: x / Δ is exact, so are the ties
    edges = torch.tensor([qmin - 0.5, qmin - 0.5001, qmin - 0.4999, qmin, qmax, qmax + 0.4999, qmax + 0.5,
                          qmax + 0.5001, qmin - 1.5, qmax - 0.5, qmax + 1.5, 0.5, 1.5, 1e9, -1e9], device=device)
    x = ((edges - zero) * step).requires_grad_()
    out = qat.fake_quantize(x, step, zero, qmin, qmax, backend=backend)
    out.backward(torch.ones_like(out))
    q = torch.round(edges - zero) + zero  # x / Δ rounds half to even
    inside = (q >= qmin) & (q <= qmax)
    assert torch.equal(x.grad, inside.float())
    # half a step beyond either end is inside or outside by the parity of x / Δ's neighbours
    assert x.grad[0] == (zero % 2 == 0) and x.grad[6] == (zero % 2 == 1)
    assert torch.equal(out, (q.clamp(qmin, qmax) - zero) * step)
    # PyTorch's own fake quantization op agrees on values and gradients
    y = x.detach().clone().requires_grad_()
    theirs = torch.fake_quantize_per_tensor_affine(y, step, zero, qmin, qmax)
    theirs.backward(torch.ones_like(theirs))
    assert torch.equal(out, theirs) and torch.equal(x.grad, y.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_equal_pytorch_per_channel_fake_quantize(backend, device):
    x = inputs((6, 50), seed=3).to(device)
    step = x.abs().amax(1) / 100 + torch.rand(6, device=device)  # arbitrary steps
    zero = torch.tensor([0, 5, -3, 20, -20, 1], dtype=torch.int32, device=device)
    ours = qat.fake_quantize(x, step[:, None], zero[:, None].float(), -64, 63, backend=backend)
    theirs = torch.fake_quantize_per_channel_affine(x, step, zero, 0, -64, 63)
    assert torch.equal(bits_of(ours), bits_of(theirs))


def test_round_alone_has_no_gradient_but_the_ste_does():
    x = torch.linspace(-1, 1, 11, requires_grad=True)
    torch.round(x / 0.3).sum().backward()
    assert torch.all(x.grad == 0)
    x.grad = None
    qat.fake_quantize(x, 0.3, 0, -8, 7).sum().backward()
    assert torch.all(x.grad != 0)


def test_special_values():
    x = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, -1e-45])
    x.requires_grad_()
    out = qat.fake_quantize(x, 0.5, 0, -8, 7)
    out.backward(torch.ones_like(out))
    assert out[:2].tolist() == [0.0, 0.0] and math.copysign(1, out[1].item()) == 1  # −0 + z gives +0
    assert out[2].isnan() and out[3:5].tolist() == [3.5, -4.0] and out[5:].tolist() == [0.0, 0.0]
    assert x.grad.tolist() == [1, 1, 0, 0, 0, 1, 1]


# --- the Triton kernels match the torch reference bit for bit -----------------------------------

def adversarial(n: int, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp(3 * torch.randn(n, generator=g))
    specials = torch.tensor([0.0, -0.0, 1e-40, -1e-40, 1e-45, 3.4e38, -3.4e38, float("nan"), float("inf"),
                             -float("inf"), 2.5, -2.5, 0.5, 1.5])
    x[: len(specials)] = specials
    x[len(specials): 64] = torch.randint(-40, 40, (64 - len(specials),), generator=g) * 0.5  # ties
    return x.to(dtype)


# inf and NaN go through IEEE arithmetic on purpose: the interpreter's numpy warns about each one
@pytest.mark.filterwarnings("ignore:.* encountered in (multiply|subtract):RuntimeWarning:triton.runtime.interpreter")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, group", [((3000,), 3000), ((7, 33), 33), ((5, 96), 32), ((1030,), 1),
                                          ((2, 3, 40), 8)])
def test_triton_matches_torch_bit_for_bit(dtype, shape, group, device):
    n = math.prod(shape)
    x = adversarial(n, dtype, seed=n + group).reshape(shape)
    g = torch.Generator().manual_seed(group)
    steps = torch.rand(n // group, generator=g) * 0.7 + 1e-3
    steps[0] = 0.5
    zeros = torch.randint(-5, 6, (n // group,), generator=g).float()
    view, steps, zeros = x.reshape(-1, group).to(device), steps.to(device), zeros.to(device)
    outs, grads = [], []
    for backend in BACKENDS:
        xb = view.clone().requires_grad_()
        out, inside = qat._fake_quantize(xb, steps[:, None], zeros[:, None], -8, 7, backend)
        out.backward(adversarial(n, dtype, seed=7).reshape(out.shape).nan_to_num(0.0).to(device))
        outs.append((out, inside))
        grads.append(xb.grad)
    assert outs[0][1].dtype == outs[1][1].dtype == torch.bool
    assert identical(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    assert identical(grads[0], grads[1])


def test_triton_rounds_near_ties_like_torch(device):
    """x / Δ computed as x·(1/Δ) that rounds to k + ½ in float32 but is not a tie: the kernel
    rounds as torch does (a fused multiply-add would round about half of them the other way)."""
    step = torch.tensor(3.0) / 127
    ties = near_ties(1 / step)
    x = torch.tensor(ties, device=device)
    fast, slow = (qat.fake_quantize(x, step.to(device), 0, -128, 127, backend=b) for b in BACKENDS[::-1])
    assert len(ties) > 200 and identical(fast, slow)


def test_triton_handles_broadcast_steps_and_refuses_columns(device):
    x = inputs((4, 6, 16), seed=5).to(device)
    for step in (torch.tensor(0.1), torch.rand(4, 1, 1) + 0.1, torch.rand(4, 6, 1) + 0.1):
        step = step.to(device)
        assert torch.equal(qat.fake_quantize(x, step, 0, -8, 7, backend="triton"),
                           qat.fake_quantize(x, step, 0, -8, 7, backend="torch"))
    assert torch.equal(qat.fake_quantize(x, 0.2, 1, -8, 7, group_size=8, backend="triton"),
                       qat.fake_quantize(x, 0.2, 1, -8, 7, group_size=8, backend="torch"))
    with pytest.raises(ValueError, match="consecutive elements"):
        qat.fake_quantize(x, torch.rand(16, device=device) + 0.1, 0, -8, 7, backend="triton")
    qat.fake_quantize(x, torch.rand(16, device=device) + 0.1, 0, -8, 7, backend="auto")  # per column: the torch path


# --- learned steps (LSQ) -------------------------------------------------------------------------

def test_step_gradient_equals_pytorch_learnable_fake_quantize():
    x = inputs((6, 32), seed=8)
    steps = x.abs().amax(1) / 5  # some values fall outside [−8, 7]
    g = torch.randn(6, 32)
    x_theirs, s_theirs = x.clone().requires_grad_(), steps.clone().requires_grad_()
    theirs = torch._fake_quantize_learnable_per_channel_affine(x_theirs, s_theirs, torch.zeros(6), 0, -8, 7, 1.0)
    theirs.backward(g)
    x_ours, s_ours = x.clone().requires_grad_(), steps.clone().requires_grad_()
    ours = qat.fake_quantize(x_ours, s_ours[:, None], 0, -8, 7)
    ours.backward(g)
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(s_ours.grad, s_theirs.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=2**-23, atol=0)  # g·Δ·(1/Δ) vs g


def test_lsq_gradient_formula():
    step = torch.tensor(0.25, requires_grad=True)
    x = torch.tensor([0.3, -0.3, 10.0, -10.0])  # x/Δ = 1.2, −1.2, 40 (clamped to 7), −40 (to −8)
    qat.fake_quantize(x, step, 0, -8, 7).backward(torch.ones(4))
    assert step.grad.item() == pytest.approx((1 - 1.2) + (-1 + 1.2) + 7 - 8)


def test_learnable_quantizer_trains_log_steps_by_the_lsq_gradient():
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    quantizer = qat.FakeQuantizer(qat.FakeQuantConfig(3, "group", 16, learnable=True), w)
    step, _ = qat.choose_qparams(w.reshape(16, 16), 3)
    assert quantizer.log_step.shape == (16, 1) and quantizer.log_step.requires_grad
    torch.testing.assert_close(quantizer.log_step.exp(), step)
    quantizer(w).square().sum().backward()
    step = quantizer.log_step.detach().exp().requires_grad_()
    (qat.fake_quantize(w.reshape(16, 16), step, 0, -4, 3) ** 2).sum().backward()
    torch.testing.assert_close(quantizer.log_step.grad, step.grad * step.detach())  # ∂/∂log Δ = Δ·∂/∂Δ
    with pytest.raises(ValueError, match="pass weight"):
        qat.FakeQuantizer(qat.FakeQuantConfig(3, "row", learnable=True))
    with pytest.raises(ValueError, match="16 steps"):
        quantizer(torch.randn(8, 64))


# --- prepare and convert -------------------------------------------------------------------------

def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=50, tie_word_embeddings=True)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("config", [
    w4a8(), qat.QATConfig(qat.FakeQuantConfig(2, "row")),
    qat.QATConfig(qat.FakeQuantConfig(3, "group", 32, symmetric=False, learnable=True)),
    qat.QATConfig(qat.FakeQuantConfig(8, "tensor")),
], ids=lambda c: c.name)
def test_convert_computes_what_the_fake_quantized_model_computed(config):
    model = tiny_llama()
    ids = torch.randint(0, 50, (2, 9))
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    report = qat.prepare_qat(model, config)
    assert set(report.replaced) == linears - {"lm_head"} and report.skipped == ["lm_head"]
    qat.train(model, torch.randint(0, 50, (200,)), steps=2, lr=1e-2, context=8, batch_size=2)
    with torch.no_grad():
        fake = model(ids).logits
    converted = qat.convert_qat(model)
    with torch.no_grad():
        real = model(ids).logits
    assert torch.equal(real, fake)
    assert converted.replaced == report.replaced
    bits = config.weights.bits
    for name in converted.replaced:
        layer = model.get_submodule(name)
        assert isinstance(layer, qat.AffineQuantizedLinear) and layer.codes.dtype == torch.int8
        assert -(2 ** (bits - 1)) <= layer.codes.min() and layer.codes.max() <= 2 ** (bits - 1) - 1
        assert (layer.zero is None) == config.weights.symmetric
        assert not any(p.requires_grad for p in layer.parameters())
    state = model.state_dict()
    assert not any(k.endswith("proj.weight") for k in state)  # no float weight is left
    linear_weights = sum(model.get_submodule(n).codes.numel() for n in converted.replaced)
    assert converted.bytes_before - converted.bytes_after >= linear_weights * (4 - bits / 8) * 0.9


def test_converted_layer_stores_packed_bytes_and_dequantizes_its_codes():
    linear = nn.Linear(64, 10)
    layer = qat.QATConfig(qat.FakeQuantConfig(4, "group", 32, symmetric=False)).quantize_linear(linear)
    converted = qat.AffineQuantizedLinear(layer)
    assert converted.nbytes == 64 * 10 // 2 + 20 * 4 + 20 // 2 + 10 * 4
    assert qnn.model_nbytes(nn.Sequential(converted)) == converted.nbytes
    codes, step, zero = layer.weight_fake_quant.quantize(linear.weight)
    assert torch.equal(converted.dequantized_weight(), ((codes.float() - zero) * step).reshape(10, 64))
    assert torch.equal(converted.dequantized_weight(), layer.weight_fake_quant(linear.weight))


def test_prepare_keeps_the_parameters_and_refuses_twice():
    model = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))
    weights = [model[0].weight, model[2].weight]
    config = qat.QATConfig(qat.FakeQuantConfig(4, "row"))
    qat.prepare_qat(model, config, skip=())
    assert [model[0].weight, model[2].weight] == weights and isinstance(model[0], qat.QATLinear)
    with pytest.raises(ValueError, match="prepared for QAT already"):
        qat.prepare_qat(model, config)
    with pytest.raises(TypeError, match="QATConfig"):
        qat.prepare_qat(nn.Sequential(nn.Linear(2, 2)), "w4-row")
    with pytest.raises(ValueError, match="no QATLinear"):
        qat.convert_qat(nn.Sequential(nn.Linear(2, 2)))


def test_training_through_fake_quantization_moves_the_weights_across_grid_points():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16))
    qat.prepare_qat(model, qat.QATConfig(qat.FakeQuantConfig(2, "row")), skip=())
    x, target = torch.randn(64, 16), torch.randn(64, 16)
    codes_before = model[0].weight_fake_quant.quantize(model[0].weight)[0]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = (model(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert not torch.equal(model[0].weight_fake_quant.quantize(model[0].weight)[0], codes_before)


# --- the training loop ---------------------------------------------------------------------------

class Bigram(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)

    def forward(self, ids):
        return type("Out", (), {"logits": self.table(ids)})


def test_train_is_reproducible_and_learns():
    ids = torch.arange(10).repeat(50)  # 0 1 2 … 9 0 1 …: the next token is determined
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Bigram(10)
        runs.append(qat.train(model, ids, steps=60, lr=0.2, context=8, batch_size=4, seed=3))
    assert runs[0] == runs[1] and runs[0][-1] < 0.1 * runs[0][0]
    assert not model.training
    seen = []
    qat.train(model, ids, steps=3, lr=0.1, context=8, callback=lambda step, m: seen.append(step))
    assert seen == [0, 1, 2]
    with pytest.raises(TypeError, match="token ids"):
        qat.train(model, ids.float(), 1, 0.1)
    with pytest.raises(ValueError, match="too few"):
        qat.train(model, ids[:9], 1, 0.1, context=8)


# --- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    ({"x": torch.tensor([1, 2])}, TypeError, "float32"),
    ({"x": torch.zeros(0)}, ValueError, "empty"),
    ({"scale": 0.0}, ValueError, "positive"),
    ({"scale": float("nan")}, ValueError, "positive"),
    ({"scale": torch.tensor([1, 2])}, ValueError, "positive"),
    ({"zero_point": 0.5}, ValueError, "integers"),
    ({"zero_point": 9}, ValueError, "integers"),
    ({"qmin": 7, "qmax": -8}, ValueError, "qmin < qmax"),
    ({"qmin": -8.0}, ValueError, "qmin < qmax"),
    ({"scale": torch.ones(3) / 4}, ValueError, "broadcast"),
    ({"group_size": 3}, ValueError, "group_size"),
    ({"scale": torch.ones(4, 3) / 4, "group_size": 2}, ValueError, "viewed in groups"),
])
def test_fake_quantize_rejects_bad_input(kwargs, error, match):
    args = {"x": torch.randn(4, 4), "scale": 0.25, "zero_point": 0, "qmin": -8, "qmax": 7, **kwargs}
    with pytest.raises(error, match=match):
        qat.fake_quantize(**args)


def test_zero_point_is_not_learned_and_nan_has_no_step():
    with pytest.raises(ValueError, match="not learned"):
        qat.fake_quantize(torch.randn(3), 0.1, torch.zeros((), requires_grad=True), -8, 7)
    with pytest.raises(ValueError, match="NaN or inf"):
        qat.choose_qparams(torch.tensor([[1.0, float("nan")]]), 4)
    with pytest.raises(ValueError, match="NaN or inf"):
        qat.choose_qparams(torch.tensor([[-3e38, 3e38]]), 4, symmetric=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"bits": 1}, "bits"), ({"bits": 9}, "bits"), ({"bits": 4, "granularity": "column"}, "granularity"),
    ({"bits": 4, "granularity": "group"}, "group_size"), ({"bits": 4, "granularity": "row", "group_size": 8}, "only"),
    ({"bits": 4, "granularity": "group", "group_size": 0}, "positive"),
    ({"bits": 4, "granularity": "group", "group_size": True}, "positive"),
])
def test_fake_quant_config_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qat.FakeQuantConfig(**kwargs)


def test_qat_config_validates():
    with pytest.raises(ValueError, match="learnable steps are for weights"):
        qat.QATConfig(qat.FakeQuantConfig(4, "row"), qat.FakeQuantConfig(8, "row", learnable=True))
    with pytest.raises(ValueError, match="backend"):
        qat.QATConfig(qat.FakeQuantConfig(4, "row"), backend="cuda")
    with pytest.raises(ValueError, match="in_features=48 is not a multiple of group_size=32"):
        qat.prepare_qat(nn.Sequential(nn.Linear(48, 4)), w4a8(), skip=())
    assert w4a8().name == "qat-w4-g32-a8-row-asym"


# --- the chapter's figures and checks --------------------------------------------------------------

def test_fake_quantize_node_draws_the_staircase_and_the_ste():
    import matplotlib

    matplotlib.use("Agg")
    from lec19quant import plots

    left, right = plots.fake_quantize_node(step=0.5, zero=1, qmin=-4, qmax=3).axes
    x, x_hat = left.get_lines()[1].get_data()
    assert torch.equal(torch.as_tensor(x_hat), qat.fake_quantize(torch.as_tensor(x), 0.5, 1, -4, 3))
    _, ste = right.get_lines()[1].get_data()
    inside = (torch.round(torch.as_tensor(x) / 0.5) + 1 >= -4) & (torch.round(torch.as_tensor(x) / 0.5) + 1 <= 3)
    assert torch.equal(torch.as_tensor(ste), inside.float())


def test_ptq_vs_qat_and_grid_drift_draw_the_numbers():
    import matplotlib

    matplotlib.use("Agg")
    from lec19quant import plots

    ax = plots.ptq_vs_qat([8, 4, 2], [9.0, 9.5, 14.0], [9.0, 9.1, 9.3], 8.9).axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()[:2]] == [[9.0, 9.5, 14.0], [9.0, 9.1, 9.3]]
    assert list(ax.get_lines()[2].get_ydata()) == [8.9, 8.9]
    torch.manual_seed(0)
    before = torch.randn(8, 32)
    after = before + 0.05 * torch.randn(8, 32)
    quantizer = qat.FakeQuantizer(qat.FakeQuantConfig(2, "row"))
    left, right = plots.grid_drift(quantizer, before, after).axes
    changed = int((quantizer.quantize(before)[0] != quantizer.quantize(after)[0]).sum())
    assert 0 < changed and right.get_title() == f"the {changed:,} weights whose code QAT changed"
    assert left.get_title() == "all 256 weights" and len(right.patches) == 2  # before and after
    levels = sorted(line.get_xdata()[0] for line in left.get_lines())
    assert levels == [-2, -1.5, -1, -0.5, 0, 0.5, 1]  # the levels and the rounding boundaries


def fake_quantize_ste(x, step, zero, qmin, qmax):
    v = x * (1 / step)
    q = v + (torch.round(v) - v).detach() + zero
    return (q.clamp(qmin, qmax) - zero) * step


def lsq_gradient(x, step, qmin, qmax):
    v = x / step
    q = torch.round(v)
    return torch.where(q > qmax, float(qmax), torch.where(q < qmin, float(qmin), q - v))


def test_checks_pass_right_answers():
    from lec19quant import checks

    assert "all 6 cases" in repr(checks.check_fake_quantize(fake_quantize_ste))
    assert "all 4 cases" in repr(checks.check_lsq_gradient(lsq_gradient))


@pytest.mark.parametrize("wrong", [
    lambda x, s, z, a, b: (torch.round(x / s) + z).clamp(a, b).sub(z).mul(s),  # no STE: no gradient
    lambda x, s, z, a, b: x + (fake_quantize_ste(x, s, z, a, b) - x).detach(),  # STE without the clip
    lambda x, s, z, a, b: fake_quantize_ste(x + 0.5 * s * (x > 0), s, z, a, b),  # rounds ties up
    lambda x, s, z, a, b: fake_quantize_ste(x, s, z, a, b + 1),  # one code too many
])
def test_check_fake_quantize_catches_mistakes(wrong):
    from lec19quant import checks

    with pytest.raises(checks.CheckFailed, match="check_fake_quantize"):
        checks.check_fake_quantize(wrong)


@pytest.mark.parametrize("wrong", [
    lambda x, s, a, b: torch.round(x / s) - x / s,  # forgets the ends of the range
    lambda x, s, a, b: x / s - torch.round(x / s),  # the sign
    lambda x, s, a, b: lsq_gradient(x, s, a, b).sum(),  # one number, not one per element
])
def test_check_lsq_gradient_catches_mistakes(wrong):
    from lec19quant import checks

    with pytest.raises(checks.CheckFailed, match="check_lsq_gradient"):
        checks.check_lsq_gradient(wrong)
