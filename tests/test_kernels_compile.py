"""Every Triton kernel compiles for a T4 (sm_75) and an A100 (sm_80), no GPU needed.

Compilation runs in a subprocess without TRITON_INTERPRET, which conftest.py sets for this process.
"""
import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lec19quant.kernels

HERE = Path(__file__).parent
KERNEL_MODULES = [f"lec19quant.kernels.{m.name}" for m in pkgutil.iter_modules(lec19quant.kernels.__path__)]


def compile_check(module: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(HERE / "compile_kernels.py"), module],
                          env=env, capture_output=True, text=True, timeout=600)


def test_there_are_kernels_to_check():
    assert "lec19quant.kernels.absmax" in KERNEL_MODULES


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_every_kernel_has_a_compile_spec(module):
    mod = importlib.import_module(module)
    kernels = {name for name in vars(mod) if name.endswith("_kernel")}
    specced = {kernel.__name__ for kernel, _, _ in mod.COMPILE_SPECS}
    assert kernels and kernels <= specced, f"kernels without a COMPILE_SPECS entry: {kernels - specced}"


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_kernels_compile_for_sm75_and_sm80(module):
    result = compile_check(module)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert result.stdout.count("ok  ") == 2 * len(importlib.import_module(module).COMPILE_SPECS)


def test_compile_check_rejects_a_kernel_a_t4_cannot_build():
    result = compile_check("broken_kernels")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("FAIL broken_kernels.int8_dot_kernel") and "sm_75:" in line for line in lines)
    assert any(line.startswith("ok") and line.endswith("sm_80") for line in lines)  # an A100 builds it
