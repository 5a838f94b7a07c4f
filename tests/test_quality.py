"""lec19quant.quality: the formulas on hand-made logits, llama.cpp's chunking and base-file
format, the activation rounding of llama.cpp's CPU backend against ggml's own, the Triton
statistics kernel against the torch reference, and unquantized GGUF files."""
import ctypes
import math

import numpy as np
import pytest
import torch
from torch import nn

from lec19quant import quality
from oracles.ggml import ggml  # noqa: F401  (the session fixture)


def stats(base_logits, logits, target, backend="torch", device="cpu"):
    lb = quality.log_probs(torch.as_tensor(base_logits, dtype=torch.float32)).to(device)
    z = torch.as_tensor(logits, dtype=torch.float32).to(device)
    return quality.token_stats(lb, z, torch.as_tensor(target).to(device), backend=backend)


BACKENDS = ["torch", "triton"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_token_distributions_by_hand(backend, device):
    # base p = (1/4, 3/4), quantized q = (1/2, 1/2); the correct token is 1
    s = stats([[0.0, math.log(3)]], [[0.0, 0.0]], [1], backend, device)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert s.kld.item() == pytest.approx(kl, rel=1e-6)
    assert s.p_base.item() == pytest.approx(0.75, rel=1e-6) and s.p_q.item() == pytest.approx(0.5, rel=1e-6)
    assert not s.same_top.item()  # q's tie goes to the first index, 0; the base's top is 1


def test_identical_rows_give_exactly_zero():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 1000, generator=g) * 5
    z[3, 10] = 1e4
    s = stats(z, z, torch.arange(7))
    assert torch.equal(s.kld, torch.zeros(7, dtype=torch.float64))
    assert s.same_top.all() and torch.equal(s.p_base, s.p_q)


