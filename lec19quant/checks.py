"""Assignment checks: run a student's function on every case and compare with the package.

A check that passes returns a one-line `Passed` message (a notebook shows it); a wrong answer
raises `CheckFailed`, an AssertionError that says how many cases failed and shows the first:
the input, the expected answer and the student's. An exception inside the student's function
counts as a wrong answer for that case.
"""
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from . import formats


class CheckFailed(AssertionError):
    """A student's function disagreed with the reference."""


@dataclass(frozen=True)
class Passed:
    """The message of a check that passed."""

    message: str

    def __repr__(self) -> str:
        return self.message


def _run(name: str, student: Callable, cases: Iterable, expected: Iterable, same: Callable,
         describe: Callable, what: str) -> Passed:
    """Call `student` on each case and compare with the expected answer by `same(got, want)`."""
    if not callable(student):
        raise TypeError(f"{name} takes your function, got {type(student).__name__}")
    n, failed, first = 0, 0, None
    for case, want in zip(cases, expected):
        n += 1
        try:
            got = student(case)
            ok = same(got, want)
        except Exception as error:  # the student's bug, reported as a wrong answer
            got, ok = f"{type(error).__name__}: {error}", False
        if not ok:
            failed += 1
            first = first or (case, want, got)
    if failed:
        case, want, got = first
        raise CheckFailed(f"✗ {name}: {failed} of {n} {what} wrong; the first: {describe(case)}, "
                          f"expected {want!r}, got {got!r}")
    return Passed(f"✓ {name}: all {n} {what} right")


def check_to_bits(student: Callable[[int], str], bits: int = 8, signed: bool = True) -> Passed:
    """student(value) must return the `bits`-bit pattern of every value in
    `formats.int_range(bits, signed)` as a string of 0s and 1s (two's complement when signed)."""
    lo, hi = formats.int_range(bits, signed)
    values = range(lo, hi + 1)
    return _run("check_to_bits", student, values, (formats.to_bits(v, bits, signed) for v in values),
                lambda got, want: got == want, lambda v: f"value {v}", "values")


def check_from_bits(student: Callable[[str], int], bits: int = 8, signed: bool = True) -> Passed:
    """student(pattern) must return the integer that every `bits`-bit pattern stores."""
    patterns = [format(c, f"0{bits}b") for c in range(2**bits)]
    return _run("check_from_bits", student, patterns,
                (formats.from_bits(p, signed) for p in patterns),
                lambda got, want: got == want, lambda p: f"pattern {p!r}", "patterns")


def _same_float(got, want: float) -> bool:
    """Equal as numbers, with the sign of zero; any NaN equals NaN."""
    got = float(got)
    if math.isnan(want):
        return math.isnan(got)
    return got == want and math.copysign(1, got) == math.copysign(1, want)


def _small(fmt) -> formats.FloatFormat:
    fmt = formats.as_format(fmt)
    if not isinstance(fmt, formats.FloatFormat) or fmt.bits > 16:
        raise ValueError(f"checks run on every code: give a float format of at most 16 bits, got {fmt}")
    return fmt


def check_decode(student: Callable[[int], float], fmt) -> Passed:
    """student(code) must return the value of every code of `fmt` (a float format of at most 16
    bits): the same number, −0 for negative zero, NaN where the code is a NaN."""
    fmt = _small(fmt)
    codes = range(2**fmt.bits)
    return _run(f"check_decode({fmt.name})", student, codes, formats.decode(torch.arange(2**fmt.bits),
                fmt).tolist(), _same_float,
                lambda c: f"code {c} ({formats.pattern(c, fmt)})", "codes")


