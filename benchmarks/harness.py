"""What the benchmarks share: a median time per call, the machine's name, a printed table, the
table saved as JSON under benchmarks/results/ with the machine, versions and date, and the
command line that does all of it."""
import argparse
import datetime
import json
import platform
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


def save(benchmark: str, rows: list[dict], **details) -> Path:
    """Write the rows with the machine, torch version and date to results/<benchmark>_<machine>.json."""
    name = machine()
    out = RESULTS / f"{benchmark}_{name.replace(' ', '_')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"benchmark": benchmark, "machine": name, "date": datetime.date.today().isoformat(),
                               "torch": torch.__version__, "threads": torch.get_num_threads(), **details,
                               "rows": rows}, indent=1))
    print("wrote", out)
    return out


def run(doc: str, benchmark: str, rows: Callable[[], list[dict]], gpu_rows: Callable[[], list[dict]] | None = None,
        *, title: str, formats: dict[str, str] | Callable[[dict], dict[str, str]], **details) -> None:
    """A benchmark's command line, `[--save]`, described by doc's first line: measure with rows(),
    or, given gpu_rows, with gpu_rows() on a CUDA GPU (saved as <benchmark>_gpu, else <benchmark>_cpu);
    print the table under title with formats (a dict, or a function of the first row giving one);
    with --save, save() it with details."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    if gpu_rows is None:
        table = rows()
    elif torch.cuda.is_available():
        table, benchmark = gpu_rows(), f"{benchmark}_gpu"
    else:
        table, benchmark = rows(), f"{benchmark}_cpu"
    print_table(title, table, formats(table[0]) if callable(formats) else formats)
    if args.save:
        save(benchmark, table, **details)
