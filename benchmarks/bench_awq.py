"""SmoothQuant's calibration and AWQ's search on the running example, and AWQ's stored layer on a GPU.

    python benchmarks/bench_awq.py [--save] [--gpu] [--dry-run]

On a CPU: seconds for SmoothQuant's calibration statistics (`models.capture_activations`) and for
AWQ's scale search (`awq.apply_awq`, 4-bit, groups of 128, grid of 20) and clip search on
SmolLM2-135M, each once, with the calibration tokens of the chapter (128) and four times as many.
On a CUDA GPU: y = Ŵx at batch 1 through `GroupQuantLinear` (4-bit, groups of 128, as AWQ stores
it; the Triton dequantize + GEMV kernel) against torch's float16 product, on 4096×4096 and
4096×14336 (out × in) weights, with the fraction of the datasheet bandwidth the kernel reaches.
"""
import copy
import time

import torch
from harness import Target, bandwidth_fraction, machine, run

from lec19quant import awq, groupwise, models, smoothquant

GPU_SHAPES = [(4096, 4096), (4096, 14336)]


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_rows() -> list[dict]:
    model, tokenizer = models.load_model()
    sotu = models.load_text("sotu", "train")
    rows = []
    for tokens in (128, 512):
        batch = smoothquant.Calibration("sotu", tokens, min(tokens, 512)).token_batch(model, tokenizer)
        m = copy.deepcopy(model)
        rows.append({"calibration tokens": tokens,
                     "statistics s": _once(lambda: models.capture_activations(m, tokenizer, sotu, max_tokens=tokens)),
                     "AWQ search s": _once(lambda: awq.apply_awq(m, batch, 4, 128)),
                     "clip search s": _once(lambda: awq.apply_clip_search(m, batch, 4, 128))})
    return rows


@torch.inference_mode()
def gpu_rows(target: Target) -> list[dict]:
    rows = []
    for n, k in target.sizes(GPU_SHAPES, [(64, 256)]):
        linear = torch.nn.Linear(k, n, bias=False)
        stored = groupwise.RTN(4, 128).quantize_linear(linear)
        stored.backend = "triton"
        stored = stored.to(target.device)
        w16 = stored.dequantized_weight().half()
        x = torch.randn(1, k, device=target.device, dtype=torch.float16)
        fp16, w4 = target.seconds(lambda: x @ w16.T), target.seconds(lambda: stored(x))
        rows.append({"out × in": f"{n}×{k}", "fp16 µs": fp16 * 1e6, "w4 µs": w4 * 1e6, "fp16 / w4": fp16 / w4,
                     "w4 bandwidth": bandwidth_fraction((stored.nbytes + 2 * (n + k)) / w4)})
    return rows


def main() -> None:
    run(__doc__, "awq", cpu_rows, gpu_rows, title=f"SmoothQuant/AWQ on {machine()}, torch {torch.__version__}",
        formats=lambda row: {k: ".2f" if k not in ("calibration tokens", "out × in") else "" for k in row})


if __name__ == "__main__":
    main()
