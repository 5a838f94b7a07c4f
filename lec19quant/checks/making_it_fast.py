"""The assignment checks of the chapter "Making it fast"."""
import math
from collections.abc import Callable

from .. import roofline
from .core import Passed, _run


def check_min_time(student: Callable) -> Passed:
    """student(m, k, n, weight_bits, gpu) must return the roofline's lower bound in seconds for
    Y = X·Wᵀ on `gpu` (a `roofline.GPU`), X (M, K) and Y in FP16, W (N, K) at `weight_bits` bits:
    max(bytes / bandwidth, FLOPs / FP16 peak), `roofline.min_time` (to within 1e-9, relative)."""
    cases = [(m, k, n, bits, gpu) for m in (1, 16, 512, 8192) for k, n in ((4096, 4096), (576, 1536))
             for bits in (16, 8.5, 4.5) for gpu in roofline.GPUS.values()]
    return _run("check_min_time", lambda case: float(student(*case)), cases,
                [roofline.min_time(roofline.matmul_cost(m, k, n, bits), gpu) for m, k, n, bits, gpu in cases],
                lambda got, want: math.isclose(got, want, rel_tol=1e-9),
                lambda c: f"M = {c[0]}, K = {c[1]}, N = {c[2]}, {c[3]} bits per weight on the {c[4].name}",
                "products")