def encode_cases(fmt) -> torch.Tensor:
    """Inputs that test an encoder of `fmt`: every value, the midpoints between neighbours (ties),
    the float32 numbers just either side of them, a value past the largest, ±0 and ±inf, and NaN
    where the format has a NaN."""
    fmt = _small(fmt)
    v = formats.values(fmt).double()
    beyond = fmt.max + math.ldexp(1.0, fmt.max_exponent - fmt.man_bits)  # the next value, if any
    v = torch.cat([v, torch.tensor([beyond, -beyond], dtype=torch.float64)]).sort().values
    ties = ((v[1:] + v[:-1]) / 2).float()  # exact in float32: one bit more than the format has
    inf = torch.tensor(torch.inf)
    cases = [v.float(), ties, torch.nextafter(ties, inf), torch.nextafter(ties, -inf),
             torch.tensor([0.0, -0.0, torch.inf, -torch.inf])]
    if fmt.has_nan:
        cases.append(torch.tensor([torch.nan]))
    cases = torch.cat(cases)
    return cases if fmt.signed or fmt.has_nan else cases[cases >= 0]


def check_encode(student: Callable[[float], int], fmt, overflow: str | None = None) -> Passed:
    """student(x) must return the code of the value of `fmt` nearest to x (ties to even; beyond
    the largest value, `fmt`'s overflow rule or `overflow`), for every input of `encode_cases`.
    Where the answer is a NaN, any NaN code will do."""
    fmt = _small(fmt)
    x = encode_cases(fmt)
    expected = formats.encode(x, fmt, overflow).tolist()
    every = torch.arange(2**fmt.bits)
    nans = set(every[formats.decode(every, fmt).isnan()].tolist())
    return _run(f"check_encode({fmt.name})", student, x.tolist(), expected,
                lambda got, want: got == want or want in nans and got in nans,
                lambda v: f"x = {v!r}", "inputs")


def check_codebook(student_values, book=formats.NF4) -> Passed:
    """`student_values` (a list or tensor) must equal the codebook's table bit for bit as float32."""
    book = formats.as_format(book)
    want = torch.tensor(book.table, dtype=torch.float32)
    got = torch.as_tensor(student_values).float().flatten()
    if got.numel() != want.numel():
        raise CheckFailed(f"✗ check_codebook({book.name}): expected {want.numel()} values, got "
                          f"{got.numel()}")
    wrong = (got.view(torch.int32) != want.view(torch.int32)).nonzero().flatten().tolist()
    if wrong:
        i = wrong[0]
        raise CheckFailed(f"✗ check_codebook({book.name}): {len(wrong)} of {want.numel()} values "
                          f"differ; the first: code {i}, expected {want[i].item()!r}, got "
                          f"{got[i].item()!r}")
    return Passed(f"✓ check_codebook({book.name}): all {want.numel()} values equal bit for bit")


def quantization_cases() -> list[torch.Tensor]:
    """Float32 tensors with a nonzero range that test a quantizer: the lecture's [-3, 1, 2, 4],
    exact ties, normal and heavy-tailed samples, one huge outlier, ReLU-like data, negative data."""
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(1000, generator=g)
    outlier = normal[:64].clone()
    outlier[17] = 100.0
    return [torch.tensor([-3.0, 1.0, 2.0, 4.0]), torch.tensor([127.0, 0.5, 1.5, 2.5, -2.5, -0.5]),
            normal, normal * torch.exp(2 * torch.randn(1000, generator=g)), outlier,
            torch.relu(normal), -torch.rand(100, generator=g) - 1]


def _same_codes(got, want: torch.Tensor, product: torch.Tensor) -> bool:
    """Integer codes equal, except that where s·x is within 1e-4 of a tie, either neighbour will do
    (a scale computed another way may differ in its last bit)."""
    got = torch.as_tensor(got).long().reshape(want.shape)
    near_tie = ((product - product.floor()) - 0.5).abs() < 1e-4
    return bool(torch.all((got == want) | (near_tie & ((got - want).abs() <= 1))))


def _close(got, want: torch.Tensor) -> bool:
    got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
    return bool(torch.allclose(got, want.float(), rtol=1e-5, atol=1e-7))


def _describe(x: torch.Tensor) -> str:
    return f"x = {x.tolist()}" if x.numel() <= 8 else f"x of {x.numel()} values, max |x| = {x.abs().max():.3g}"


