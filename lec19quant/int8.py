"""Int8 matrix multiplication: vector-wise scales, and LLM.int8()'s mixed-precision decomposition
(Dettmers et al. 2022).

Vector-wise: rows of X and columns of W get their own absmax scales s_x = 127 / max|X_i,:| and
s_w = 127 / max|W_:,j|; Z = Q_x · Q_w is computed exactly in int32, and X·W ≈ Z / (s_x ⊗ s_w).

LLM.int8(): the columns O of X with any |x| ≥ α (the outlier features) meet the matching rows of W
in a 16-bit product, everything else goes through vector-wise int8, and the two are summed:
X·W ≈ X[:, O]·W[O, :] + Z / (s_x ⊗ s_w), where Z leaves out the columns O.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from .kernels import use_triton
from .quantize import FLOAT_DTYPES, QTensor, _slices, absmax_quantize, zeropoint_quantize

MAX_K = 2**31 // 128**2  # beyond this an int32 sum of int8 products could overflow
METHODS = {"absmax": absmax_quantize, "zeropoint": zeropoint_quantize}
VARIANTS = ("ideal", "bitsandbytes")
ACTIVATION_SCALES = ("tensor", "token")
WEIGHT_SCALES = ("tensor", "row")


def matmul_int32(a: torch.Tensor, b: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """C = A·B for int8 A (M, K) and B (K, N), accumulated exactly in int32.

    The torch path multiplies in float64, exact here (K ≤ MAX_K keeps every sum below 2^31); the
    triton path is an exact int32 kernel.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"matmul_int32 takes int8 matrices, got {a.dtype} and {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be multiplied")
    if a.shape[1] > MAX_K:
        raise ValueError(f"K = {a.shape[1]} > {MAX_K}: the int32 accumulator could overflow")
    if use_triton(backend, a, b):
        from .kernels import int8_matmul as kernel

        c = torch.empty(a.shape[0], b.shape[1], dtype=torch.int32, device=a.device)
        kernel.matmul_int32(a, b, c)
        return c
    # torch._int_mm measured 40x slower than this on a CPU (torch 2.13, 1024x576 @ 576x1536).
    return (a.double() @ b.double()).to(torch.int32)


