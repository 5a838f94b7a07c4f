"""LLM.int8() layers (Int8Linear, bitsandbytes' variant, threshold 6) against a 16-bit Linear and
bitsandbytes' Linear8bitLt, per call of y = x·Wᵀ, at decoding (M = 1, 16) and prefill sizes.

    python benchmarks/bench_llm_int8.py [--save]

Inputs are Gaussian with 8 outlier columns (|x| up to 20), about 0.2% of 4096.
On a CPU: the torch reference (float32 x) at 4096×4096, M = 1, 16, 256.
On a CUDA GPU: the Triton kernels (float16 x) at 4096×4096 and 8192×8192, M = 1, 16, 512, 4096;
"int8 part only" is the same layer with threshold 0 (no outlier columns to find or gather).
Every layer quantizes x on each call, as in inference; the weights are quantized once.
"""
import importlib.util
import logging

import torch
from harness import machine, median_seconds, run
from torch import nn

from lec19quant import int8

CPU_SHAPES = [(m, 4096) for m in (1, 16, 256)]
GPU_SHAPES = [(m, k) for k in (4096, 8192) for m in (1, 16, 512, 4096)]
OUTLIERS = 8


def activations(m: int, k: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(m, k, device=device)
    columns = torch.randperm(k, device=device)[:OUTLIERS]
    x[:, columns] = torch.linspace(8, 20, OUTLIERS, device=device)
    return x.to(dtype)


def bitsandbytes_linear(linear: nn.Linear, device: str):
    """bitsandbytes' Linear8bitLt with LLM.int8()'s threshold, or None when it is not installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None
    import bitsandbytes as bnb

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # not a warning per call for float32 x
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=False,
                                has_fp16_weights=False, threshold=6.0)
    layer.load_state_dict(linear.state_dict())
    return layer.to(device).eval()  # in training mode it skips the outliers


@torch.inference_mode()
def rows(shapes, device: str, dtype: torch.dtype, backend: str, seconds=median_seconds,
         bitsandbytes: bool = True) -> list[dict]:
    out = []
    for m, k in shapes:
        linear = nn.Linear(k, k, bias=False, device=device, dtype=dtype)
        x = activations(m, k, device, dtype)
        ours = int8.Int8Linear.from_linear(linear, threshold=6.0, backend=backend)
        int8_only = int8.Int8Linear.from_linear(linear, threshold=0, backend=backend)
        reference = bitsandbytes_linear(linear, device) if bitsandbytes else None
        row = {"M": m, "K = N": k, f"{str(dtype)[6:]} ms": seconds(lambda: linear(x)) * 1e3,
               "LLM.int8() ms": seconds(lambda: ours(x)) * 1e3,
               "int8 part only ms": seconds(lambda: int8_only(x)) * 1e3}
        row["bitsandbytes ms"] = float("nan") if reference is None else seconds(lambda: reference(x)) * 1e3
        out.append(row)
    return out


def main() -> None:
    run(__doc__, "llm_int8", lambda: rows(CPU_SHAPES, "cpu", torch.float32, "torch"),
        lambda target: rows(target.sizes(GPU_SHAPES, [(1, 64), (32, 64)]), target.device, torch.float16, "triton",
                            target.seconds, bitsandbytes=not target.dry_run),
        title=f"LLM.int8() y = x·Wᵀ on {machine()}, torch {torch.__version__}",
        formats=lambda row: {k: ".3f" for k in row if k.endswith("ms")}, outlier_columns=OUTLIERS)


if __name__ == "__main__":
    main()