def check_absmax(student: Callable, bits: int = 8) -> Passed:
    """student(x, bits) must return (codes, scale) of absmax quantization with one scale for the
    tensor: s = (2^(bits−1) − 1) / max|x|, codes = round(s·x), ties to even."""
    from .quantize import absmax_quantize

    cases = quantization_cases()
    wants = [absmax_quantize(x, bits) for x in cases]
    products = {id(w): x * w.scale for x, w in zip(cases, wants)}

    def same(got, want):
        codes, scale = got
        return _close(scale, want.scale.reshape(())) and _same_codes(codes, want.codes.long(), products[id(want)])

    return _run(f"check_absmax(bits={bits})", lambda x: student(x.clone(), bits), cases, wants, same,
                _describe, "tensors")


def check_zeropoint(student: Callable, bits: int = 8) -> Passed:
    """student(x, bits) must return (codes, scale, zero_point) of zero-point quantization with one
    scale for the tensor: s = (2^bits − 1) / (max − min), z = −round(s·min) − 2^(bits−1),
    codes = round(s·x) + z."""
    from .quantize import zeropoint_quantize

    cases = quantization_cases()
    wants = [zeropoint_quantize(x, bits) for x in cases]
    products = {id(w): x * w.scale for x, w in zip(cases, wants)}

    def same(got, want):
        codes, scale, zero = got
        return (_close(scale, want.scale.reshape(())) and int(zero) == want.zero_point.item()
                and _same_codes(codes, want.codes.long(), products[id(want)]))

    return _run(f"check_zeropoint(bits={bits})", lambda x: student(x.clone(), bits), cases, wants, same,
                _describe, "tensors")


def check_vectorwise_matmul(student: Callable) -> Passed:
    """student(x, w) must return X·W computed through vector-wise int8 quantization: rows of X
    and columns of W absmax-quantized to int8, Z = Q_x·Q_w in integers, X·W ≈ Z / (s_x ⊗ s_w)."""
    from .int8 import int8_matmul

    g = torch.Generator().manual_seed(1)
    shapes = [(1, 4, 3), (5, 16, 7), (8, 300, 20), (3, 64, 64)]
    cases = [(torch.randn(m, k, generator=g) * torch.exp(torch.randn(m, 1, generator=g)),
              torch.randn(k, n, generator=g)) for m, k, n in shapes]
    cases[2][0][:, 5] *= 40  # an outlier channel
    return _run("check_vectorwise_matmul", lambda case: student(case[0].clone(), case[1].clone()), cases,
                [int8_matmul(x, w, backend="torch") for x, w in cases], _close,
                lambda case: f"x {tuple(case[0].shape)}, w {tuple(case[1].shape)}", "products")


def nvfp4_cases() -> list[torch.Tensor]:
    """Float32 matrices (last dimension a multiple of 16) that test an NVFP4 quantizer: normal
    and heavy-tailed samples, rows of very different magnitude, exact E2M1 ties and signed zeros,
    an all-zero block, values so small that the block scale reaches its 2^−6 clamp, huge values."""
    g = torch.Generator().manual_seed(8)
    normal = torch.randn(8, 64, generator=g)
    ties = torch.tensor([6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0,
                         -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.0])
    mixed = torch.cat([ties, torch.zeros(16), normal[0, :16] * 1e-4, normal[1, :16] * 50])
    return [normal, normal * torch.exp(3 * torch.randn(8, 64, generator=g)),
            normal * torch.exp(4 * torch.randn(8, 1, generator=g)), mixed[None],
            normal[:2] * 1e-3, normal[:2] * 1e30]


class _Shown:
    """An answer whose repr is set when it is compared: the block that differs, not the tensor."""

    def __init__(self, value):
        self.value, self.text = value, "…"

    def __repr__(self) -> str:
        return self.text


def _agrees(got: torch.Tensor, want: torch.Tensor, y: torch.Tensor, fmt) -> torch.Tensor:
    """Where codes agree: equal, or neighbours where y (the number rounded) is within 1e-5
    (relative) of a midpoint between two values of `fmt` (y computed in another order may differ
    in its last bits and round the other way)."""
    from .nvfp4 import _midpoints

    y, mid = y.abs().reshape(want.shape), _midpoints(fmt)
    i = torch.bucketize(y, mid)  # mid[i − 1] < y ≤ mid[i]
    gap = torch.minimum(mid[i.clamp(max=len(mid) - 1)] - y, y - mid[(i - 1).clamp(min=0)]).abs()
    return (got == want) | ((gap <= 1e-5 * y) & ((got - want).abs() == 1))


