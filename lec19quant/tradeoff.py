"""Every scheme of the book on one size–quality chart (the chapter "Choosing a format").

Size is measured, not nominal: bits per weight = 8 · (bytes that the decoder blocks' weight
matrices take as stored, scales and all) / (their number of weights). Quality is llama.cpp's
(`quality`): mean KL(p_base ‖ p_q) over the scored tokens of a text that no scheme calibrated on.
A scheme is on the Pareto frontier when no other is both as small and closer to the base model.

`python -m lec19quant.tradeoff --save` measures every candidate on the running example and saves
the table that the chapter reads (`SAVED`, shipped with the package); new schemes in
`nn.named_schemes` join it by themselves.
"""
import argparse
import copy
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

#: llama.cpp's scoreboard for LLaMA 3 8B against FP16 on the Wikitext-2 test set, CUDA backend,
#: revision f364eb6f (tools/perplexity/README.md in llama.cpp, as llama-cpp-python 0.3.36 bundles
#: it): file type → (file size in GiB, mean KLD, same top token in % or None where not given).
LLAMA3_8B = {
    "Q8_0": (7.96, 0.001355, 97.674), "Q6_K": (6.14, 0.005452, 96.031), "Q5_K_M": (5.33, 0.010762, None),
    "Q5_0": (5.21, 0.022239, None), "Q4_K_M": (4.58, 0.031273, 91.901), "Q4_K_S": (4.37, 0.043136, None),
    "Q4_0": (4.34, 0.071940, None), "Q3_K_M": (3.74, 0.101913, None), "Q3_K_S": (3.41, 0.228217, None),
    "Q2_K": (2.96, 0.445132, 71.138),
}
LLAMA3_8B_WEIGHTS = 8_030_261_248  # parameters of Meta-Llama-3-8B, all stored in the file

#: the running example's table, as `main` saves it
SAVED = Path(str(resources.files("lec19quant").joinpath("data", "tradeoff_smollm2.json")))

#: the chapter that teaches each family of schemes, by the module that defines the scheme
CHAPTERS = {"nn": "Quantization basics", "int8": "LLM.int8()", "smoothquant": "SmoothQuant and AWQ",
            "awq": "SmoothQuant and AWQ", "groupwise": "SmoothQuant and AWQ", "gptq": "GPTQ",
            "linear": "GGUF", "recipes": "GGUF", "imatrix": "Importance matrix", "nvfp4": "NVFP4", "qlora": "QLoRA"}


def gib_to_bits_per_weight(gib: float, weights: int = LLAMA3_8B_WEIGHTS) -> float:
    """A file's size in GiB as bits per weight: 8 · 2³⁰ · GiB / weights (the whole file, so
    embedding and output included)."""
    return 8 * 2**30 * gib / weights


def block_matrices(model: nn.Module) -> dict[str, tuple[int, int]]:
    """The nn.Linear layers inside the model's decoder blocks, name → weight shape: what every
    scheme quantizes (the embedding and the output head stay as they are)."""
    from .models import decoder_layers

    layers = decoder_layers(model)
    inside = {id(m) for m in layers.modules()}
    return {name: tuple(m.weight.shape) for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m) in inside}


def stored_bytes(model: nn.Module, names) -> int:
    """Bytes that the modules `names` of `model` take as stored (`nn.model_nbytes` of each)."""
    from .nn import model_nbytes

    return sum(model_nbytes(model.get_submodule(name)) for name in names)


def pareto_front(sizes, errors) -> list[int]:
    """Indices of the points that no other point dominates (as small or smaller and with a
    smaller error, or smaller and with an error as small), in order of size."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], errors[i]))
    front, best = [], math.inf
    for i in order:
        if errors[i] < best:
            front.append(i)
            best = errors[i]
    return front


@dataclass
class Candidate:
    """One row of the chart: `apply(model, tokenizer, calibration)` quantizes the model in place
    (calibration: the calibration text) and returns the stored bytes of its block matrices."""

    name: str
    chapter: str
    activations: str  # what the matrix products' inputs are rounded to
    apply: Callable


def _scheme(scheme) -> Candidate:
    from .nn import quantize_model

    def apply(model, tokenizer, calibration):
        names = block_matrices(model)
        if scheme.__class__.__module__.endswith("gptq"):
            from . import gptq

            gptq.quantize_model(model, gptq.calibration_ids(tokenizer, calibration, 16, 512), scheme, progress=False)
        else:
            quantize_model(model, scheme, tokenizer=tokenizer)
        return stored_bytes(model, names)

    name = scheme.name.lower()
    activations = ("int8" if name.startswith(("w8a8", "smoothquant")) else "int8 + 16-bit outliers" if "int8" in name
                   else "4-bit float" if name.endswith("w4a4") else "float")
    return Candidate(name, CHAPTERS[scheme.__class__.__module__.rsplit(".", 1)[-1]], activations, apply)


def _gguf(ftype: str, with_imatrix: bool) -> Candidate:
    from .gguf import imatrix, io, recipes

    def apply(model, tokenizer, calibration):
        names = io.gguf_names(model)
        blocks = {names[f"{n}.weight"]: shape for n, shape in block_matrices(model).items()}
        imat = None
        if with_imatrix:
            imat = imatrix.collect(model, tokenizer(calibration)["input_ids"], chunk_size=512, chunks=8)
        weights, types = io.quantized_weights(model, ftype, imatrix=imat, only=blocks.__contains__)
        model.load_state_dict(weights)
        return sum(recipes.tensor_nbytes(types[g], shape) for g, shape in blocks.items())

    suffix = " + imatrix" if with_imatrix else ""
    return Candidate(f"gguf {ftype}{suffix}", CHAPTERS["imatrix" if with_imatrix else "recipes"], "float", apply)


#: the weight-only round-to-nearest schemes of the chart (any bits and groups work; these span it)
RTN = ("w8-row", "w4-row", "w4-g32", "w3-g32", "w2-g32")
#: llama.cpp's file types on the chart, without and with an importance matrix
GGUF_FILE_TYPES = (("Q4_K_M", False), ("Q3_K_M", False), ("Q2_K", False),
                   ("Q4_K_M", True), ("IQ4_XS", True), ("Q2_K", True))


def candidates() -> dict[str, Candidate]:
    """Every scheme of the package by name (`nn.named_schemes`), the RTN family's `RTN` and
    llama.cpp's `GGUF_FILE_TYPES` (applied to the block matrices only, as the other schemes)."""
    from .nn import get_scheme, named_schemes

    rows = [_scheme(get_scheme(name)) for name in RTN]
    rows += [_scheme(s) for s in named_schemes().values()]
    rows += [_gguf(ftype, with_imatrix) for ftype, with_imatrix in GGUF_FILE_TYPES]
    return {c.name: c for c in rows}


