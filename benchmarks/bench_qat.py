"""Fake quantization of a weight for QAT (4 bits, one step per 32 weights): forward, and forward
plus backward, per call.

    python benchmarks/bench_qat.py [--save]

The torch reference on the CPU (float32), the fused Triton kernels too on a CUDA GPU (bfloat16).
A call chooses the steps from the weight (a reduction in torch on both backends) and
fake-quantizes it.
"""
import torch
from harness import Target, machine, median_seconds, run

from lec19quant import qat


def measure(target: Target | None = None) -> list[dict]:
    """On the CPU (target None): the torch reference; else both backends on target's device."""
    if target is None:
        device, shapes, dtype, seconds = "cpu", [(256, 256), (1024, 1024)], torch.float32, median_seconds
    else:
        device, shapes = target.device, target.sizes([(1024, 1024), (4096, 4096)], [(64, 64)])
        dtype, seconds = torch.bfloat16, target.seconds
    config = qat.FakeQuantConfig(4, "group", group_size=32)
    rows = []
    for shape in shapes:
        w = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(shape, device=device, dtype=dtype)
        for backend in ["torch"] if target is None else ["torch", "triton"]:
            quantizer = qat.FakeQuantizer(config, backend=backend)
            with torch.no_grad():
                forward = seconds(lambda: quantizer(w))
            both = seconds(lambda: torch.autograd.grad(quantizer(w), w, grad))
            rows.append({"shape": "×".join(map(str, shape)), "dtype": str(dtype).removeprefix("torch."),
                         "backend": backend, "forward us": forward * 1e6, "fwd+bwd us": both * 1e6})
    return rows


def main() -> None:
    run(__doc__, "qat", measure, measure,
        title=f"QAT fake quantization of a weight, 4 bits, groups of 32, on {machine()}",
        formats={"forward us": ".1f", "fwd+bwd us": ".1f"})


if __name__ == "__main__":
    main()