def check_nvfp4_quantize(student: Callable, tensor_scale=None) -> Passed:
    """student(x) must return NVFP4's codes (one per value, unpacked, shaped like x) and block
    scales as raw E4M3 bytes (one per 16 values), and with tensor_scale="auto" also the FP32
    tensor scale t = max|x| / (448 · 6): the numbers of `nvfp4.nvfp4_quantize(x, tensor_scale)`.
    One level: s_b = E4M3(clamp(max|x_b| / 6, 2^−6, 448)), q = E2M1(x / s_b); two levels divide
    the block scale by t first and multiply x by (1 / t) / s_b."""
    from .nvfp4 import nvfp4_quantize, unpack

    if tensor_scale not in (None, "auto"):
        raise ValueError(f"tensor_scale is None or 'auto', got {tensor_scale!r}")
    cases = nvfp4_cases()
    wants = [_Shown(nvfp4_quantize(x, tensor_scale)) for x in cases]
    inputs = {id(want): x for x, want in zip(cases, wants)}
    n_outputs = 2 if tensor_scale is None else 3

    def same(got: _Shown, want: _Shown) -> bool:
        q, x = want.value, inputs[id(want)]
        if not isinstance(got.value, (tuple, list)) or len(got.value) != n_outputs:
            got.text = f"{type(got.value).__name__} (expected a tuple of {n_outputs})"
            want.text = f"a tuple of {n_outputs}: codes, block scales" + (", tensor scale" if n_outputs == 3 else "")
            return False
        if n_outputs == 3 and torch.as_tensor(got.value[2]).float().item() != q.tensor_scale.item():
            got.text, want.text = f"tensor scale {got.value[2]!r}", f"tensor scale {q.tensor_scale.item()!r}"
            return False
        t = 1.0 if q.tensor_scale is None else q.tensor_scale
        blocks = x.reshape(-1, 16)
        codes = torch.as_tensor(got.value[0]).long().reshape(blocks.shape)
        scales = torch.as_tensor(got.value[1]).long().reshape(-1)
        want_codes, want_scales = unpack(q.codes).long().reshape(blocks.shape), q.block_scales.long().reshape(-1)
        scale_ok = _agrees(scales, want_scales, (blocks.abs().amax(-1) / 6 / t).clamp(2**-6, 448),
                           formats.FP8_E4M3)
        y = blocks / q.scales().reshape(-1, 1)
        ok = scale_ok & _agrees(codes, want_codes, y, formats.FP4_E2M1).all(-1)
        if ok.all():
            return True
        b = int((~ok).nonzero()[0])
        want.text = f"block {b}: scale byte {int(want_scales[b])}, codes {want_codes[b].tolist()}"
        got.text = f"block {b}: scale byte {int(scales[b])}, codes {codes[b].tolist()}"
        return False

    levels = "one level" if tensor_scale is None else "two levels"
    return _run(f"check_nvfp4_quantize({levels})", lambda x: _Shown(student(x.clone())), cases,
                wants, same, _describe, "tensors")


