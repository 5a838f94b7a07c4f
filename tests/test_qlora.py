"""QLoRA against bitsandbytes and torch: NF4 bytes, double quantization, dequantization, the
Triton kernels, Linear4bit and LoRA layers, PagedAdamW against torch.optim.AdamW bit for bit,
and the memory arithmetic of the QLoRA paper."""
import math

import pytest
import torch
from torch import nn

from lec19quant import checks, formats, memory, qlora
from lec19quant import nn as qnn
from toy_models import ResidualReaders

try:  # the oracle; Colab has none, and `-m "not bitsandbytes"` deselects the tests marked for it
    import bitsandbytes.functional as bnb
except ImportError:
    bnb = None


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a float tensor, so that torch.equal compares bytes (and −0 ≠ 0)."""
    return t.view({4: torch.int32, 2: torch.int16}[t.element_size()])


def bnb_exact_blockwise(x: torch.Tensor, blocksize: int):
    """bitsandbytes' pure-torch 8-bit blockwise quantizer, its "default" kernel. On CPU,
    quantize_blockwise runs a C lookup table instead that puts ~0.2% of the codes one step
    off the nearest value; the torch kernel serves every device without a kernel of its own,
    such as PrivateUse1, and is reached through that dispatch key."""
    op = torch.ops.bitsandbytes.quantize_blockwise.default
    kernel = torch.library.get_kernel(op, "PrivateUse1")
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.PrivateUse1)
    return kernel.call_boxed(keys, x, bnb.create_dynamic_map(), blocksize)


def zero_for_tiny_last(absmax: torch.Tensor, n: int, blocksize: int) -> torch.Tensor:
    """bitsandbytes' CPU path stores 1e-38 as the absmax of a short last block of zeros (it
    clamps before storing there); whole blocks of zeros, and this package, store 0."""
    if n % blocksize and absmax[-1] == torch.tensor(qlora.TINY_ABSMAX):
        absmax = absmax.clone()
        absmax[-1] = 0
    return absmax


def as_bnb_state(state: qlora.QuantState):
    """Our QuantState as bitsandbytes' (the field names are the same), for the weights flattened:
    bitsandbytes 0.50.2's CPU dequantizer finds the absmax of a 2-D weight per row, which is
    wrong where a row is not a whole number of blocks (the blocks run on across rows)."""
    inner = None
    if state.nested:
        inner = bnb.QuantState(state.state2.absmax, code=state.state2.code,
                               blocksize=state.state2.blocksize, dtype=torch.float32)
    return bnb.QuantState(state.absmax, shape=torch.Size([state.numel]), code=state.code,
                          blocksize=state.blocksize, quant_type="nf4", dtype=state.dtype,
                          offset=state.offset, state2=inner)


@pytest.fixture(scope="module")
def real_weights():
    """Three weight matrices of the running example (None when the model is not installed)."""
    from lec19quant import models

    try:
        model, _ = models.load_model()
    except models.ModelNotAvailableError:
        pytest.skip("the default model is not installed")
    layer = model.model.layers[11]
    return [layer.self_attn.k_proj.weight.detach(), layer.mlp.down_proj.weight.detach(),
            model.model.layers[0].self_attn.q_proj.weight.detach()]


def weights(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(len(kind))
    if kind == "normal":
        return torch.randn(96, 160, generator=g) * 0.02
    if kind == "heavy-tailed":
        return torch.randn(7000, generator=g) * torch.exp(2 * torch.randn(7000, generator=g))
    if kind == "outliers":
        w = torch.randn(64 * 40, generator=g)
        w[::97] = 3e4
        w[5] = -1e38
        return w
    if kind == "zeros":
        w = torch.randn(64 * 12, generator=g)
        w[64:64 * 9] = 0  # whole blocks of zeros
        return w
    if kind == "ragged":
        return torch.randn(4098, generator=g)  # a short last block
    raise ValueError(kind)


KINDS = ["normal", "heavy-tailed", "outliers", "zeros", "ragged"]


# --- NF4 and double quantization against bitsandbytes ---------------------------------------


@pytest.mark.bitsandbytes
def test_dynamic_map_is_bitsandbytes():
    assert torch.equal(bits(torch.tensor(qlora.DYNAMIC.table)), bits(bnb.create_dynamic_map()))
    assert len(set(qlora.DYNAMIC.table)) == 256 and qlora.DYNAMIC.table[-1] == 1.0
    assert round(qlora.DYNAMIC.table[0], 5) == -0.99297


def check_against_bnb(w: torch.Tensor, blocksize: int) -> None:
    packed, state = qlora.nf4_quantize(w, blocksize, double_quant=False)
    bnb_packed, bnb_state = bnb.quantize_4bit(w, blocksize=blocksize, quant_type="nf4")
    assert torch.equal(packed, bnb_packed.flatten())
    assert torch.equal(bits(state.absmax), bits(bnb_state.absmax))
    assert torch.equal(state.code, bnb_state.code)
    values = qlora.nf4_dequantize(packed, state)
    theirs = bnb.dequantize_4bit(bnb_packed, as_bnb_state(state))
    assert torch.equal(bits(values.flatten()), bits(theirs.flatten()))

    packed2, state2 = qlora.nf4_quantize(w, blocksize, double_quant=True)
    _, bnb_state2 = bnb.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=True)
    assert torch.equal(packed2, packed)
    assert torch.equal(bits(state2.offset), bits(bnb_state2.offset))
    codes, absmax2 = bnb_exact_blockwise(bnb_state.absmax - bnb_state2.offset, 256)
    assert torch.equal(state2.absmax, codes)
    n_absmax = bnb_state.absmax.numel()
    assert torch.equal(bits(state2.state2.absmax), bits(zero_for_tiny_last(absmax2, n_absmax, 256)))
    assert torch.equal(bits(state2.state2.absmax),
                       bits(zero_for_tiny_last(bnb_state2.state2.absmax, n_absmax, 256)))
    # bitsandbytes' own CPU codes come from a lookup table: under 1% of them a step or two off
    # (and any code in a second-level block of zeros, where every code means 0)
    live = (state2.state2.absmax > 0).repeat_interleave(256)[:n_absmax]
    off = (state2.absmax.int() - bnb_state2.absmax.int()).abs()[live]
    assert off.max() <= 2 and (off > 0).sum() <= max(2, 0.01 * off.numel())
    # dequantization, double quantization included, is bitsandbytes' to the bit
    ours = qlora.nf4_dequantize(packed2, state2)
    theirs = bnb.dequantize_4bit(bnb_packed, as_bnb_state(state2))
    assert torch.equal(bits(ours.flatten()), bits(theirs.flatten()))
    assert ours.shape == w.shape and ours.dtype == w.dtype


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("blocksize", [64, 128, 256])
@pytest.mark.parametrize("kind", KINDS)
def test_nf4_equals_bitsandbytes(kind, blocksize):
    check_against_bnb(weights(kind), blocksize)


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("blocksize", [64, 128, 256])
def test_nf4_equals_bitsandbytes_on_real_weights(real_weights, blocksize):
    for w in real_weights:
        check_against_bnb(w, blocksize)


@pytest.mark.bitsandbytes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights(dtype):
    w = weights("heavy-tailed").clamp(-6e4, 6e4).to(dtype)
    check_against_bnb(w, 64)


@pytest.mark.bitsandbytes
def test_ties_go_to_the_lower_code_and_signed_zeros():
    table = torch.tensor(formats.NF4.table)
    midpoints = (table[1:] + table[:-1]) / 2
    w = torch.cat([torch.tensor([1.0, -0.0, 0.0]), midpoints, torch.zeros(64 - 18)])
    packed, state = qlora.nf4_quantize(w, 64, double_quant=False)
    codes = qlora.unpack_nibbles(packed, 64)
    assert codes[3:18].tolist() == list(range(15))  # midpoint between codes i and i+1 → i
    assert codes[1:3].tolist() == [7, 7]  # ±0 → the code of 0
    assert torch.equal(packed, bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")[0].flatten())


@pytest.mark.bitsandbytes
def test_zero_blocks_and_odd_counts():
    w = torch.randn(333)
    assert torch.equal(qlora.nf4_quantize(w, 64)[0], bnb.quantize_4bit(w, blocksize=64, quant_type="nf4")[0].flatten())
    packed, state = qlora.nf4_quantize(torch.zeros(129), 64, double_quant=False)
    assert packed.tolist() == [0x77] * 65  # the odd last nibble pads with 7 too, as bitsandbytes
    assert state.absmax.tolist() == [0.0, 0.0, 0.0]  # bitsandbytes' CPU path stores 1e-38 for a short last block
    assert qlora.nf4_dequantize(packed, state).abs().max() == 0


@pytest.mark.bitsandbytes
def test_subnormal_blocks_follow_bitsandbytes():
    w = torch.cat([torch.full((64,), 1e-40), torch.linspace(-1e-39, 1e-39, 64), torch.randn(64)])
    check_against_bnb(w, 64)
    packed, state = qlora.nf4_quantize(w, 64, double_quant=False)
    assert (qlora.unpack_nibbles(packed, 64) == 7).all()  # 1e-40 · 1e38 = 0.01 rounds to 0


def test_constants_of_the_double_quantization():
    w = weights("normal")
    packed, state = qlora.nf4_quantize(w)
    assert state.nested and state.absmax.dtype == torch.uint8 and state.state2.blocksize == 256
    assert state.offset.dim() == 0 and state.state2.absmax.numel() == math.ceil(w.numel() / 64 / 256)
    absmax = qlora.nf4_quantize(w, double_quant=False)[1].absmax
    assert (qlora.block_absmax(state) - absmax).abs().max() < 0.01 * absmax.max()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="NaN or inf"):
        qlora.nf4_quantize(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN or inf"):
        qlora.nf4_quantize(torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="empty"):
        qlora.nf4_quantize(torch.zeros(0))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        qlora.nf4_quantize(torch.ones(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="blocksize must be one of"):
        qlora.nf4_quantize(torch.ones(96), blocksize=48)
    packed, state = qlora.nf4_quantize(torch.randn(100))
    with pytest.raises(ValueError, match="packed has 49 bytes"):
        qlora.nf4_dequantize(packed[:-1], state)
    with pytest.raises(TypeError, match="uint8"):
        qlora.nf4_dequantize(packed.int(), state)
    with pytest.raises(ValueError, match="cannot multiply"):
        qlora.nf4_matmul(torch.randn(3, 7), packed, state)


# --- Triton kernels (interpreter) --------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape, blocksize", [((48, 96), 64), ((5, 37), 32), ((201,), 128), ((3, 64), 256)])
def test_dequantize_kernel_is_exact(shape, blocksize, dtype, device):
    w = (torch.randn(shape) * 3).to(dtype).to(device)
    packed, state = qlora.nf4_quantize(w, blocksize)
    triton = qlora.nf4_dequantize(packed, state, backend="triton")
    assert triton.dtype == dtype and triton.shape == w.shape
    assert torch.equal(bits(triton), bits(qlora.nf4_dequantize(packed, state, backend="torch")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, k, blocksize", [(48, 96, 64), (37, 256, 128), (16, 34, 32)])
def test_gemv_kernel_matches_the_reference(n, k, blocksize, dtype, device):
    """Equal to within float32 summation in another order: |Δ| ≤ K·2⁻²³·Σ|x·ŵ| before the
    output is rounded, plus one unit in the last place of the output dtype."""
    g = torch.Generator().manual_seed(n)
    w = torch.randn(n, k, generator=g)
    w[3, 5] = 40.0  # an outlier
    w, x = w.to(device), torch.randn(k, generator=g).to(dtype).to(device)
    packed, state = qlora.nf4_quantize(w, blocksize)
    y = qlora.nf4_matmul(x, packed, state, backend="triton")
    w_hat = qlora.nf4_dequantize(packed, state).to(dtype).float()
    exact = (w_hat.double() @ x.double())
    bound = k * 2.0**-23 * (w_hat.double().abs() @ x.double().abs()) + exact.abs() * torch.finfo(dtype).eps
    assert y.dtype == dtype and y.shape == (n,)
    assert ((y.double() - exact).abs() <= bound + 1e-30).all()
    reference = qlora.nf4_matmul(x, packed, state, backend="torch")
    assert ((y.double() - reference.double()).abs() <= 2 * bound + 1e-30).all()


def test_linear4bit_uses_the_gemv_kernel_for_one_row(monkeypatch, device):
    from lec19quant.kernels import nf4 as kernel

    calls = []
    monkeypatch.setattr(kernel, "gemv", lambda *args: calls.append(args) or args[4].zero_())
    layer = qlora.Linear4bit(torch.randn(32, 64, device=device), backend="triton")
    layer(torch.randn(1, 1, 64, device=device))
    assert len(calls) == 1
    layer(torch.randn(2, 64, device=device))  # more rows: dequantize, then matmul
    assert len(calls) == 1


# --- Linear4bit, LoRA, prepare_qlora, merge --------------------------------------------------


def test_linear4bit_computes_with_the_dequantized_weight_in_the_input_dtype():
    linear = nn.Linear(96, 40)
    layer = qlora.Linear4bit.from_linear(linear)
    w_hat = qlora.nf4_dequantize(layer.packed, layer.state)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 5, 96).to(dtype)
        y = layer(x)
        assert y.dtype == dtype and y.shape == (3, 5, 40)
        assert torch.equal(y, nn.functional.linear(x, w_hat.to(dtype)) + linear.bias.detach().to(dtype))
    assert not any(p.requires_grad for p in layer.parameters())
    # stored: 4 bits a weight, an 8-bit code per 64, a float32 per 64·256, the offset, the bias
    assert qnn.model_nbytes(layer) == 96 * 40 // 2 + 96 * 40 // 64 + 4 + 4 + 40 * 4


def test_linear4bit_backward_dequantizes_again():
    layer = qlora.Linear4bit(torch.randn(24, 64))
    x = torch.randn(4, 64, requires_grad=True)
    dy = torch.randn(4, 24)
    layer(x).backward(dy)
    assert torch.equal(x.grad, dy @ layer.dequantized_weight())
    assert layer.packed.grad is None


def test_linear4bit_state_dict_round_trip():
    layer = qlora.Linear4bit(torch.randn(16, 64), torch.randn(16), blocksize=32)
    again = qlora.Linear4bit(torch.zeros(16, 64), torch.zeros(16), blocksize=32)
    again.load_state_dict(layer.state_dict())
    x = torch.randn(2, 64)
    assert torch.equal(again(x), layer(x))
    assert set(layer.state_dict()) == {"packed", "absmax", "absmax2", "offset", "bias"}


def test_lora_starts_at_the_base_model_and_merges():
    torch.manual_seed(0)
    base = qlora.Linear4bit(torch.randn(40, 64), torch.randn(40))
    lora = qlora.LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 64)
    assert torch.equal(lora(x), base(x))  # B = 0
    assert lora.lora_B.abs().max() == 0 and lora.scaling == 2.0
    bound = 1 / math.sqrt(64)  # Kaiming uniform with a = √5, as nn.Linear: U(−1/√in, 1/√in)
    assert lora.lora_A.abs().max() <= bound and lora.lora_A.std() > bound / 3
    with torch.no_grad():
        lora.lora_B.normal_()
    y = lora(x)
    expected = base(x) + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    assert torch.allclose(y, expected, atol=1e-5)
    merged = lora.merged()
    assert isinstance(merged, nn.Linear) and torch.allclose(merged(x), y, atol=1e-4)
    requantized = lora.merged(requantize=True)
    assert isinstance(requantized, qlora.Linear4bit)
    assert torch.equal(requantized.dequantized_weight(),
                       qlora.nf4_dequantize(*qlora.nf4_quantize(merged.weight.detach())))
    with pytest.raises(ValueError, match="r must be a positive int"):
        qlora.LoRALinear(base, r=0, alpha=1)


def tiny_llama(tied: bool = False):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                      tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(config)


def test_prepare_qlora_trains_only_the_adapters():
    model = tiny_llama()
    qlora.prepare_qlora(model, r=4, alpha=8, target_modules=("q_proj", "v_proj", "*mlp*"))
    lora = {n: m for n, m in model.named_modules() if isinstance(m, qlora.LoRALinear)}
    assert sorted(lora) == sorted(f"model.layers.{i}.{name}" for i in range(2) for name in (
        "self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    assert isinstance(model.model.layers[0].self_attn.k_proj, qlora.Linear4bit)
    assert isinstance(model.lm_head, nn.Linear)  # skipped: it stays as it was, frozen
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}" for n in lora for ab in "AB"}
    ids = torch.randint(0, 100, (2, 8))
    model(ids, labels=ids).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == trainable
    for m in lora.values():  # B = 0 at the start: A's gradient Bᵀ·(…) is zero, B's is not
        assert m.lora_A.grad.abs().max() == 0 and m.lora_B.grad.abs().max() > 0
    with pytest.raises(ValueError, match="no layer matches"):
        qlora.prepare_qlora(tiny_llama(), target_modules="wq")


def test_prepare_lora_is_qlora_without_nf4():
    """The control: the same adapters, started equal under the same seed, on float weights."""
    targets = ("q_proj", "*mlp*")
    quantized, plain = tiny_llama(), tiny_llama()
    weight = plain.model.layers[1].mlp.down_proj.weight.clone()
    torch.manual_seed(1)
    qlora.prepare_qlora(quantized, r=4, alpha=8, target_modules=targets)
    torch.manual_seed(1)
    qlora.prepare_lora(plain, r=4, alpha=8, target_modules=targets)
    adapters = {n: m for n, m in plain.named_modules() if isinstance(m, qlora.LoRALinear)}
    assert sorted(adapters) == sorted(n for n, m in quantized.named_modules()
                                      if isinstance(m, qlora.LoRALinear))
    for name, m in adapters.items():
        assert isinstance(m.base, nn.Linear)
        assert torch.equal(m.lora_A, quantized.get_submodule(name).lora_A)
    assert torch.equal(plain.model.layers[1].mlp.down_proj.base.weight, weight)  # not quantized
    assert isinstance(plain.model.layers[0].self_attn.k_proj, nn.Linear) and isinstance(plain.lm_head, nn.Linear)
    trainable = {n for n, p in plain.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}" for n in adapters for ab in "AB"}
    ids = torch.randint(0, 100, (2, 8))
    plain(ids, labels=ids).loss.backward()
    assert {n for n, p in plain.named_parameters() if p.grad is not None} == trainable
    with pytest.raises(ValueError, match="no layer matches"):  # no adapter on an adapter's base
        qlora.prepare_lora(plain, target_modules=targets)
    qlora.merge(plain)
    assert torch.equal(plain.model.layers[1].mlp.down_proj.weight, weight)  # B = 0
    with pytest.raises(ValueError, match="no layer matches"):
        qlora.prepare_lora(tiny_llama(), target_modules="lm_head")  # skipped


def test_merge_replaces_every_adapter():
    torch.manual_seed(0)
    model = ResidualReaders(n_layers=2, d=64)
    qlora.prepare_qlora(model, r=2, alpha=4, target_modules="o_proj")
    model.layers[1].self_attn.o_proj.lora_B.data.normal_()
    before = [m(torch.ones(1, 64)) for m in (model.layers[1].self_attn.o_proj,)]
    qlora.merge(model)
    assert not any(isinstance(m, qlora.LoRALinear) for m in model.modules())
    assert torch.allclose(model.layers[1].self_attn.o_proj(torch.ones(1, 64)), before[0], atol=1e-5)
    with pytest.raises(ValueError, match="no LoRALinear"):
        qlora.merge(model)


def test_nf4_is_a_named_scheme():
    scheme = qnn.get_scheme("nf4")
    assert isinstance(scheme, qlora.NF4Scheme) and "nf4" in qnn.available_schemes()
    model = ResidualReaders(n_layers=1, d=64)
    report = qnn.quantize_model(model, "nf4")
    assert report.scheme == "nf4" and len(report.replaced) == 6
    assert qlora.NF4Scheme(128, double_quant=False).name == "nf4-b128-nodq"


# --- PagedAdamW ------------------------------------------------------------------------------


SHAPES = [(7, 5), (13,), (4, 4, 3), (2, 9)]
STATE_BYTES = [2 * 4 * math.prod(s) for s in SHAPES]


def run_optimizer(make, steps: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    opt = make(params)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (step + i) % 7 == 3 else torch.randn(p.shape, generator=g)
        opt.step()
    return params, opt


OPTIONS = [{}, {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True},
           {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0, "maximize": True}]


@pytest.mark.parametrize("budget", [None, max(STATE_BYTES), 2 * max(STATE_BYTES)])
@pytest.mark.parametrize("options", OPTIONS)
def test_paged_adamw_equals_torch_adamw_bit_for_bit(options, budget):
    ours, opt = run_optimizer(lambda ps: qlora.PagedAdamW(ps, budget_bytes=budget and budget * 3 // 2
                                                          if options.get("amsgrad") else budget, **options))
    theirs, ref = run_optimizer(lambda ps: torch.optim.AdamW(ps, foreach=False, **options))
    for a, b in zip(ours, theirs):
        assert torch.equal(bits(a.detach()), bits(b.detach()))
    ours_state, ref_state = opt.state_dict()["state"], ref.state_dict()["state"]
    for i in ref_state:
        for name, value in ref_state[i].items():
            assert torch.equal(bits(ours_state[i][name]), bits(value)), name
    if opt.budget_bytes is not None:
        assert opt.stats.peak_resident_bytes <= opt.budget_bytes


@pytest.mark.parametrize("budget, page_ins, prefetches, hits", [
    (None, 3, 2, 14),  # everything stays resident: only the first step pages in
    (80, 15, 0, 0),  # one state at a time: every use pages in, no room to prefetch
    (160, 15, 10, 10),  # two: the next parameter's state is paged in while one is updated
])
def test_paging_counts_what_it_moves(budget, page_ins, prefetches, hits):
    params = [nn.Parameter(torch.randn(10)) for _ in range(3)]  # 80 bytes of state each
    opt = qlora.PagedAdamW(params, budget_bytes=budget)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(10)
        opt.step()
    stats = opt.stats
    assert (stats.page_ins, stats.prefetches, stats.hits) == (page_ins, prefetches, hits)
    assert stats.bytes_in == 80 * page_ins and stats.peak_resident_bytes == min(budget or 240, 240)
    resident = stats.page_ins - stats.page_outs
    assert opt.resident_bytes == 80 * resident and stats.bytes_out == 80 * stats.page_outs  # all dirty
    opt.flush()
    assert stats.bytes_out == 80 * stats.page_ins


def test_paged_adamw_state_dict_round_trip():
    straight, _ = run_optimizer(lambda ps: qlora.PagedAdamW(ps, lr=1e-2, budget_bytes=400), steps=20)
    g = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]
    first = qlora.PagedAdamW(params, lr=1e-2, budget_bytes=400)
    saved_step = None
    for step in range(20):
        for i, p in enumerate(params):
            p.grad = None if (step + i) % 7 == 3 else torch.randn(p.shape, generator=g)
        if step == 10:  # continue in a new optimizer, and a torch AdamW can read the state too
            saved = first.state_dict()
            saved_step = saved["state"][0]["step"].item()
            first = qlora.PagedAdamW(params, lr=0.5, budget_bytes=400)
            first.load_state_dict(saved)
            torch.optim.AdamW(params, foreach=False).load_state_dict(saved)
        first.step()
    for a, b in zip(params, straight):
        assert torch.equal(bits(a.detach()), bits(b.detach()))
    assert first.param_groups[0]["lr"] == 1e-2 and saved_step == 9  # no gradient at step 3


def test_paged_adamw_bad_arguments():
    p = [nn.Parameter(torch.zeros(100))]
    with pytest.raises(ValueError, match="800 bytes of optimizer state, more than budget_bytes=500"):
        qlora.PagedAdamW(p, budget_bytes=500)
    with pytest.raises(ValueError, match="lr must be a float"):
        qlora.PagedAdamW(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        qlora.PagedAdamW(p, betas=(0.9, 1.0))


# --- memory ----------------------------------------------------------------------------------


def test_double_quantization_saves_the_papers_bits():
    assert qlora.constant_bits(double_quant=False) == 0.5
    assert qlora.constant_bits() == 8 / 64 + 32 / (64 * 256) == 0.126953125
    assert memory.BITS_PER_WEIGHT["NF4 (double quant)"] == 4 + qlora.constant_bits()


def test_65b_fine_tunes_on_one_48gb_gpu():
    n = memory.count_params(qlora.LLAMA_65B)
    assert 65.2e9 < n < 65.3e9
    full = qlora.memory_budget(qlora.LLAMA_65B, "full")
    lora = qlora.memory_budget(qlora.LLAMA_65B, "lora")
    qlora_ = qlora.memory_budget(qlora.LLAMA_65B, "qlora")
    assert full.total > 780e9  # the paper: "more than 780 GB"
    assert lora.total > 130e9 and qlora_.total < 48e9 < lora.total
    assert qlora_.trainable == lora.trainable == qlora.lora_parameters(qlora.LLAMA_65B, 64)
    linear = qlora.memory_budget(qlora.LLAMA_65B, "qlora").base - 2 * (n - 80 * sum(
        a * b for a, b in qlora.linear_shapes(qlora.LLAMA_65B)))
    saving = linear / (4 + qlora.constant_bits()) * (0.5 - qlora.constant_bits())
    assert 2.9e9 < saving < 3.1e9  # "approximately 3 GB for a 65B model"
    with pytest.raises(ValueError, match="method must be one of"):
        qlora.memory_budget(qlora.LLAMA_65B, "int8")


def test_lora_parameter_count_matches_a_prepared_model():
    model = tiny_llama(tied=True)
    config = model.config
    qlora.prepare_qlora(model, r=4, alpha=8)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == qlora.lora_parameters(config, 4) == qlora.memory_budget(config, "qlora", r=4).trainable


# --- checks ----------------------------------------------------------------------------------


MIDPOINTS = (torch.tensor(formats.NF4.table)[1:] + torch.tensor(formats.NF4.table)[:-1]) / 2


def student_nf4(x, right=False, blocksize=64):
    blocks = torch.nn.functional.pad(x, (0, -len(x) % blocksize)).view(-1, blocksize)
    absmax = blocks.abs().amax(1)
    scaled = (blocks / absmax[:, None]).flatten()[: len(x)]  # division: near-ties may differ
    return torch.searchsorted(MIDPOINTS, scaled, right=right), absmax


def test_nf4_check():
    assert "✓ check_nf4_quantize: all 8 tensors right" in repr(checks.check_nf4_quantize(student_nf4))
    with pytest.raises(checks.CheckFailed, match="check_nf4_quantize: 1 of 8"):  # ties go up
        checks.check_nf4_quantize(lambda x: student_nf4(x, right=True))
    with pytest.raises(checks.CheckFailed, match="tensors wrong"):
        checks.check_nf4_quantize(lambda x: student_nf4(x, blocksize=32))


def test_adamw_check():
    def adamw(p, grad, m, v, step, lr, betas, eps, weight_decay):
        p = p * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad**2
        m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
        return p - lr * m_hat / (v_hat.sqrt() + eps), m, v

    assert "✓ check_adamw_step" in repr(checks.check_adamw_step(adamw))

    def adam_l2(p, grad, m, v, step, lr, betas, eps, weight_decay):  # weight decay in the gradient
        return adamw(p, grad + weight_decay * p, m, v, step, lr, betas, eps, 0.0)

    def no_bias_correction(p, grad, m, v, step, lr, betas, eps, weight_decay):
        return adamw(p, grad, m, v, 10**9, lr, betas, eps, weight_decay)

    for wrong in (adam_l2, no_bias_correction):
        with pytest.raises(checks.CheckFailed, match="check_adamw_step"):
            checks.check_adamw_step(wrong)


def test_lora_merge_check():
    assert "✓" in repr(checks.check_lora_merge(lambda w, a, b, alpha: w + alpha / a.shape[0] * b @ a))
    with pytest.raises(checks.CheckFailed, match="check_lora_merge"):
        checks.check_lora_merge(lambda w, a, b, alpha: w + alpha * b @ a)  # scale α, not α/r


# --- figures ---------------------------------------------------------------------------------


def test_figures_draw_the_package_numbers():
    import matplotlib

    matplotlib.use("Agg")
    from lec19quant import plots

    ax = plots.nf4_levels(torch.randn(64 * 30)).axes[0]
    lines = [line.get_xdata()[0] for line in ax.get_lines()]
    assert lines[:16] == list(formats.NF4.table) and lines[16:] == pytest.approx([k / 7 for k in range(-7, 8)])
    ax = plots.finetuning_curve([3.0, 2.0, 1.0], {0: 3.5, 3: 1.5}, window=2).axes[0]
    raw, mean, held_out = ax.get_lines()
    assert list(mean.get_ydata()) == [3.0, 2.5, 1.5] and list(held_out.get_xdata()) == [0, 3]
    ax = plots.finetuning_curve([3.0, 2.0, 1.0], {0: 3.5, 3: 1.5}, window=2,
                                control=([2.0, 2.0, 1.0], {0: 3.0, 3: 1.0}), labels=("NF4", "float")).axes[0]
    lines = ax.get_lines()
    assert len(lines) == 6 and list(lines[4].get_ydata()) == [2.0, 2.0, 1.5]
    assert list(lines[5].get_ydata()) == [3.0, 1.0] and lines[5].get_label() == "float: held-out loss"
    budgets = {m: qlora.memory_budget(qlora.LLAMA_65B, m) for m in qlora.METHODS}
    ax = plots.memory_budgets(budgets, limit=48e9).axes[0]
    right_ends = {}
    for bar in ax.patches:
        right_ends[round(bar.get_y(), 3)] = bar.get_x() + bar.get_width()
    assert sorted(right_ends.values()) == pytest.approx(sorted(b.total / 1e9 for b in budgets.values()))
    with pytest.raises(ValueError, match="fewer than one block"):
        plots.nf4_levels(torch.randn(10))
