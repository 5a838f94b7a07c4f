"""How llama.cpp chooses the scale (and min) of a sub-block, vectorized across sub-blocks.

These are the searches of ggml's quantizers (ggml/src/ggml-quants.c), written so that they
give the same float32 numbers. Each minimizes a weighted squared error Σw·(x − x̂)²; without an
importance matrix the weights come from x itself, with one they are the importance of each
column times sqrt(σ² + x²):

- `fit_symmetric` (make_qx_quants): x ≈ s·l with l ∈ [−n, n−1], weights x² unless given; tries
  19 scales −(n + 0.1·k)/max for k = −9..9 and keeps the one with the largest (Σw·x·l)² / Σw·l².
- `fit_scale_min` (make_qkx2_quants, and make_qkx3_quants, which differs only in its weights):
  x ≈ s·l + m with l ∈ [0, n], m ≤ 0; starts from s = (max − min)/n and tries nstep + 1 grids,
  each followed by a weighted least-squares fit of (s, m); a fit that lowers the weighted error
  is kept, and its m is the `min` that the following grids start from.
- `refine_symmetric` (make_q3_quants): x ≈ s·l with l ∈ [−4, 3], then moves single codes while
  that raises (Σw·x·l)² / Σw·l² (`refine`).
- `fit_positive` (make_qp_quants): the sub-block scales (or mins, ≥ 0) of a super-block as s·l
  with l ∈ [0, n]: 9 trial grids scored by the weighted error, then `refine`.

Exactness needs the C program's arithmetic: every sum is accumulated in order in float32 (a
numpy reduction over axis 0 of an (elements, sub-blocks) array is such a loop; numpy's pairwise
sum over the contiguous axis, or a float64 sum, changes the result), every product is rounded as
written left to right (x86-64 builds of llama.cpp use no fused multiply-add), and rounding is
ggml's `nearest_int`. Arrays here are float32 of shape (n, m): n elements of m sub-blocks.
"""
import numpy as np

F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)  # below this max |x| a sub-block counts as all zero
_MAGIC = F32(12582912.0)  # 1.5 · 2^23


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: the low mantissa bits of v + 1.5·2^23, i.e. round half to even for
    |v| < 2^22 (and, like the C code, a meaningless but fixed integer beyond, or for NaN)."""
    bits = (np.asarray(v, dtype=F32) + _MAGIC).view(np.int32)
    return (bits & 0x7FFFFF) - 0x400000


def sequential_sum(a: np.ndarray) -> np.ndarray:
    """Σ over axis 0, added in order in float32: ((a₀ + a₁) + a₂) + …, as a C loop does.

    numpy adds row after row when axis 0 is not the contiguous one; over a contiguous axis (a
    single column, or a transposed array) it would sum pairwise, so such an array is first
    copied to C order, and a single column is accumulated."""
    a = np.ascontiguousarray(a)
    if a.size == a.shape[0]:
        return np.add.accumulate(a, axis=0)[-1]
    return np.add.reduce(a, axis=0)


def first(x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    return np.take_along_axis(x, np.expand_dims(index, axis), axis=axis).squeeze(axis)


def signed_absmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """The value of largest magnitude along `axis`, with its sign: the first one on a tie, and
    +0 when all are ±0 or NaN (the C loops start from max = 0 and replace it only when |x| is
    larger, which a NaN never is)."""
    magnitude = np.abs(x)
    magnitude[np.isnan(magnitude)] = -1
    v = first(x, magnitude.argmax(axis=axis), axis)
    return np.where((v == 0) | np.isnan(v), F32(0), v)


def first_extreme(x: np.ndarray, lowest: bool) -> np.ndarray:
    """min (or max) of each column; a zero extreme keeps the sign of the first zero, as the C
    loop (which replaces its value only when a later one is strictly smaller) does."""
    v = x.min(axis=0) if lowest else x.max(axis=0)
    zero = v == 0
    if zero.any():
        v[zero] = first(x[:, zero], (x[:, zero].argmin if lowest else x[:, zero].argmax)(axis=0), 0)
    return v


def fit_symmetric(x: np.ndarray, nmax: int, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """make_qx_quants(n, nmax, x, L, rmse_type=1, w): codes L = l + nmax in [0, 2·nmax) and
    the scale s of each sub-block (x ≈ s·l), with weights w (x² when None); an all-zero
    sub-block (max|x| < 1e-15) gets L = 0 and s = 0."""
    big = signed_absmax(x)
    zero = np.abs(big) < GROUP_MAX_EPS
    w = x * x if w is None else w
    wx = w * x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        def trial(iscale):
            l = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
            lf = l.astype(F32)
            return l, sequential_sum(wx * lf), sequential_sum(w * lf * lf)

        l, sumlx, suml2 = trial(F32(-nmax) / big)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        codes = l
        for k in range(-9, 10):
            if k == 0:
                continue
            l, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(k)) / big)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            codes = np.where(better, l, codes)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    codes = np.where(zero, 0, codes + nmax)
    return codes, np.where(zero, F32(0), scale)


def fit_scale_min(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                  use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """make_qkx2_quants: codes L in [0, nmax], the scale s and the min m' = −m ≥ 0 of each
    sub-block (x ≈ s·L − m'), from weights `w`. A sub-block whose max equals min(min, 0) gets
    L = 0, s = 0 and m' = −min."""
    lo = first_extreme(x, lowest=True)
    lo = np.where(lo > 0, F32(0), lo)
    hi = x.max(axis=0)
    flat = hi == lo
    sum_w = sequential_sum(w)
    sum_x = sequential_sum(w * x)

    def error(scale, lo, codes):
        diff = scale * codes + lo - x
        return sequential_sum(w * (np.abs(diff) if use_mad else diff * diff))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / (hi - lo)
        scale = F32(1) / iscale
        codes = np.clip(nearest_int(iscale * (x - lo)), 0, nmax).astype(F32)
        best = error(scale, lo, codes)
        start = lo
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (hi - lo)
            trial = np.clip(nearest_int(iscale * (x - lo)), 0, nmax).astype(F32)
            wl = w * trial
            sum_l, sum_l2, sum_xl = sequential_sum(wl), sequential_sum(wl * trial), sequential_sum(wl * x)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive = this_min > 0
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            this_min = np.where(positive, F32(0), this_min)
            current = error(this_scale, this_min, trial)
            better = (det > 0) & (current < best)
            codes = np.where(better, trial, codes)
            best = np.where(better, current, best)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)  # the next grid starts from the new min
    codes = np.where(flat, 0, codes).astype(np.uint8)
    return codes, np.where(flat, F32(0), scale), -np.where(flat, start, lo)