def check_nvfp4_dequantize(student: Callable) -> Passed:
    """student(codes, block_scales, tensor_scale) must return x̂ = e2m1(q) · s_b · t (float32, one
    value per code; t = 1 when tensor_scale is None) from the fields of an NVFP4Tensor: packed
    codes, the first value of each byte in its low nibble, and raw E4M3 block-scale bytes."""
    from .nvfp4 import nvfp4_quantize

    quantized = [nvfp4_quantize(x, t) for x in nvfp4_cases() for t in (None, "auto")]

    def same(got: _Shown, want: _Shown) -> bool:
        values = torch.as_tensor(got.value, dtype=torch.float32).reshape(-1, 16)
        expected = want.value.reshape(-1, 16)
        ok = ((values - expected).abs() <= 1e-6 * expected.abs()).all(-1)
        if ok.all():
            return True
        b = int((~ok).nonzero()[0])
        want.text = f"block {b}: {[float(f'{v:.4g}') for v in expected[b].tolist()]}"
        got.text = f"block {b}: {[float(f'{v:.4g}') for v in values[b].tolist()]}"
        return False

    return _run("check_nvfp4_dequantize",
                lambda q: _Shown(student(q.codes.clone(), q.block_scales.clone(), q.tensor_scale)),
                quantized, (_Shown(q.dequantize()) for q in quantized), same,
                lambda q: f"an NVFP4Tensor of shape {tuple(q.shape)}, tensor scale "
                          f"{'None' if q.tensor_scale is None else format(q.tensor_scale.item(), '.3g')}",
                "tensors")