def test_identical_rows_in_the_kernel(device):
    z = torch.randn(5, 3000, generator=torch.Generator().manual_seed(1)) * 5
    s = stats(z, z, torch.arange(5), "triton", device)
    assert s.kld.abs().max().item() < 1e-6 and s.same_top.all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_logits(backend, device):
    # base: all mass on token 3; quantized: token 3 at −1e4, token 0 at +1e4 → KL = 2e4 (float64: +log 2)
    base = torch.full((1, 6), -1e4)
    base[0, 3] = 1e4
    q = torch.full((1, 6), 0.0)
    q[0, 3], q[0, 0] = -1e4, 1e4
    s = stats(base, q, [3], backend, device)
    assert s.kld.item() == pytest.approx(2e4, rel=1e-6)
    assert s.p_base.item() == 1.0 and s.p_q.item() == 0.0 and not s.same_top.item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_base_tokens_below_minus_16_are_left_out(backend, device):
    # base log-probabilities (−1e-9, −20, −17): only token 0 counts; q puts 1/2 on token 0
    lb = torch.tensor([[math.log1p(-math.exp(-20) - math.exp(-17)), -20.0, -17.0]])
    q = torch.tensor([[0.0, 0.0, -1e4]])
    s = quality.token_stats(lb.to(device), q.to(device), torch.tensor([1]).to(device), backend=backend)
    p0 = math.exp(lb[0, 0].item())
    assert s.kld.item() == pytest.approx(p0 * (math.log(p0) - math.log(0.5)), rel=1e-6)
    assert s.p_base.item() == pytest.approx(math.exp(-20), rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_index(backend, device):
    base = [[1.0, 5.0, 5.0], [5.0, 5.0, 1.0], [2.0, 2.0, 2.0]]
    q = [[5.0, 5.0, 1.0], [5.0, 5.0, 1.0], [0.0, 0.0, 0.0]]
    s = stats(base, q, [0, 1, 2], backend, device)
    assert s.same_top.tolist() == [False, True, True]


def test_nan_and_bad_shapes_are_rejected():
    z = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="NaN"):
        quality.token_stats(z, torch.full((2, 5), float("nan")), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        quality.token_stats(z, torch.zeros(2, 6), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="one token id per row"):
        quality.token_stats(z, z, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        quality.token_stats(z, z, torch.tensor([0, 5]))


@pytest.mark.parametrize("rows, vocab", [(1, 1), (3, 7), (5, 1000), (2, 1025), (3, 49_152)])
def test_kernel_equals_torch(rows, vocab, device):
    g = torch.Generator().manual_seed(rows * vocab)
    base = torch.randn(rows, vocab, generator=g) * 4
    q = base + 0.3 * torch.randn(rows, vocab, generator=g)
    q[0, :3] = torch.tensor([1e4, -1e4, 0.0])[:vocab]  # extreme logits in the first row
    if vocab > 1:
        base[-1, -1] = base[-1].max() + 1  # the top token in the ragged last block
    target = torch.randint(0, vocab, (rows,), generator=g)
    lb = quality.log_probs(base)
    fast = quality.token_stats(lb.to(device), q.to(device), target.to(device), backend="triton")
    ref = quality.token_stats(lb.to(device), q.to(device), target.to(device), backend="torch")
    torch.testing.assert_close(fast.kld, ref.kld, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(fast.p_base, ref.p_base, rtol=1e-6, atol=0)
    torch.testing.assert_close(fast.p_q, ref.p_q, rtol=1e-5, atol=1e-12)
    assert torch.equal(fast.same_top, ref.same_top)


def test_kernel_reads_half_precision_and_strided_rows(device):
    g = torch.Generator().manual_seed(5)
    wide = torch.randn(4, 600, generator=g).half()
    lb, q = quality.log_probs(wide[:, :500].float()).half(), wide[:, 100:600]  # q's rows are strided
    fast = quality.token_stats(lb.to(device), q.to(device), torch.arange(4).to(device), backend="triton")
    ref = quality.token_stats(lb.to(device), q.to(device), torch.arange(4).to(device), backend="torch")
    torch.testing.assert_close(fast.kld, ref.kld, rtol=1e-5, atol=2e-6)


# ---- summary: llama.cpp's definitions, computed independently with numpy ----------------------

def test_summary_matches_the_definitions():
    g = np.random.default_rng(0)
    n = 1001
    kld = g.exponential(0.05, n)
    p_base = g.uniform(0.01, 1, n)
    p_q = np.clip(p_base + g.normal(0, 0.05, n), 1e-4, 1)
    same = g.uniform(size=n) < 0.9
    stats = quality.TokenStats(torch.tensor(kld), torch.tensor(same), torch.tensor(p_base), torch.tensor(p_q))
    s = quality.summarize(stats)
    sem = lambda x: np.std(x) / math.sqrt(n - 1)  # noqa: E731
    nq, nb = -np.log(p_q), -np.log(p_base)
    np.testing.assert_allclose(stats.nll_q.numpy(), nq)
    np.testing.assert_allclose(stats.nll_base.numpy(), nb)
    assert s["ppl_q"] == pytest.approx(math.exp(nq.mean())) and s["ppl_base"] == pytest.approx(math.exp(nb.mean()))
    assert s["ppl_q_err"] == pytest.approx(math.exp(nq.mean()) * sem(nq))
    cov = np.cov(nq, nb, ddof=0)[0, 1] / (n - 1)
    assert s["ln_ppl_ratio"] == pytest.approx(nq.mean() - nb.mean())
    assert s["ln_ppl_ratio_err"] == pytest.approx(math.sqrt(sem(nq) ** 2 + sem(nb) ** 2 - 2 * cov))
    assert s["mean_kld"] == pytest.approx(kld.mean()) and s["mean_kld_err"] == pytest.approx(sem(kld))
    for f in (90, 95, 99, 99.9):
        assert s[f"kld_{f:g}"] == pytest.approx(np.percentile(kld, f))
    assert s["median_kld"] == pytest.approx(np.median(kld)) and s["max_kld"] == kld.max()
    dp = p_q - p_base
    for f in (1, 5, 95, 99):
        assert s[f"dp_{f:g}"] == pytest.approx(np.percentile(dp, f))
    assert s["rms_dp"] == pytest.approx(math.sqrt((dp ** 2).mean()))
    assert s["rms_dp_err"] == pytest.approx(0.5 / math.sqrt((dp ** 2).mean()) * sem(dp ** 2))
    assert s["same_top_p"] == pytest.approx(same.mean())
    assert s["same_top_p_err"] == pytest.approx(math.sqrt(same.mean() * (1 - same.mean()) / (n - 1)))


def test_summary_needs_two_tokens():
    one = quality.TokenStats(*(torch.zeros(1, dtype=torch.float64),) * 1, torch.ones(1, dtype=torch.bool),
                             torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        quality.summarize(one)


def test_report_formats_a_statistic_with_its_error():
    kld = torch.tensor([0.0, 0.1, 0.2, 0.3] * 3, dtype=torch.float64)  # mean 0.15, σ = √(0.0125/11)
    same = torch.tensor([True, True, False, True] * 3)  # 0.75 ± √(0.75·0.25/11)
    p = torch.full((12,), 0.5, dtype=torch.float64)
    report = quality.Report(quality.TokenStats(kld, same, p, p))
    assert report.format("mean_kld", ".3f") == "0.150 ± 0.034"
    assert report.format("same_top_p", ".1%") == "75.0% ± 13.1%"
    with pytest.raises(KeyError, match="'max_kld' has no standard error.*'mean_kld'"):
        report.format("max_kld")


# ---- the protocol ------------------------------------------------------------------------------

class Bigram(nn.Module):
    """logits of the next token = table[current token]; takes transformers' logits_to_keep."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, ids, logits_to_keep=0):
        logits = self.table[ids]
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})


def test_chunks_score_the_second_half_of_each():
    g = torch.Generator().manual_seed(0)
    vocab, n_ctx = 11, 16
    tokens = torch.randint(0, vocab, (3 * n_ctx + 5,), generator=g)  # a remainder of 5 is dropped
    model = Bigram(torch.randn(vocab, vocab, generator=g))
    base = quality.base_logits(model, tokens, n_ctx=n_ctx)
    assert base.tokens.shape == (3, n_ctx) and base.header.shape == (3 * 7, 2)
    report = quality.evaluate(base, model)
    p = torch.softmax(model.table.detach(), -1)
    expected = [p[tokens[c * n_ctx + i], tokens[c * n_ctx + i + 1]].item() for c in range(3) for i in range(8, 15)]
    torch.testing.assert_close(report.stats.p_q, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)
    # the same model: the stored base differs from its logits only by the 16-bit code
    assert report["same_top_p"] == 1.0 and report["mean_kld"] < 1e-4
    # chunks in batches (a ragged last one) are still chunks on their own
    batched = quality.evaluate(base, model, batch_size=2)
    assert torch.equal(batched.stats.kld, report.stats.kld) and torch.equal(batched.stats.p_q, report.stats.p_q)


def test_bos_replaces_the_first_token_of_each_chunk():
    g = torch.Generator().manual_seed(1)
    model = Bigram(torch.randn(5, 5, generator=g))
    chunked = quality.chunks(torch.arange(8) % 5, n_ctx=4)
    assert quality.model_inputs(chunked, bos=4)[:, 0].tolist() == [4, 4]
    assert torch.equal(quality.model_inputs(chunked, None), chunked)
    # with n_ctx 4 only position 2 is scored: the BOS at position 0 changes nothing here
    a, b = (quality.base_logits(model, torch.arange(8) % 5, n_ctx=4, bos=bos) for bos in (None, 4))
    assert torch.equal(a.codes, b.codes) and a.bos is None and b.bos == 4


def test_chunk_arguments_are_checked():
    with pytest.raises(ValueError, match="make 1 chunk"):
        quality.chunks(torch.arange(20), n_ctx=16, n_chunks=2)
    with pytest.raises(ValueError, match="n_ctx"):
        quality.chunks(torch.arange(20), n_ctx=2)
    with pytest.raises(ValueError, match="n_chunks"):
        quality.chunks(torch.arange(20), n_ctx=4, n_chunks=0)


def test_log_prob_code_and_file_round_trip(tmp_path):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 301, generator=g) * 6
    z[0] = 3.0  # a flat row: scale 0, every code 0
    header, codes = quality.encode_log_probs(z)
    lp, exact = quality.decode_log_probs(header, codes), quality.log_probs(z)
    window = z > (z.max(-1, keepdim=True).values - 16)
    assert (lp - exact)[window].abs().max() <= header[:, 0].max() / 2 + 1e-5
    assert torch.equal(lp[0], torch.full((301,), header[0, 1].item()))
    base = quality.Base(torch.arange(3 * 8).reshape(3, 8), torch.cat([header, header[:3]]),
                        torch.cat([codes, codes[:3]]))  # 3 chunks of 8: 3 scored tokens each
    loaded = quality.Base.load(base.save(tmp_path / "base.kld"))
    assert torch.equal(loaded.tokens, base.tokens) and torch.equal(loaded.codes, base.codes)
    assert torch.equal(loaded.header, base.header)
    (tmp_path / "bad.kld").write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(ValueError, match="not a llama.cpp"):
        quality.Base.load(tmp_path / "bad.kld")
    (tmp_path / "short.kld").write_bytes((tmp_path / "base.kld").read_bytes()[:-2])
    with pytest.raises(ValueError, match="bytes"):
        quality.Base.load(tmp_path / "short.kld")


# ---- llama.cpp's CPU arithmetic ----------------------------------------------------------------

_FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64)


def ggml_round_trip(ggml, x: np.ndarray, qtype: str) -> np.ndarray:
    """x through ggml's reference quantizer of `qtype` (from_float_ref) and back (to_float)."""
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    raw = np.zeros(ggml.row_bytes(qtype, x.size), dtype=np.uint8)
    floats = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    if qtype == "Q8_K":  # its traits carry no converters; the reference functions are exported by name
        ggml.lib.quantize_row_q8_K_ref(floats, ctypes.c_void_p(raw.ctypes.data), ctypes.c_int64(x.size))
        out = np.empty_like(x)
        ggml.lib.dequantize_row_q8_K(ctypes.c_void_p(raw.ctypes.data), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                     ctypes.c_int64(x.size))
        return out
    _FROM_FLOAT(ggml.traits(qtype).from_float_ref)(floats, raw.ctypes.data, x.size)
    return ggml.to_float(raw, qtype, x.size)


def activations(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, n, generator=g) * torch.exp(2 * torch.randn(3, n, generator=g))
    x[0, :32] = 0  # an all-zero block
    x[1, 5] = -2.5e4  # an outlier as the running example has
    x[2, :8] = torch.tensor([0.5, -0.5, 1.5, 2.5, -127, 127, 63.5, -63.5])  # halves at the block's scale 1
    x[2, 8] = 127
    return x


@pytest.mark.parametrize("qtype, fn", [("Q8_0", quality.round_q8_0), ("Q8_K", quality.round_q8_k)])
def test_activation_rounding_equals_ggml(ggml, qtype, fn):
    x = activations(512)
    expected = ggml_round_trip(ggml, x.numpy(), qtype).reshape(x.shape)
    assert np.array_equal(fn(x).numpy(), expected)


def test_activation_rounding_is_ggml_cpus_vec_dot_type_for_every_format_written(tmp_path):
    """ggml-cpu.c's type_traits_cpu table: each weight type's vec_dot_type, what its matmul's input
    is rounded to; the package knows it for every format it writes."""
    import re

    from oracles.llama_cpp_source import source_file

    from lec19quant.gguf import blocks, iquants  # noqa: F401  (iquants adds its formats to blocks.FORMATS)

    source = source_file("ggml/src/ggml-cpu/ggml-cpu.c", tmp_path)
    table = source[source.index("type_traits_cpu[GGML_TYPE_COUNT]"):]
    vec_dot = dict(re.findall(r"\[GGML_TYPE_(\w+)\]\s*=\s*\{[^}]*?\.vec_dot_type\s*=\s*GGML_TYPE_(\w+)", table))
    written = ["F16", "BF16", *blocks.FORMATS]
    assert {"Q4_K", "IQ4_NL", "IQ4_XS"} <= set(written)
    for qtype in written:
        expected = vec_dot[qtype.upper()].upper()
        got = quality.ACTIVATION_ROUNDING[qtype]
        assert got == expected or (expected == "Q8_1" and got == "Q8_0"), qtype  # Q8_1 rounds as Q8_0


def test_activation_rounding_needs_whole_blocks():
    with pytest.raises(ValueError, match="blocks of 256"):
        quality.round_q8_k(torch.zeros(2, 576))
    with pytest.raises(ValueError, match="unknown activation rounding"):
        quality.round_activations(torch.zeros(2, 32), "Q4_0")


def test_arithmetic_rounds_linear_inputs_and_restores_the_model():
    import transformers

    config = transformers.LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (1, 12))
    before = model(ids).logits
    seen = {}
    layer = model.model.layers[0].mlp
    watch = lambda key: lambda m, a: seen.__setitem__(key, a[0])  # noqa: E731
    raw = [layer.down_proj.register_forward_pre_hook(watch("down raw")),
           layer.up_proj.register_forward_pre_hook(watch("up raw"))]
    types = {"model.layers.0.mlp.down_proj": "Q4_K", "model.layers.0.mlp.up_proj": "Q4_0", "lm_head": "F16"}
    with quality.llama_cpp_arithmetic(model, types):
        # hooks run in the order they were registered: these see what the rounding made
        rounded = [layer.down_proj.register_forward_pre_hook(watch("down")),
                   layer.up_proj.register_forward_pre_hook(watch("up"))]
        inside = model(ids).logits
        assert model.config._attn_implementation == quality._F16_ATTENTION
    for h in raw + rounded:
        h.remove()
    assert torch.equal(seen["down"], quality.round_q8_k(seen["down raw"]))
    assert torch.equal(seen["up"], quality.round_q8_0(seen["up raw"]))
    assert not torch.equal(seen["down"], seen["down raw"]) and not torch.equal(inside, before)
    assert torch.equal(model(ids).logits, before)  # hooks and attention restored
    with pytest.raises(ValueError, match="Q3_K_M"):
        with quality.llama_cpp_arithmetic(model, {"lm_head": "Q3_K_M"}):
            pass


def test_f16_attention_equals_causal_attention_on_f16_values():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, h, 9, 16, generator=g).half().float() for h in (4, 2, 2))
    out, _ = quality._f16_attention(None, q, k, v, None, scaling=0.25)
    kk, vv = k.repeat_interleave(2, 1), v.repeat_interleave(2, 1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=True, scale=0.25)
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-5, atol=1e-6)
