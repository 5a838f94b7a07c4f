"""llama.cpp's command-line tools (llama-perplexity, llama-imatrix, llama-quantize) as oracles.

Built from the llama.cpp that the llama-cpp-python sdist bundles (the source of the ggml oracle),
statically and without curl, OpenSSL or OpenMP, once per machine, into the lec19quant cache
(~/.cache/lec19quant/llama-tools-llama-cpp-python-<version>/bin/), under a file lock. The build
takes about 4 minutes on 2 quiet cores.

    tool("llama-perplexity")                               # Path of the binary (built on first use)
    kld_base(model_f32, text_file, "base.kld", chunks=8)   # --kl-divergence-base: the base pass
    stats = kl_divergence(model_q, "base.kld")             # --kl-divergence: the parsed summary
    stats["mean_kld"], stats["same_top_p"], stats["ppl_q"] ...
    imatrix(model_f32, text_file, "imatrix.gguf", n_ctx=64, chunks=4)      # llama-imatrix, float32
    combine(model_f32, ["a.gguf"], "a.dat", n_ctx=64, legacy=True)         # llama-imatrix --in-file
    quantize(model_f32, "q4_k_m.gguf", "Q4_K_M", imatrix="imatrix.gguf")   # llama-quantize --imatrix
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lec19quant.models import cache_dir
from oracles.llama_cpp_source import SKIP, VERSION, NoToolchain, configured, locked, make_targets

TOOLS = ("llama-perplexity", "llama-imatrix", "llama-quantize")


def build_dir() -> Path:
    return cache_dir() / f"llama-tools-llama-cpp-python-{VERSION}"


def build(target: Path) -> None:
    """Download the sdist and build TOOLS (static, CPU only) into target/bin."""
    flags = ["-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF"]  # no HTTPS: nothing downloads
    with configured(target, "llama-tools-build-", flags, skip=tuple(d for d in SKIP if d != "tools/")) as (build, log):
        make_targets(build, log, list(TOOLS))
        partial = target / "bin.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        for name in TOOLS:
            shutil.copy2(build / "bin" / name, partial / name)
        os.replace(partial, target / "bin")  # atomic: a reader sees no tools or all of them


def tool(name: str) -> Path:
    """The path of llama.cpp's `name` (one of TOOLS), built first if it is not there yet
    (raises NoToolchain when it cannot be built here)."""
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp tool {name!r}; built are {TOOLS}")
    path = build_dir() / "bin" / name
    if path.is_file():  # bin/ appears whole (a rename), so a reader needs no lock
        return path
    with locked(build_dir()):
        if not path.is_file():
            build(build_dir())
    return path


def _run(name: str, *args) -> str:
    """Run llama.cpp's tool `name` with `args` (each made a string); its output (stdout and
    stderr), or RuntimeError with the output's end when it fails."""
    cmd = [str(tool(name)), *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {result.returncode}):\n{output[-3000:]}")
    return output


def _perplexity(model: Path, *args: str, threads: int = 2) -> str:
    return _run("llama-perplexity", "-m", model, "-t", threads, "-tb", threads, *args)


def kld_base(model: Path, text_file: Path, base_file: Path, n_ctx: int = 512, chunks: int = 8,
             threads: int = 2) -> str:
    """llama-perplexity --kl-divergence-base: evaluate `model` on the first `chunks` chunks of
    `n_ctx` tokens of the text and save its tokens and log-probabilities to `base_file`;
    returns the tool's output."""
    return _perplexity(model, "-f", str(text_file), "-c", str(n_ctx), "--chunks", str(chunks),
                       "--kl-divergence-base", str(base_file), threads=threads)


