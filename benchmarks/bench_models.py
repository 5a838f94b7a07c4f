"""The running example's costs on this machine: first load (GGUF conversion), cached reload, and
a 2,048-token perplexity of Moby-Dick.

    python benchmarks/bench_models.py

The first load runs in an empty temporary cache, so the user's cache is left alone.
"""
import os
import tempfile
import time

import torch

from lec19quant import models


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ[models.CACHE_ENV] = cache
        first, _ = seconds(models.load_model)
        reload, (model, tokenizer) = seconds(models.load_model)
        text = models.load_text("moby-dick")
        ppl_time, ppl = seconds(lambda: models.perplexity(model, tokenizer, text, max_tokens=2048))
    print(f"SmolLM2-135M on {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"{'step':<34} {'seconds':>8}")
    print(f"{'first load (convert the GGUF)':<34} {first:>8.1f}")
    print(f"{'cached reload':<34} {reload:>8.2f}")
    print(f"{f'perplexity, {ppl.tokens:,} tokens':<34} {ppl_time:>8.1f}   (perplexity {ppl.perplexity:.2f})")


if __name__ == "__main__":
    main()
