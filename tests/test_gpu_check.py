"""benchmarks/gpu_check.sh, dry-run here (its steps at tiny sizes under Triton's interpreter), the
harness's datasheet lookup, and the GPU results that "Making it fast" reads."""
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lec19quant import plots, roofline

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness  # noqa: E402


def test_dry_run_goes_through_every_step(tmp_path):
    """A narrow dry run (one test file, one benchmark; `make gpu-check-dry` runs them all): the
    package installs from the tree, the kernel tests pass, the table is saved, the summary and
    the results come back in the folder named."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "LEC19QUANT_TEST_DEVICE")}
    env |= {"PYTHON": sys.executable, "GPU_WHEELS": str(tmp_path / "no-wheels"),
            "GPU_CHECK_TESTS": "tests/test_int8.py", "GPU_CHECK_BENCHMARKS": "bench_kernels"}
    done = subprocess.run([str(SCRIPT), "--dry-run", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["benchmarks.log", "pytest.log", "results.tar.gz", "summary.txt"]
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("GPU check (dry run on the CPU")
    for step in ("install", "kernel tests", "bench_kernels"):
        assert any(line.split() and line.startswith(f"  {step} ") and line.endswith(" ok")
                   for line in summary.splitlines()), summary
    assert "bench_int8" not in summary and "int8 product, M = 4096" in summary
    counts = [line for line in summary.splitlines() if line.startswith("kernel tests: ")]
    assert len(counts) == 1 and re.match(r"kernel tests: \d+ passed, \d+ deselected(, \d+ warnings?)? in", counts[0]), summary
    log = (out / "pytest.log").read_text()
    assert " passed" in log and " failed" not in log and "lec19quant 0.1.0 from" in log
    with tarfile.open(out / "results.tar.gz") as tar:
        names = [n for n in tar.getnames() if n.endswith(".json")]
        assert len(names) == 1 and names[0].startswith("benchmarks/results/kernels_gpu_dryrun_")
        table = json.load(tar.extractfile(names[0]))
    assert table["dry_run"] is True and table["benchmark"] == "kernels_gpu_dryrun"
    families = {(r["family"], r["M"]) for r in table["rows"]}
    assert len(families) == len(table["rows"]) == 6 * 2 and {m for _, m in families} == {1, 17}


def test_the_script_wants_one_folder():
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage:" in done.stderr


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H200", "H200"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("Tesla T4", "T4"), ("NVIDIA H100 PCIe", None), ("NVIDIA H100 NVL", None), ("NVIDIA A100-SXM4-40GB", None),
    ("x86_64", None),
])
def test_datasheet_gpu_matches_only_the_model_it_describes(name, key):
    assert harness.datasheet_gpu(name) == (roofline.GPUS[key] if key else None)


def test_the_chapter_reads_gpu_results_and_nothing_else(tmp_path):
    assert plots.gpu_results(tmp_path / "missing") == []
    results = tmp_path / "results"
    results.mkdir()
    (results / "gguf_cpu_x86_64.json").write_text(json.dumps({"benchmark": "gguf_cpu", "rows": [{"a": 1}]}))
    (results / "kernels_gpu_dryrun_x86_64.json").write_text(
        json.dumps({"benchmark": "kernels_gpu_dryrun", "dry_run": True, "rows": [{"a": 1}]}))
    assert plots.gpu_results(results) == []
    measured = {"benchmark": "kernels_gpu", "machine": "NVIDIA H200", "rows": [{"M": 1, "× fp16": 2.6}]}
    (results / "kernels_gpu_NVIDIA_H200.json").write_text(json.dumps(measured))
    assert plots.gpu_results(results) == [measured]