def refine(x: np.ndarray, w: np.ndarray, l: np.ndarray, lo: int, hi: int, wrap: bool = False,
           sums: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to 5 passes over the codes l (float32, changed in place) of x ≈ s·l: each code in turn
    moves to round(x·Σw·l² / Σw·x·l) over the others (clamped to [lo, hi]) when that raises
    (Σw·x·l)² / Σw·l²; returns Σw·x·l and Σw·l². A sub-block whose pass changes nothing stops.

    Two variants, as in ggml: make_q3_quants (`wrap` False) asks Σw·l² > 0 after the move;
    make_qp_quants (`wrap` True) asks it before, and stores codes in bytes (a negative code
    wraps to 256 + l, which later sums read back). `sums`: the starting Σw·x·l and Σw·l² when
    they are not those of l."""
    wx = w * x
    sumlx, suml2 = sums or (sequential_sum(wx * l), sequential_sum(w * l * l))
    # each pass after the first looks only at the sub-blocks that the one before changed
    ids = np.arange(x.shape[1])
    active = slice(None)  # pass 1: every sub-block, without copying
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(5):
            xa, wa, wxa, la = x[:, active], w[:, active], wx[:, active], l[:, active]
            sx, s2 = sumlx[active], suml2[active]
            changed = np.zeros(la.shape[1], dtype=bool)
            for i in range(x.shape[0]):
                without = sx - wxa[i] * la[i]
                sl2 = s2 - wa[i] * la[i] * la[i]
                ok = (without > 0) & (sl2 > 0) if wrap else without > 0
                new = np.clip(nearest_int(xa[i] * sl2 / without), lo, hi).astype(F32)
                slx = without + wxa[i] * new
                sl2 = sl2 + wa[i] * new * new
                take = ok & (new != la[i]) & (slx * slx * s2 > sx * sx * sl2)
                if not wrap:
                    take &= sl2 > 0
                la[i] = np.where(take, _byte(new) if wrap else new, la[i])
                sx, s2 = np.where(take, slx, sx), np.where(take, sl2, s2)
                changed |= take
            l[:, active], sumlx[active], suml2[active] = la, sx, s2
            ids = active = ids[changed]
            if not len(ids):
                break
    return sumlx, suml2


def _byte(l: np.ndarray) -> np.ndarray:
    """A code stored in a C uint8_t, as float32: l mod 256."""
    return (l.astype(np.int32) & 0xFF).astype(F32)


def refine_symmetric(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """make_q3_quants(n, nmax, x, L, do_rmse=true): codes L = l + nmax in [0, 2·nmax) and the
    scale of each sub-block, after `refine` with w = x² from l = round(−nmax·x/max). All-zero
    sub-blocks get L = 0 and s = 0."""
    big = signed_absmax(x)
    zero = np.abs(big) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l = np.clip(nearest_int((F32(-nmax) / big) * x), -nmax, nmax - 1).astype(F32)
        sumlx, suml2 = refine(x, x * x, l, -nmax, nmax - 1)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    codes = np.where(zero, 0, l.astype(np.int32) + nmax)
    return codes, np.where(zero, F32(0), scale)


def fit_positive(x: np.ndarray, nmax: int, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """make_qp_quants(n, nmax, x, L, w): codes L in [0, nmax] (bytes) and the scale s of each
    column (x ≈ s·L): iscale = (nmax + 0.1·k)/max for k = −4..4 scored by Σw·(x − l/iscale)²,
    the best one's codes refined by `refine`; s = Σw·x·l / Σw·l². A column with max < 1e-15
    gets L = 0 and s = 0."""
    top = np.maximum(x.max(axis=0), F32(0))
    zero = top < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / top
        start = _byte(nearest_int(iscale * x))  # the C code stores these codes, then scores them

        def error(l, inverse):
            diff = x - inverse * l
            return sequential_sum(w * diff * diff)

        best = error(start, F32(1) / iscale)
        for k in (-4, -3, -2, -1, 1, 2, 3, 4):
            trial = (F32(0.1) * F32(k) + F32(nmax)) / top
            mse = error(np.minimum(nmax, nearest_int(trial * x)).astype(F32), F32(1) / trial)
            better = mse < best
            best, iscale = np.where(better, mse, best), np.where(better, trial, iscale)
        l = np.minimum(nmax, nearest_int(iscale * x)).astype(F32)
        codes = _byte(l)  # the sums start from l, the refinement reads the stored bytes
        sumlx, suml2 = refine(x, w, codes, np.iinfo(np.int32).min, nmax, wrap=True,
                              sums=(sequential_sum(w * x * l), sequential_sum(w * l * l)))
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, 0, codes.astype(np.int32)).astype(np.uint8), np.where(zero, F32(0), scale)
