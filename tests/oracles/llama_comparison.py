"""The package's quality measurement set beside llama.cpp's, on the running example's GGUF files.

    rows = three_way(workdir)   # one row per file: llama.cpp, the package with float activations,
                                # the package emulating llama.cpp's CPU arithmetic

The package writes the F32 base file and the Q8_0 and Q4_K_M files (`gguf.io.write_gguf`); the
2/3-bit file is written by llama-quantize from the F32 file (Q3_K_M: the package has no recipe for
it). llama-perplexity computes the base log-probabilities from the F32 file on the first `n_chunks`
chunks of 512 tokens of Moby-Dick's evaluation split (--kl-divergence-base) and compares each
file with them (--kl-divergence). The package reads every file back (`gguf.io.read_gguf`, weights
dequantized from the bytes written), evaluates on the token ids that llama.cpp stored in its base
file, and compares with its own base pass on the F32 file's weights — once in plain float32, once
inside `quality.llama_cpp_arithmetic`.
"""
import copy
import subprocess
import time
from collections import Counter
from pathlib import Path

import torch

from lec19quant import models, quality
from lec19quant.gguf import io
from oracles.llama_tools import kl_divergence, kld_base, tool

PACKAGE_FILES = ("Q8_0", "Q4_K_M")
LLAMA_QUANTIZE_FILES = ("Q3_K_M",)
TEXT = ("moby-dick", "test")
KEYS = ("ppl_q", "ppl_base", "ppl_ratio", "mean_kld", "mean_kld_err", "kld_99", "max_kld", "same_top_p",
        "same_top_p_err", "rms_dp")


def write_files(model, tokenizer, workdir: Path) -> dict[str, Path]:
    """The GGUF files of the comparison, written once into `workdir`."""
    paths = {}
    for ftype in ("F32", *PACKAGE_FILES):
        paths[ftype] = workdir / f"smollm2-135m-{ftype}.gguf"
        if not paths[ftype].exists():
            io.write_gguf(model, tokenizer, paths[ftype], ftype, tokenizer_pre="smollm", progress=False)
    for ftype in LLAMA_QUANTIZE_FILES:
        paths[ftype] = workdir / f"smollm2-135m-{ftype}.gguf"
        if not paths[ftype].exists():
            result = subprocess.run([str(tool("llama-quantize")), str(paths["F32"]), str(paths[ftype]), ftype, "2"],
                                    capture_output=True, text=True)
            if result.returncode:
                raise RuntimeError(f"llama-quantize failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return paths


def _package(base: quality.Base, model, types: dict | None) -> tuple[dict, float]:
    start = time.perf_counter()
    if types is None:
        report = quality.evaluate(base, model)
    else:
        with quality.llama_cpp_arithmetic(model, types):
            report = quality.evaluate(base, model)
    return report.summary, time.perf_counter() - start


def three_way(workdir: Path, n_chunks: int = 8, threads: int = 2) -> dict:
    """Measure every file three ways (module docstring); returns {"rows": [...], "tokens": ...}."""
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    model, tokenizer = models.load_model()
    text_file = workdir / "moby-dick-test.txt"
    text = models.load_text(*TEXT)
    text_file.write_text(text)
    paths = write_files(model, tokenizer, workdir)
    base_file = workdir / "f32.kld"
    kld_base(paths["F32"], text_file, base_file, chunks=n_chunks, threads=threads)
    llama_base = quality.Base.load(base_file)
    ours = quality.chunks(quality.tokenize(tokenizer, text), quality.N_CTX, n_chunks)
    same_tokens = torch.equal(ours, llama_base.tokens)
    tokens = llama_base.tokens.reshape(-1)  # the token ids llama.cpp evaluates

    def load(path):
        contents = io.read_gguf(path)
        m = io.load_weights(copy.deepcopy(model), contents)
        return m, quality.matmul_types(m, contents.types), Counter(contents.types.values())

    base_model, base_types, _ = load(paths["F32"])
    start = time.perf_counter()
    base_float = quality.base_logits(base_model, tokens, quality.N_CTX, n_chunks)
    base_seconds = time.perf_counter() - start
    with quality.llama_cpp_arithmetic(base_model, base_types):
        base_emulated = quality.base_logits(base_model, tokens, quality.N_CTX, n_chunks)
    rows = []
    for name, path in paths.items():
        m, types, counts = (base_model, base_types, None) if name == "F32" else load(path)
        start = time.perf_counter()
        theirs = kl_divergence(path, base_file, threads=threads)
        llama_seconds = time.perf_counter() - start
        float_summary, float_seconds = _package(base_float, m, None)
        emulated_summary, _ = _package(base_emulated, m, types)
        rows.append({"file": name, "writer": "llama-quantize" if name in LLAMA_QUANTIZE_FILES else "lec19quant",
                     "tensor types": dict(counts or {"F32": len(types)}), "bytes": path.stat().st_size,
                     "llama.cpp": {k: theirs[k] for k in KEYS},
                     "package": {k: float_summary[k] for k in KEYS},
                     "package, llama.cpp arithmetic": {k: emulated_summary[k] for k in KEYS},
                     "seconds": {"llama.cpp": llama_seconds, "package": float_seconds}})
        if m is not base_model:
            del m
    return {"rows": rows, "chunks": n_chunks, "scored tokens": len(llama_base.targets),
            "tokenizers agree": same_tokens, "text": "/".join(TEXT), "threads": threads,
            "base seconds (package)": base_seconds}
