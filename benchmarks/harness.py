"""What the benchmarks share: a median time per call, the machine's name, a printed table, the
table saved as JSON under benchmarks/results/ with the machine, versions and date, and the
command line that does all of it (with `--dry-run`, a benchmark's GPU table at tiny sizes on the
CPU through Triton's interpreter: benchmarks/gpu_check.sh tests itself so)."""
import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.benchmark import Timer

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn, min_run_time: float = 1.0) -> float:
    """Median seconds per call of fn() (torch.utils.benchmark: warm-up, repeats, CUDA syncs)."""
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median


def machine() -> str:
    """The GPU's name when there is one, else the CPU's."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


def print_table(title: str, rows: list[dict], formats: dict[str, str]) -> None:
    """Print `rows` (dicts with the same keys) under `title`, each column formatted by `formats`."""
    cells = [[format(r[c], formats.get(c, "")) for c in rows[0]] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(rows[0])]
    print(title)
    print("  ".join(c.rjust(w) for c, w in zip(rows[0], widths)))
    for row in cells:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


@dataclass(frozen=True)
class Target:
    """Where a GPU table is measured: a CUDA GPU, or (dry run) the CPU through Triton's
    interpreter at tiny sizes, each timing a single call."""

    dry_run: bool = False

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    def sizes(self, full: list, tiny: list) -> list:
        """The sizes to measure: `full` on the GPU, `tiny` in a dry run."""
        return tiny if self.dry_run else full

    def seconds(self, fn) -> float:
        """Median seconds per call of fn() on the GPU (0.2 s of calls); one call in a dry run."""
        if not self.dry_run:
            return median_seconds(fn, min_run_time=0.2)
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def datasheet_gpu(name: str):
    """The `lec19quant.roofline.GPU` whose datasheet figures are those of the device called `name`
    (as torch.cuda.get_device_name() gives it), or None when no entry is known to fit."""
    from lec19quant import roofline

    fits = {"H200": (), "H100": ("PCIe", "NVL"), "A100": ("PCIe", "40GB"), "T4": ()}  # key: other models
    return next((roofline.GPUS[key] for key, others in fits.items()
                 if key in name and not any(o in name for o in others)), None)


def bandwidth_fraction(bytes_per_second: float) -> float:
    """Achieved bandwidth as a fraction of this GPU's datasheet peak; NaN where none is known."""
    gpu = datasheet_gpu(machine())
    return bytes_per_second / gpu.bandwidth if gpu else float("nan")


def save(benchmark: str, rows: list[dict], out_dir: Path = RESULTS, **details) -> Path:
    """Write the rows with the machine, torch version and date to <out_dir>/<benchmark>_<machine>.json."""
    name = machine()
    out = Path(out_dir) / f"{benchmark}_{name.replace(' ', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": benchmark, "machine": name, "date": datetime.date.today().isoformat(),
                               "torch": torch.__version__, "threads": torch.get_num_threads(), **details,
                               "rows": rows}, indent=1))
    print("wrote", out)
    return out


def run(doc: str, benchmark: str, rows: Callable[[], list[dict]],
        gpu_rows: Callable[[Target], list[dict]] | None = None,
        *, title: str, formats: dict[str, str] | Callable[[dict], dict[str, str]], **details) -> list[dict] | None:
    """A benchmark's command line, `[--save] [--out DIR] [--gpu] [--dry-run]`, described by doc's
    first line: measure with rows(), or, given gpu_rows, with gpu_rows(Target()) on a CUDA GPU
    (saved as <benchmark>_gpu, else <benchmark>_cpu). --gpu: the GPU table or nothing (a benchmark
    without gpu_rows says so); --dry-run: the same with gpu_rows(Target(dry_run=True)) on the CPU
    (saved as <benchmark>_gpu_dryrun). Print the table under title with formats (a dict, or a
    function of the first row giving one); with --save, save() it with details in --out.
    Returns the table (None when there was none to measure)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the folder --save writes to")
    parser.add_argument("--gpu", action="store_true", help="only the GPU table, on a CUDA GPU")
    parser.add_argument("--dry-run", action="store_true",
                        help="the GPU table at tiny sizes, on the CPU through Triton's interpreter")
    args = parser.parse_args()
    if (args.gpu or args.dry_run) and gpu_rows is None:
        print(f"{benchmark}: no GPU table")
        return None
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # read when a kernel module is first imported
        table, benchmark, details = gpu_rows(Target(dry_run=True)), f"{benchmark}_gpu_dryrun", details | {"dry_run": True}
    elif args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA GPU (--dry-run runs the GPU table on the CPU)")
    elif gpu_rows is None:
        table = rows()
    elif torch.cuda.is_available():
        table, benchmark = gpu_rows(Target()), f"{benchmark}_gpu"
    else:
        table, benchmark = rows(), f"{benchmark}_cpu"
    print_table(title, table, formats(table[0]) if callable(formats) else formats)
    if args.save:
        save(benchmark, table, args.out, **details)
    return table
