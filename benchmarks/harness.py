"""What the benchmarks share: a median time per call, the machine's name, a printed table, and
the table saved as JSON under benchmarks/results/ with the machine, versions and date."""
import datetime
import json
import platform
from pathlib import Path

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
