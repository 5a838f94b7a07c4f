"""The physical limit of a matrix product on a GPU: it cannot take less time than moving its bytes
through memory, nor less than doing its arithmetic at the chip's peak rate,
    t ≥ max(bytes / bandwidth, FLOPs / peak).
For Y = X·Wᵀ with X (M, K) and W (N, K): FLOPs = 2·M·N·K; bytes = N·K·b_w/8 + M·K·b_x/8 + M·N·b_y/8.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class GPU:
    """Peak memory bandwidth and dense tensor-core throughput, from the vendor's datasheet."""

    name: str
    bandwidth: float  # bytes per second
    fp16_flops: float  # dense FP16/BF16 tensor-core FLOP/s
    int8_ops: float  # dense INT8 tensor-core OP/s
    source: str


GPUS = {
    "T4": GPU("NVIDIA T4", 320e9, 65e12, 130e12, "NVIDIA T4 Tensor Core GPU datasheet"),
    "A100": GPU("NVIDIA A100 80GB SXM", 2039e9, 312e12, 624e12, "NVIDIA A100 datasheet"),
    "H100": GPU("NVIDIA H100 SXM", 3.35e12, 989e12, 1979e12, "NVIDIA H100 datasheet"),
    "H200": GPU("NVIDIA H200 SXM", 4.8e12, 989e12, 1979e12, "NVIDIA H200 datasheet"),
}


@dataclass(frozen=True)
class MatmulCost:
    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: FLOPs per byte moved."""
        return self.flops / self.bytes


def matmul_cost(m: int, k: int, n: int, weight_bits: float = 16, act_bits: float = 16,
                out_bits: float = 16) -> MatmulCost:
    """FLOPs and bytes of Y = X·Wᵀ, each operand read once and Y written once; `weight_bits`
    includes the scales of a quantized format (4.5 for Q4_K)."""
    for name, value in (("m", m), ("k", k), ("n", n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name, value in (("weight_bits", weight_bits), ("act_bits", act_bits), ("out_bits", out_bits)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return MatmulCost(2.0 * m * n * k, (n * k * weight_bits + m * k * act_bits + m * n * out_bits) / 8)


def _gpu(gpu) -> GPU:
    if isinstance(gpu, GPU):
        return gpu
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    return GPUS[gpu]


def min_time(cost: MatmulCost, gpu, int8: bool = False) -> float:
    """Seconds the product needs at least on `gpu`: max(bytes / bandwidth, FLOPs / peak), with
    the INT8 peak when the arithmetic is int8."""
    g = _gpu(gpu)
    return max(cost.bytes / g.bandwidth, cost.flops / (g.int8_ops if int8 else g.fp16_flops))


def memory_bound(cost: MatmulCost, gpu, int8: bool = False) -> bool:
    """True when moving the bytes takes longer than the arithmetic (the intensity is below the
    ridge point peak / bandwidth)."""
    g = _gpu(gpu)
    return cost.intensity < (g.int8_ops if int8 else g.fp16_flops) / g.bandwidth