def check_scale_min_k4(student: Callable) -> Passed:
    """student(q, j) must return (scale, min) of sub-block j (0..7) from the 12 bytes `q` (a
    list of ints) of a Q4_K super-block's scales, as ggml's get_scale_min_k4 unpacks them."""
    from .gguf.blocks import unpack_scales_k4

    g = torch.Generator().manual_seed(4)
    blocks = torch.cat([torch.randint(0, 256, (40, 12), generator=g, dtype=torch.uint8),
                        torch.full((1, 12), 255, dtype=torch.uint8), torch.zeros(1, 12, dtype=torch.uint8),
                        torch.tensor([[0xC0] * 4 + [0x3F] * 4 + [0xA5] * 4], dtype=torch.uint8)])
    scales, mins = unpack_scales_k4(blocks)
    cases = [(q, j) for q in blocks.tolist() for j in range(8)]
    wants = [(int(scales[i // 8, i % 8]), int(mins[i // 8, i % 8])) for i in range(len(cases))]
    return _run("check_scale_min_k4", lambda case: tuple(int(v) for v in student(list(case[0]), case[1])), cases,
                wants, lambda got, want: got == want, lambda case: f"q = {case[0]}, j = {case[1]}", "sub-blocks")


def q8_0_cases() -> list[torch.Tensor]:
    """Blocks of 32 that test a Q8_0 quantizer: normal and heavy-tailed weights, exact halves
    (ties), an outlier, a negative maximum, all zeros."""
    g = torch.Generator().manual_seed(8)
    ties = torch.arange(-15.5, 16.5, 1.0)
    ties[0] = -127.0  # d = 1: every other value is a tie
    outlier = torch.randn(32, generator=g)
    outlier[9] = -80.0
    return [torch.randn(32, generator=g), torch.randn(32, generator=g) * torch.exp(2 * torch.randn(32, generator=g)),
            ties, outlier, torch.zeros(32)]


def check_q8_0(student: Callable) -> Passed:
    """student(x) must return (d, codes) of llama.cpp's Q8_0 for a block x of 32 float32
    weights: d = max|x| / 127 and codes = roundf(x / d) (halves away from zero; 0 when d = 0)."""
    from .gguf import explain_block, quantize

    cases = q8_0_cases()
    wants = []
    for x in cases:
        block = explain_block(quantize(x, "Q8_0")[0], "Q8_0")
        wants.append((block["d"].item(), block["codes"].tolist()))

    def same(got, want):
        d, codes = got
        return float(torch.tensor(float(d)).half()) == want[0] and [int(c) for c in codes] == want[1]

    return _run("check_q8_0", lambda x: student(x.clone()), cases, wants, same, _describe, "blocks")


def check_use_more_bits(student: Callable) -> Passed:
    """student(i, n) must say whether layer i of n gets more bits in llama.cpp's Q4_K_M: the
    first and last eighth of the layers and every third layer between (integer division)."""
    from .gguf.recipes import use_more_bits

    cases = [(i, n) for n in range(1, 81) for i in range(n)]
    return _run("check_use_more_bits", lambda case: bool(student(*case)), cases,
                (use_more_bits(i, n) for i, n in cases), lambda got, want: got == want,
                lambda case: f"layer {case[0]} of {case[1]}", "layers")


# --- QLoRA ----------------------------------------------------------------------------------


def _nf4_cases() -> list[torch.Tensor]:
    """`quantization_cases()` and a block of exact ties: a 1 sets the absmax to 1, so x·(1/a) and
    x / a are both exact and each midpoint between NF4 values must go to the lower code."""
    table = torch.tensor(formats.NF4.table)
    ties = torch.cat([torch.tensor([1.0, -0.0]), (table[1:] + table[:-1]) / 2,
                      torch.linspace(-1, 1, 47), torch.randn(10, generator=torch.Generator().manual_seed(2))])
    return quantization_cases() + [ties]


@dataclass(frozen=True)
class _NF4Answer:
    codes: torch.Tensor
    absmax: torch.Tensor
    near_tie: torch.Tensor  # where x / a is within 1e-6 of a midpoint (and a ≠ 1): either code

    def __repr__(self) -> str:
        def short(t):
            values = t.tolist()
            return str(values) if len(values) <= 8 else str(values[:8])[:-1] + ", …]"

        return f"codes {short(self.codes)}, absmax {short(self.absmax)}"


def check_nf4_quantize(student: Callable) -> Passed:
    """student(x) must return (codes, absmax) of NF4 quantization of 1-D float32 x in blocks of
    64: absmax a = max|x| of each block (a shorter last block has its own) and, for every value,
    the index of the NF4 value nearest to x / a, an exact midpoint going to the lower index.
    Where x / a lies within 1e-6 of a midpoint (and a ≠ 1), either neighbour will do."""
    from .qlora import nf4_quantize, unpack_nibbles

    table = torch.tensor(formats.NF4.table)
    midpoints = (table[1:] + table[:-1]) / 2

    def answer(x):
        packed, state = nf4_quantize(x, 64, double_quant=False)
        a = state.absmax.repeat_interleave(64)[: x.numel()]
        near = ((x / a)[:, None] - midpoints).abs().le(1e-6).any(1) & (a != 1)
        return _NF4Answer(unpack_nibbles(packed, x.numel()).long(), state.absmax, near)

    def same(got, want):
        codes, absmax = got
        codes = torch.as_tensor(codes).long().reshape(want.codes.shape)
        return _close(absmax, want.absmax) and bool(torch.all(
            (codes == want.codes) | (want.near_tie & ((codes - want.codes).abs() <= 1))))

    cases = _nf4_cases()
    return _run("check_nf4_quantize", lambda x: student(x.clone()), cases, map(answer, cases), same,
                _describe, "tensors")


def check_lora_merge(student: Callable) -> Passed:
    """student(w, a, b, alpha) must return the merged weight W + (α/r)·B·A of a LoRA layer, for W
    (out × in), A (r × in) and B (out × r)."""
    g = torch.Generator().manual_seed(3)
    cases = [(torch.randn(out, n, generator=g), torch.randn(r, n, generator=g),
              torch.randn(out, r, generator=g), alpha)
             for out, n, r, alpha in [(4, 6, 1, 1.0), (16, 8, 2, 16.0), (64, 96, 8, 16.0), (32, 32, 16, 8.0)]]
    return _run("check_lora_merge", lambda c: student(*(t.clone() for t in c[:3]), c[3]), cases,
                [w + alpha / a.shape[0] * (b @ a) for w, a, b, alpha in cases], _close,
                lambda c: f"W {tuple(c[0].shape)}, r = {c[1].shape[0]}, α = {c[3]}", "layers")


def check_adamw_step(student: Callable) -> Passed:
    """student(p, grad, m, v, step, lr, betas, eps, weight_decay) must return (p, m, v) after
    AdamW's update number `step` (1, 2, …) from the moments m and v of the step before:
    decoupled weight decay p·(1 − lr·λ), then the Adam step with bias-corrected moments,
    as torch.optim.AdamW computes it (to within float32 rounding)."""
    from .qlora import PagedAdamW

    g = torch.Generator().manual_seed(4)
    settings = [(1, 1e-3, (0.9, 0.999), 1e-8, 0.01), (2, 1e-2, (0.9, 0.999), 1e-8, 0.0),
                (10, 3e-4, (0.8, 0.95), 1e-6, 0.1), (1000, 1e-3, (0.9, 0.999), 1e-8, 0.01)]
    cases, wants = [], []
    for step, lr, betas, eps, wd in settings:
        p, grad = torch.randn(6, generator=g), torch.randn(6, generator=g)
        m = torch.randn(6, generator=g) * 0.1 * (step > 1)
        v = torch.rand(6, generator=g) * 0.01 * (step > 1)
        cases.append((p, grad, m, v, step, lr, betas, eps, wd))
        state, new_p = {"exp_avg": m.clone(), "exp_avg_sq": v.clone()}, p.clone()
        new_p.grad = grad
        PagedAdamW._update(new_p, state, torch.tensor(step - 1.0),
                           dict(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=False, maximize=False))
        wants.append((new_p, state["exp_avg"], state["exp_avg_sq"]))

    def same(got, want):
        return len(got) == 3 and all(_close(a, b) for a, b in zip(got, want))

    return _run("check_adamw_step", lambda c: student(*(t.clone() for t in c[:4]), *c[4:]), cases, wants,
                same, lambda c: f"step {c[4]}, lr {c[5]}, betas {c[6]}, weight decay {c[8]}", "steps")


def _fake_quantize_cases() -> list[tuple]:
    """(x, Δ, z, qmin, qmax) that test fake quantization: power-of-two steps (so x/Δ is exact and
    so are its ties), values at and beyond the ends of the range, per-row steps, an outlier."""
    g = torch.Generator().manual_seed(2)
    ties = torch.arange(-10.5, 10.0, 0.5) * 0.25
    rows = torch.randn(4, 16, generator=g)
    outlier = torch.randn(64, generator=g)
    outlier[17] = 100.0
    return [(torch.randn(48, generator=g) * 0.7, 0.125, 0, -8, 7), (ties, 0.25, 0, -8, 7),
            (ties, 0.25, 3, -8, 7), (torch.rand(64, generator=g) * 3 - 0.5, 2.0**-6, -96, -128, 127),
            (rows, torch.tensor([[0.5], [0.25], [2.0**-4], [1.0]]), 0, -2, 1), (outlier, 0.5, 0, -8, 7)]


def _describe_fq(case) -> str:
    x, step, zero, qmin, qmax = case
    step = step.flatten().tolist() if isinstance(step, torch.Tensor) else step
    return f"{_describe(x)}, Δ = {step}, z = {zero}, qmin = {qmin}, qmax = {qmax}"


@dataclass(frozen=True)
class _ValueAndGradient:
    """What a fake quantizer returned and the gradient it passed back, shown briefly."""

    value: torch.Tensor
    gradient: torch.Tensor

    def __repr__(self) -> str:
        def head(t):
            values = [round(v, 4) for v in t.flatten()[:8].tolist()]
            return f"{values[:-1] + ['…'] if t.numel() > 8 else values}".replace("'…'", "…")

        return f"(x̂ = {head(self.value)}, gradient = {head(self.gradient)})"


def _value_and_grad(function, case) -> _ValueAndGradient:
    """function(x, Δ, z, qmin, qmax) and the gradient of Σ g·x̂ with respect to x."""
    x, step, zero, qmin, qmax = case
    x = x.clone().requires_grad_()
    x_hat = torch.as_tensor(function(x, step, zero, qmin, qmax))
    if x_hat.requires_grad:
        (x_hat * torch.linspace(-1, 2, x.numel()).reshape(x_hat.shape)).sum().backward()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)  # round alone gives none
    return _ValueAndGradient(x_hat.detach().float(), grad)


def check_fake_quantize(student: Callable) -> Passed:
    """student(x, Δ, z, qmin, qmax) must return x̂ = (clamp(round(x/Δ) + z, qmin, qmax) − z)·Δ
    (ties to even) that backpropagates the clipped straight-through estimate: the incoming
    gradient where round(x/Δ) + z is inside [qmin, qmax], 0 elsewhere."""
    from .qat import fake_quantize

    cases = _fake_quantize_cases()

    def same(got, want):
        return (torch.equal(got.value.reshape(want.value.shape), want.value)
                and torch.equal(got.gradient, want.gradient))

    return _run("check_fake_quantize", lambda case: _value_and_grad(student, case), cases,
                [_value_and_grad(lambda *a: fake_quantize(*a, backend="torch"), c) for c in cases], same,
                _describe_fq, "cases (values and gradients)")


def check_lsq_gradient(student: Callable) -> Passed:
    """student(x, Δ, qmin, qmax) must return ∂x̂/∂Δ for every element of x (zero point 0), the
    gradient LSQ learns the step with: round(x/Δ) − x/Δ inside the range, qmin or qmax beyond it."""
    from .qat import fake_quantize

    cases = [c for c in _fake_quantize_cases() if c[2] == 0]

    def expected(case):
        x, step, _, qmin, qmax = case
        steps = torch.as_tensor(step, dtype=torch.float32).expand(x.shape).clone().requires_grad_()
        fake_quantize(x, steps, 0, qmin, qmax, backend="torch").sum().backward()
        return steps.grad

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float32)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-6, atol=1e-6))

    return _run("check_lsq_gradient", lambda c: student(c[0].clone(), c[1], c[3], c[4]), cases,
                [expected(c) for c in cases], same, _describe_fq, "cases")


