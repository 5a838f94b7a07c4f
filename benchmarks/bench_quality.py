"""Quality measurement: the package against llama-perplexity, and the Triton statistics kernel.

    python benchmarks/bench_quality.py [--save]

On a CPU: the running example's F32, Q8_0, Q4_K_M and Q3_K_M GGUF files measured three ways on
8 chunks of 512 tokens of Moby-Dick's evaluation split, 2 threads
(tests/oracles/llama_comparison.py): llama-perplexity --kl-divergence, the package with float
activations, the package emulating llama.cpp's CPU arithmetic; with the evaluation throughput
(tokens processed per second) of llama-perplexity and of the package on each file. With --save
the whole comparison also goes to benchmarks/results/quality_llama_cpp.json, which the chapter
"Measuring quality" reads.
On a CUDA GPU: `quality.token_stats` on 2,048 rows at vocabularies 49,152 (SmolLM2) and 151,936
(Qwen3), the one-pass Triton kernel against the torch reference, with the bandwidth each reaches.
"""
import json
import sys
import tempfile
from pathlib import Path

import torch
from harness import RESULTS, Target, bandwidth_fraction, machine, run

from lec19quant import quality

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from oracles.llama_comparison import three_way

COMPARISON = RESULTS / "quality_llama_cpp.json"
VOCABS = [49_152, 151_936]


def cpu_rows() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as work:
        measured = three_way(Path(work), n_chunks=8, threads=2)
    if "--save" in sys.argv:
        COMPARISON.write_text(json.dumps(measured, indent=1))
        print("wrote", COMPARISON)
    processed = measured["chunks"] * quality.N_CTX
    rows = []
    for r in measured["rows"]:
        row = {"file": r["file"]}
        for way, short in (("llama.cpp", "llama"), ("package", "float"), ("package, llama.cpp arithmetic", "emul")):
            row |= {f"PPL {short}": r[way]["ppl_q"], f"KLD {short}": r[way]["mean_kld"],
                    f"top% {short}": 100 * r[way]["same_top_p"]}
        row |= {"llama tok/s": processed / r["seconds"]["llama.cpp"], "package tok/s": processed / r["seconds"]["package"]}
        rows.append(row)
    return rows


def gpu_rows(target: Target) -> list[dict]:
    rows = []
    for vocab in target.sizes(VOCABS, [1000]):
        n = target.sizes([2048], [8])[0]
        g = torch.Generator().manual_seed(0)
        base = (4 * torch.randn(n, vocab, generator=g)).to(target.device)
        logits = base + 0.3 * torch.randn(n, vocab, generator=g).to(target.device)
        lb, target_ids = quality.log_probs(base), torch.randint(0, vocab, (n,), generator=g).to(target.device)
        fast = target.seconds(lambda: quality.token_stats(lb, logits, target_ids, backend="triton"))
        ref = target.seconds(lambda: quality.token_stats(lb, logits, target_ids, backend="torch"))
        error = (quality.token_stats(lb, logits, target_ids, backend="triton").kld
                 - quality.token_stats(lb, logits, target_ids, backend="torch").kld).abs().max().item()
        moved = 2 * lb.numel() * lb.element_size()  # both rows read once
        rows.append({"rows": n, "vocab": vocab, "torch ms": ref * 1e3, "triton ms": fast * 1e3,
                     "speed-up": ref / fast, "triton GB/s": moved / fast / 1e9,
                     "of peak": bandwidth_fraction(moved / fast), "max |ΔKLD|": error})
    return rows


def main() -> None:
    run(__doc__, "quality", cpu_rows, gpu_rows,
        title=(f"token statistics, Triton vs torch, on {machine()}" if torch.cuda.is_available() else
               f"the running example's GGUF files: llama.cpp / package float / package emulating llama.cpp, "
               f"8 × 512 tokens, 2 threads, on {machine()}"),
        formats=lambda row: {k: (".3g" if k == "max |ΔKLD|" else ".4f" if k.startswith("KLD") else ".2f")
                             for k, v in row.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
