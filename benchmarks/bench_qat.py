"""Fake quantization of a weight for QAT (4 bits, one step per 32 weights): forward, and forward
plus backward, per call.

    python benchmarks/bench_qat.py [--save]

The torch reference everywhere, the fused Triton kernels too on a CUDA GPU. A call chooses the
steps from the weight (a reduction in torch on both backends) and fake-quantizes it.
"""
import torch
from harness import machine, median_seconds, run

from lec19quant import qat


def measure() -> list[dict]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = [(1024, 1024), (4096, 4096)] if device == "cuda" else [(256, 256), (1024, 1024)]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = qat.FakeQuantConfig(4, "group", group_size=32)
    rows = []
    for shape in shapes:
        w = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn(shape, device=device, dtype=dtype)
        for backend in ["torch", "triton"] if device == "cuda" else ["torch"]:
            quantizer = qat.FakeQuantizer(config, backend=backend)
            with torch.no_grad():
                forward = median_seconds(lambda: quantizer(w))
            both = median_seconds(lambda: torch.autograd.grad(quantizer(w), w, grad))
            rows.append({"shape": "×".join(map(str, shape)), "dtype": str(dtype).removeprefix("torch."),
                         "backend": backend, "forward us": forward * 1e6, "fwd+bwd us": both * 1e6})
    return rows


def main() -> None:
    run(__doc__, "qat", measure,
        title=f"QAT fake quantization of a weight, 4 bits, groups of 32, on {machine()}",
        formats={"forward us": ".1f", "fwd+bwd us": ".1f"})


if __name__ == "__main__":
    main()