def _dequantize_product(z: torch.Tensor, s_x: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
    """Z / (s_x ⊗ s_w), with 0 where a scale is 0 (an all-zero row or column)."""
    outer = s_x * s_w
    return torch.where(outer > 0, z.float() / outer, torch.zeros_like(outer))


def _product(qx: QTensor, qw: QTensor, backend: str) -> torch.Tensor:
    """X̂·Ŵ for X̂ = (Q_x − z_x) / s_x (M, K) and Ŵ = (Q_w − z_w) / s_w (K, N): the integer sum
    Σ_k (q_x − z_x)(q_w − z_w) = Q_x·Q_w − z_x Σ_k q_w − z_w Σ_k q_x + K z_x z_w, exact, over s_x ⊗ s_w."""
    z = matmul_int32(qx.codes, qw.codes, backend)
    if qx.zero_point is not None or qw.zero_point is not None:
        z_x = 0 if qx.zero_point is None else qx.zero_point.long()
        z_w = 0 if qw.zero_point is None else qw.zero_point.long()
        k = qx.codes.shape[1]
        z = z - (z_x * qw.codes.sum(0, keepdim=True) + (qx.codes.sum(1, keepdim=True) - k * z_x) * z_w)
    return _dequantize_product(z, qx.scale, qw.scale)


def _check_matrices(x: torch.Tensor, w: torch.Tensor) -> None:
    if x.dim() != 2 or w.dim() != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x {tuple(x.shape)} and w {tuple(w.shape)} must be (M, K) and (K, N)")


def int8_matmul(x: torch.Tensor, w: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """X·W for float X (M, K) and W (K, N), through vector-wise int8 quantization:
    Q_x = round(s_x · X) per row, Q_w = round(s_w · W) per column, X·W ≈ (Q_x·Q_w) / (s_x ⊗ s_w)."""
    _check_matrices(x, w)
    return _product(absmax_quantize(x, 8, dim=0), absmax_quantize(w, 8, dim=1), backend)


def _check_options(threshold, variant: str, method: str, activations: str, weights: str) -> None:
    _check_threshold(threshold, zero_means_off=True)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    if activations not in ACTIVATION_SCALES:
        raise ValueError(f"activations must be 'tensor' or 'token', got {activations!r}")
    if weights not in WEIGHT_SCALES:
        raise ValueError(f"weights must be 'tensor' or 'row', got {weights!r}")
    if variant == "bitsandbytes" and (method, activations, weights) != ("absmax", "token", "row"):
        raise ValueError("bitsandbytes' LLM.int8() is absmax with one scale per token and one per output "
                         "row; use variant='ideal' for other scales")


def _bitsandbytes_absmax(x: torch.Tensor, dim: int) -> QTensor:
    """`absmax_quantize(x, 8, dim)` of a finite x with s computed as bitsandbytes writes it,
    `127.0 / a`, which PyTorch evaluates as 127 · (1/a), rounded twice."""
    view, dims = _slices(x, dim, None)
    scale = 127.0 / view.abs().amax(dims, keepdim=True)
    scale = torch.where(torch.isfinite(scale), scale, torch.zeros_like(scale))
    return QTensor(torch.round(view * scale).to(torch.int8), scale, None, x.shape, 8)


def _quantize(x: torch.Tensor, dim: int | None, method: str, variant: str) -> QTensor:
    if method == "zeropoint":
        return zeropoint_quantize(x, 8, dim=dim)
    return _bitsandbytes_absmax(x, dim) if variant == "bitsandbytes" else absmax_quantize(x, 8, dim=dim)


def _float16(t: torch.Tensor, what: str) -> torch.Tensor:
    """t rounded to float16, which must hold it: a finite t beyond ±65504 is an error."""
    half = t.to(torch.float16)
    if not torch.isfinite(half.abs().amax()):
        raise ValueError(f"{what} has values beyond float16's range (±65504)")
    return half


def quantize_weight(w: torch.Tensor, variant: str = "bitsandbytes", method: str = "absmax",
                    weights: str = "row") -> QTensor:
    """The int8 codes of W (K, N) (the Wᵀ of a Linear layer) with one scale per column, that is
    per output, or one per tensor. bitsandbytes rounds W to float16 before it quantizes it (CB and
    its scales SCB)."""
    _check_options(0, variant, method, "token", weights)  # (only variant, method, weights concern W)
    if w.dim() != 2:
        raise ValueError(f"w must be a matrix (K, N), got shape {tuple(w.shape)}")
    if w.dtype not in FLOAT_DTYPES:
        raise TypeError(f"w must be float32, float16 or bfloat16, got {w.dtype}")
    w = w.detach()
    if w.numel() == 0 or not torch.isfinite(w.abs().amax()):  # (amax propagates NaN)
        raise ValueError("w must be non-empty and finite")
    qw = _quantize(_float16(w, "w") if variant == "bitsandbytes" else w, 1 if weights == "row" else None,
                   method, variant)
    qw.codes = qw.codes.contiguous()
    return qw


def _check_threshold(threshold, zero_means_off: bool) -> None:
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not (number and (threshold >= 0 if zero_means_off else threshold > 0) and threshold < math.inf):
        lowest = "≥ 0 (0: no decomposition)" if zero_means_off else "> 0"
        raise ValueError(f"threshold must be a finite number {lowest}, got {threshold!r}")


def _column_peaks(x: torch.Tensor) -> torch.Tensor:
    """max |x| of each column of a non-empty, finite float matrix x (M, K)."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty matrix (M, K), got shape {tuple(x.shape)}")
    peaks = x.abs().amax(dim=0)  # NaN if the column has one
    if not torch.isfinite(peaks).all():
        raise ValueError("x contains NaN or inf: quantization needs finite values")
    return peaks


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """The columns of X (M, K) with any |x| ≥ threshold, LLM.int8()'s outlier features, as sorted
    indices. (For a float16 X the comparison is in float16, the threshold rounded to it.)"""
    _check_threshold(threshold, zero_means_off=False)
    return torch.nonzero(_column_peaks(x) >= threshold).flatten()


def split_outliers(x: torch.Tensor, threshold: float = 6.0, variant: str = "bitsandbytes",
                   method: str = "absmax", activations: str = "token",
                   backend: str = "auto") -> tuple[QTensor, torch.Tensor]:
    """LLM.int8()'s decomposition of X (M, K): the outlier columns O (`outlier_columns`; none
    when threshold is 0) and the int8 quantization of the rest, whose codes in the columns O add
    nothing to a product. Which entries set each row's scale is where the variants differ: the
    ideal variant (the paper's equation) leaves the columns O out; bitsandbytes zeroes only the
    entries |x| ≥ threshold, so an entry just below it in a column of O still counts.
    bitsandbytes also rounds X to float16 first and computes s = 127 · (1/a)."""
    _check_options(threshold, variant, method, activations, "row")
    bitsandbytes = variant == "bitsandbytes"
    source = x.to(torch.float16) if bitsandbytes else x
    # rounding is monotonic: the column peaks of the float16 X are those of X, rounded
    peaks = _column_peaks(x).to(source.dtype)
    if bitsandbytes and threshold == 0 and not torch.isfinite(peaks).all():
        raise ValueError("x has values beyond float16's range (±65504), where bitsandbytes quantizes it")
    if method == "absmax" and activations == "token" and use_triton(backend, x):
        from .kernels import llm_int8 as kernel

        flags = kernel.outlier_flags(source, threshold)
        codes, scale = kernel.quantize_rows(source, flags, threshold, bitsandbytes)
        return QTensor(codes, scale[:, None], None, x.shape, 8), torch.nonzero(flags).flatten()
    columns = torch.nonzero(peaks >= threshold).flatten() if threshold > 0 else peaks.new_zeros(0, dtype=torch.long)
    if not bitsandbytes:
        kept = source.index_fill(1, columns, 0)
    elif len(columns):
        kept = source.masked_fill(source.abs() >= threshold, 0)
    else:
        kept = source
    qx = _quantize(kept, 0 if activations == "token" else None, method, variant)
    if bitsandbytes:
        qx.codes[:, columns] = 0
    return qx, columns


def _outlier_rows(qw: QTensor, weight16: torch.Tensor | None, columns: torch.Tensor) -> torch.Tensor:
    """The rows O of W that the outlier columns meet: from the 16-bit W (ideal) or dequantized
    from the int8 codes (bitsandbytes), as float32."""
    if weight16 is not None:
        return weight16[columns].float()
    return torch.where(qw.scale > 0, qw.codes[columns].float() / qw.scale, torch.zeros_like(qw.scale))


def _llm_int8(x: torch.Tensor, qw: QTensor, weight16: torch.Tensor | None, bias: torch.Tensor | None,
              threshold: float, variant: str, method: str, activations: str, backend: str):
    """X·W + b ≈ X[:, O]·W[O, :] + (int8 part) + b as float32 (M, N), and the columns O."""
    qx, columns = split_outliers(x, threshold, variant, method, activations, backend)
    if qx.zero_point is None and qw.zero_point is None and use_triton(backend, x, qw.codes):
        from .kernels import llm_int8 as kernel

        (m, _), n = x.shape, qw.codes.shape[1]
        y = kernel.int8_outlier_matmul(qx.codes, qx.scale.expand(m, 1).flatten().contiguous(), qw.codes,
                                       qw.scale.expand(1, n).flatten().contiguous(), x, columns, weight16, bias)
        return y, columns
    y = _product(qx, qw, backend)
    if len(columns):
        y = y + x[:, columns].float() @ _outlier_rows(qw, weight16, columns)
    return (y if bias is None else y + bias), columns


def llm_int8_matmul(x: torch.Tensor, w: torch.Tensor, threshold: float = 6.0, variant: str = "bitsandbytes",
                    backend: str = "auto") -> torch.Tensor:
    """X·W for float X (M, K) and W (K, N) by LLM.int8(), as float32:
    X·W ≈ X[:, O]·W[O, :] + Z / (s_x ⊗ s_w), O the columns with any |x| ≥ threshold, Z the int8
    product of the rest (rows of X and columns of W absmax-quantized, as in `int8_matmul`).

    variant="ideal", the paper's equation taken literally: W[O, :] is a 16-bit copy of W, kept
    beside the codes (more bytes than float16 alone), and each row's scale comes from its columns
    outside O. variant="bitsandbytes", what the paper's implementation ships and its memory
    figures count: W[O, :] is dequantized from the int8 codes (no 16-bit copy of W is
    kept), and as in bitsandbytes' Linear8bitLt, X and W are rounded to float16 before they are
    quantized, only the entries |x| ≥ threshold are left out of a row's scale, and s = 127 · (1/a).
    threshold=0 turns the decomposition off.
    """
    _check_matrices(x, w)
    weight16 = _float16(w.detach(), "w").contiguous() if variant == "ideal" and threshold > 0 else None
    return _llm_int8(x, quantize_weight(w, variant), weight16, None, threshold, variant, "absmax", "token",
                     backend)[0]


class Int8Linear(nn.Module):
    """y = x·Wᵀ + b with W stored as int8 codes and one scale per output row (or per tensor), and x
    quantized to int8 on the fly with one scale per token (or per tensor), by absmax or zero-point;
    the integer product is exact. With threshold α > 0 this is LLM.int8(): the input columns with
    any |x| ≥ α skip int8 (see `llm_int8_matmul` for the two variants). `fraction_16bit` counts the
    share of input columns that went through the 16-bit product since the layer was made."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, threshold: float = 6.0,
                 variant: str = "bitsandbytes", method: str = "absmax", activations: str = "token",
                 weights: str = "row", backend: str = "auto"):
        super().__init__()
        _check_options(threshold, variant, method, activations, weights)
        qw = quantize_weight(weight.t(), variant, method, weights)
        self.out_features, self.in_features = weight.shape
        self.threshold, self.variant, self.method = threshold, variant, method
        self.activations, self.weights, self.backend = activations, weights, backend
        self.register_buffer("codes", qw.codes)  # (in, out): the layout x·Wᵀ reads
        self.register_buffer("scale", qw.scale)  # (1, out), or (1, 1) for one scale per tensor
        self.register_buffer("zero_point", qw.zero_point)
        # the ideal variant's outlier part meets the 16-bit W (kept as Wᵀ, (in, out)); bitsandbytes' the codes
        ideal = variant == "ideal" and threshold > 0
        self.register_buffer("weight16", _float16(weight.detach().t(), "the weight").contiguous() if ideal else None)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.columns_16bit = self.columns_seen = 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, **options) -> "Int8Linear":
        """The layer for `linear`; `options` are those of the constructor (threshold, variant, ...)."""
        return cls(linear.weight, linear.bias, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x has {x.shape[-1]} features, the layer takes {self.in_features}")
        qw = QTensor(self.codes, self.scale, self.zero_point, self.codes.shape, 8)
        y, columns = _llm_int8(x.reshape(-1, self.in_features), qw, self.weight16, self.bias, self.threshold,
                               self.variant, self.method, self.activations, self.backend)
        self.columns_16bit += len(columns)
        self.columns_seen += self.in_features
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    @property
    def fraction_16bit(self) -> float:
        """Input columns multiplied in 16-bit / input columns seen, over all calls so far."""
        return self.columns_16bit / self.columns_seen if self.columns_seen else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes as stored: a byte per code, the scales and zero points, the bias, and for the
        ideal variant the 16-bit copy of W."""
        return sum(t.nbytes for t in (self.codes, self.scale, self.zero_point, self.weight16, self.bias)
                   if t is not None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, threshold={self.threshold}, "
                f"variant={self.variant}, method={self.method}, activations={self.activations}, weights={self.weights}")


class W8A8Linear(Int8Linear):
    """y = x·Wᵀ + b with int8 weights (one scale per output, or per tensor) and int8 activations
    quantized on the fly, one scale per tensor or token: an Int8Linear without decomposition."""

    def __init__(self, linear: nn.Linear, activations: str = "token", backend: str = "auto",
                 weights: str = "row", method: str = "absmax"):
        super().__init__(linear.weight, linear.bias, threshold=0, variant="ideal", method=method,
                         activations=activations, weights=weights, backend=backend)


@dataclass(frozen=True)
class W8A8:
    """`quantize_model` scheme: int8 weights per output row (or tensor), int8 activations per tensor
    or token, by absmax or zero-point; no decomposition."""

    activations: str
    weights: str = "row"
    method: str = "absmax"

    @property
    def name(self) -> str:
        zero = "-zp" if self.method == "zeropoint" else ""
        per_tensor = "-wtensor" if self.weights == "tensor" else ""
        return f"w8a8{zero}-{self.activations}{per_tensor}"

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return W8A8Linear(linear, self.activations, weights=self.weights, method=self.method)


@dataclass(frozen=True)
class LLMInt8:
    """`quantize_model` scheme: LLM.int8() at `threshold` (per-token and per-row scales)."""

    threshold: float = 6.0
    variant: str = "bitsandbytes"
    method: str = "absmax"

    @property
    def name(self) -> str:
        name = "llm_int8" + ("-ideal" if self.variant == "ideal" else "")
        name += "-zp" if self.method == "zeropoint" else ""
        return name + (f"-t{self.threshold:g}" if self.threshold != 6.0 else "")

    def quantize_linear(self, linear: nn.Linear) -> nn.Module:
        return Int8Linear.from_linear(linear, threshold=self.threshold, variant=self.variant, method=self.method)