_NUMBER = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?|-?nan|-?inf)"
_SUMMARY = {  # key: (pattern, scale); "±" values go to key + "_err"
    "ppl_q": (r"Mean PPL\(Q\)\s*:\s*{n}\s*±\s*{n}", 1),
    "ppl_base": (r"Mean PPL\(base\)\s*:\s*{n}\s*±\s*{n}", 1),
    "ln_ppl_ratio": (r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{n}\s*±\s*{n}", 1),
    "ppl_ratio": (r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*{n}\s*±\s*{n}", 1),
    "mean_kld": (r"Mean    KLD:\s*{n}\s*±\s*{n}", 1),
    "max_kld": (r"Maximum KLD:\s*{n}", 1),
    "kld_99.9": (r"99\.9%   KLD:\s*{n}", 1),
    "kld_99": (r"99\.0%   KLD:\s*{n}", 1),
    "kld_95": (r"95\.0%   KLD:\s*{n}", 1),
    "kld_90": (r"90\.0%   KLD:\s*{n}", 1),
    "median_kld": (r"Median  KLD:\s*{n}", 1),
    "min_kld": (r"Minimum KLD:\s*{n}", 1),
    "mean_dp": (r"Mean    Δp:\s*{n}\s*±\s*{n} %", 0.01),
    "max_dp": (r"Maximum Δp:\s*{n}%", 0.01),
    "dp_99": (r"99\.0%   Δp:\s*{n}%", 0.01),
    "dp_95": (r"95\.0%   Δp:\s*{n}%", 0.01),
    "median_dp": (r"Median  Δp:\s*{n}%", 0.01),
    "dp_5": (r" 5\.0%   Δp:\s*{n}%", 0.01),
    "dp_1": (r" 1\.0%   Δp:\s*{n}%", 0.01),
    "min_dp": (r"Minimum Δp:\s*{n}%", 0.01),
    "rms_dp": (r"RMS Δp    :\s*{n}\s*±\s*{n} %", 0.01),
    "same_top_p": (r"Same top p:\s*{n}\s*±\s*{n} %", 0.01),
}


def parse_kld(output: str) -> dict[str, float]:
    """The summary that llama-perplexity --kl-divergence prints, as floats (percentages as
    fractions); raises ValueError naming any statistic that is missing."""
    stats, missing = {}, []
    for key, (pattern, scale) in _SUMMARY.items():
        m = re.search(pattern.format(n=_NUMBER), output)
        if m is None:
            missing.append(key)
            continue
        stats[key] = float(m.group(1)) * scale
        if m.lastindex == 2:
            stats[key + "_err"] = float(m.group(2)) * scale
    if missing:
        raise ValueError(f"llama-perplexity printed no {', '.join(missing)}; its output ends:\n{output[-2000:]}")
    return stats


def kl_divergence(model: Path, base_file: Path, threads: int = 2) -> dict[str, float]:
    """llama-perplexity --kl-divergence-base base_file --kl-divergence on `model`: the parsed
    summary (parse_kld), the text being the tokens stored in the base file."""
    n_ctx = int.from_bytes(Path(base_file).read_bytes()[8:12], "little")
    return parse_kld(_perplexity(model, "-c", str(n_ctx), "--kl-divergence-base", str(base_file),
                                 "--kl-divergence", threads=threads))


#: llama-imatrix's options for attention in float32: a KV cache of F32 and no flash attention. With
#: its defaults (an F16 cache and flash attention, which on the CPU rounds K and V to 16 bits even
#: from an F32 cache) the sums of the running example's attn_output inputs, and through them of
#: the later layers, move by up to 0.5% (1% with an F16 cache and no flash attention).
F32_ATTENTION = ("-ctk", "f32", "-ctv", "f32", "-fa", "off")


def imatrix(model: Path, text_file: Path, out: Path, n_ctx: int = 512, chunks: int | None = None,
            threads: int = 2, f32_attention: bool = True, legacy: bool = False) -> str:
    """llama-imatrix: the importance matrix of `model` (a GGUF file) on the first `chunks`
    (default: all) chunks of `n_ctx` tokens of the text, written to `out` (GGUF, or with `legacy`
    the .dat format); returns the tool's output. The text is tokenized whole, with BOS only where
    the vocabulary adds one, and cut into chunks as `imatrix.collect` does; it must hold at least
    two chunks. With `f32_attention` (F32_ATTENTION) llama.cpp computes in float32 throughout.
    No perplexity is computed (--no-ppl)."""
    return _run("llama-imatrix", "-m", model, "-f", text_file, "-o", out, "-c", n_ctx,
                "--chunks", -1 if chunks is None else chunks, "-t", threads, "-tb", threads, "--no-ppl",
                *(F32_ATTENTION if f32_attention else ()), *(("--output-format", "dat") if legacy else ()))


def combine(model: Path, in_files: list[Path], out: Path, n_ctx: int = 512, legacy: bool = False) -> str:
    """llama-imatrix --in-file (no text): read the importance matrix files `in_files` (GGUF or
    legacy .dat) with llama.cpp's loader, add them up and write the sum to `out` (GGUF, or
    .dat with `legacy`); `n_ctx` is the chunk size that a legacy file's counts are scaled by.
    `model` is only named (the tool requires -m), not loaded."""
    files = [arg for path in in_files for arg in ("--in-file", path)]
    return _run("llama-imatrix", "-m", model, *files, "-o", out, "-c", n_ctx,
                *(("--output-format", "dat") if legacy else ()))


def quantize(src: Path, dst: Path, ftype: str, imatrix: Path | None = None, threads: int = 2) -> str:
    """llama-quantize: write `src` (a GGUF file) as file type `ftype` (Q4_K_M, IQ4_XS, ...) to `dst`,
    weighting the quantization with the importance matrix file `imatrix` (GGUF or .dat) if given;
    returns the tool's output."""
    return _run("llama-quantize", *(("--imatrix", imatrix) if imatrix is not None else ()), src, dst, ftype,
                threads)


def _built(name: str) -> Path:
    try:
        return tool(name)
    except NoToolchain as e:
        pytest.skip(f"llama.cpp's tools cannot be built on this machine: {e}")


@pytest.fixture(scope="session")
def llama_perplexity() -> Path:
    """The built llama-perplexity for a test session; skipped, saying why, only where no
    toolchain exists."""
    return _built("llama-perplexity")


@pytest.fixture(scope="session")
def llama_imatrix() -> Path:
    """The built llama-imatrix for a test session (skipped as llama_perplexity)."""
    return _built("llama-imatrix")


@pytest.fixture(scope="session")
def llama_quantize() -> Path:
    """The built llama-quantize for a test session (skipped as llama_perplexity)."""
    return _built("llama-quantize")