@dataclass
class Measurement:
    """A candidate's size and quality against the base model (llama.cpp's summary, `quality`)."""

    name: str
    chapter: str
    activations: str
    bits_per_weight: float
    mb: float  # the block matrices as stored
    ppl_ratio: float
    mean_kld: float
    mean_kld_err: float
    kld_99: float
    same_top: float  # % of scored tokens
    seconds: float  # quantizing and evaluating, on the machine that measured it


def measure(candidate: Candidate, model: nn.Module, tokenizer, base, calibration: str) -> Measurement:
    """Quantize a copy of `model` with `candidate` (calibrating on `calibration`) and compare it
    with `base` (`quality.base_logits` of the unquantized model on another text)."""
    from .quality import evaluate

    start = time.perf_counter()
    quantized = copy.deepcopy(model)
    nbytes = candidate.apply(quantized, tokenizer, calibration)
    report = evaluate(base, quantized, batch_size=4)  # a layer that dequantizes does it once per 4 chunks
    weights = sum(o * i for o, i in block_matrices(model).values())
    return Measurement(candidate.name, candidate.chapter, candidate.activations, 8 * nbytes / weights,
                       nbytes / 1e6, report["ppl_ratio"], report["mean_kld"], report["mean_kld_err"],
                       report["kld_99"], 100 * report["same_top_p"], time.perf_counter() - start)


def as_file_types(measurements: list[Measurement]) -> dict[str, Measurement]:
    """The measurements of llama.cpp's file types on its LLaMA 3 8B scoreboard, by type: the
    recipe ("gguf Q4_K_M") where one was measured, else the type applied to every matrix ("q8_0")."""
    by_name = {m.name: m for m in measurements}
    out = {}
    for t in LLAMA3_8B:
        row = by_name.get(f"gguf {t}", by_name.get(t.lower()))
        if row is not None:
            out[t] = row
    return out


def save(measurements: list[Measurement], path, **about) -> Path:
    """Write the measurements and what they were measured on (`about`) as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"about": about, "rows": [asdict(m) for m in measurements]}, indent=1) + "\n")
    return path


def load(path=SAVED) -> tuple[dict, list[Measurement]]:
    """What `save` wrote (by default the running example's table): (about, measurements)."""
    data = json.loads(Path(path).read_text())
    return data["about"], [Measurement(**row) for row in data["rows"]]


def main(argv=None) -> None:
    from . import models, quality

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--chunks", type=int, default=4, help="evaluation chunks of 512 tokens of Moby-Dick")
    parser.add_argument("--only", nargs="*", help="candidate names (default: all)")
    parser.add_argument("--save", type=Path, nargs="?", const=SAVED, help=f"JSON file (default {SAVED.name})")
    args = parser.parse_args(argv)
    model, tokenizer = models.load_model(args.model)
    calibration = models.load_text("sotu", "train")
    base = quality.base_logits(model, quality.tokenize(tokenizer, models.load_text("moby-dick")),
                               n_chunks=args.chunks, bos=quality.add_bos(tokenizer))
    rows = []
    for name, candidate in candidates().items():
        if args.only and name not in args.only:
            continue
        rows.append(measure(candidate, model, tokenizer, base, calibration))
        r = rows[-1]
        print(f"{name:28} {r.bits_per_weight:6.2f} bpw  KLD {r.mean_kld:.4f} ± {r.mean_kld_err:.4f}  "
              f"same top {r.same_top:5.1f}%  {r.seconds:5.0f} s", flush=True)
    if args.save:
        save(rows, args.save, model=args.model, chunks=args.chunks, scored_tokens=base.targets.numel(),
             evaluated_on="moby-dick", calibrated_on="sotu (train)", torch=torch.__version__,
             machine=f"{platform.machine()}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
