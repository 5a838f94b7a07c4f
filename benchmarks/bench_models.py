"""The running example's costs on this machine: first load (GGUF conversion), cached reload, and
a 2,048-token perplexity of Moby-Dick.

    python benchmarks/bench_models.py

The first load runs in an empty temporary cache, so the user's cache is left alone.
"""
import os
import tempfile
import time

import torch
from harness import machine, print_table

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
    rows = [{"step": "first load (convert the GGUF)", "seconds": first},
            {"step": "cached reload (target ≤ 3 s)", "seconds": reload},
            {"step": f"perplexity of {ppl.tokens:,} tokens (target ≤ 30 s)", "seconds": ppl_time}]
    print_table(f"SmolLM2-135M on {machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                rows, {"seconds": ".2f"})


if __name__ == "__main__":
    main()