def llm_int8_cases() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """(x, w, threshold) that test LLM.int8(): planted outlier columns (one large on every row, one
    exactly at the threshold, one negative, one at a single token), an entry just below the
    threshold, no outliers at all, and every column an outlier."""
    g = torch.Generator().manual_seed(2)
    cases = []
    for m, k, n in [(1, 8, 3), (6, 64, 16), (32, 300, 20)]:
        x, w = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g) / math.sqrt(k)
        x[:, 1] *= 15
        x[-1, 2], x[0, 3], x[m // 2, k - 1] = 6.0, -9.0, 60.0
        x[0, 4] = 5.99
        cases.append((x, w, 6.0))
    cases.append((cases[1][0].clamp(-5, 5), cases[1][1], 6.0))  # no outliers
    cases.append((cases[1][0], cases[1][1], 0.01))  # (nearly) every column
    return cases


def check_outlier_columns(student: Callable) -> Passed:
    """student(x, threshold) must return the indices of the columns of x (M, K) that have any
    |x| ≥ threshold, LLM.int8()'s outlier features (in any order)."""
    from .int8 import outlier_columns

    cases = llm_int8_cases()
    return _run("check_outlier_columns", lambda case: student(case[0].clone(), case[2]), cases,
                [sorted(outlier_columns(x, t).tolist()) for x, _, t in cases],
                lambda got, want: sorted(torch.as_tensor(got).flatten().tolist()) == want,
                lambda case: f"x {tuple(case[0].shape)}, threshold {case[2]}", "matrices")


def check_llm_int8_matmul(student: Callable) -> Passed:
    """student(x, w, threshold) must return X·W by LLM.int8() as the paper writes it: the columns of
    X with any |x| ≥ threshold times the matching rows of W in 16-bit, plus vector-wise int8 of the
    rest (rows of X without those columns, columns of W). Compared within 0.1% of the largest
    output: 16-bit and float32 weights both pass, int8 without decomposition does not."""
    from .int8 import llm_int8_matmul

    cases = llm_int8_cases()
    wants = [llm_int8_matmul(x, w, t, variant="paper", backend="torch") for x, w, t in cases]

    def same(got, want):
        got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
        return bool(torch.allclose(got, want, rtol=0, atol=1e-3 * want.abs().max().item()))

    return _run("check_llm_int8_matmul", lambda case: student(case[0].clone(), case[1].clone(), case[2]),
                cases, wants, same, lambda case: f"x {tuple(case[0].shape)}, w {tuple(case[1].shape)}, "
                f"threshold {case[2]}", "products")
