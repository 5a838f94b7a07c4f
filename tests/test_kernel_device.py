"""The switch between kernel tests under Triton's interpreter and on a CUDA GPU (kernel_device.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_device import VARIABLE, configure
from lec19quant.kernels import interpreting


def test_unset_means_the_interpreter_on_cpu():
    for environ in ({}, {VARIABLE: ""}, {VARIABLE: "cpu", "TRITON_INTERPRET": "0"}):
        assert configure(environ) == "cpu" and environ["TRITON_INTERPRET"] == "1"


def test_cuda_turns_the_interpreter_off():
    environ = {VARIABLE: "cuda", "TRITON_INTERPRET": "1", "OTHER": "kept"}
    assert configure(environ) == "cuda"
    assert environ == {VARIABLE: "cuda", "OTHER": "kept"}


@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:0", "1"])
def test_other_values_are_refused_by_name(value):
    with pytest.raises(ValueError, match=f"{VARIABLE} must be 'cpu' or 'cuda', got '{value}'"):
        configure({VARIABLE: value})


def test_this_session_runs_kernels_where_it_was_asked(device):
    """A kernel test itself: the mode conftest chose for this run, on either device."""
    assert device.type == (os.environ.get(VARIABLE) or "cpu")
    assert interpreting() == (device.type == "cpu")


def pytest_run(environ: dict, *args: str) -> subprocess.CompletedProcess:
    tests = Path(__file__).parent
    env = {k: v for k, v in os.environ.items() if k not in (VARIABLE, "TRITON_INTERPRET")} | environ
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tests.parent, env=env, capture_output=True, text=True, timeout=300)


def test_conftest_refuses_cuda_without_a_gpu_and_unknown_devices():
    hidden = pytest_run({VARIABLE: "cuda", "CUDA_VISIBLE_DEVICES": ""}, "--collect-only", __file__)
    assert hidden.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"{VARIABLE}=cuda, but torch" in hidden.stderr and "sees no CUDA GPU" in hidden.stderr
    wrong = pytest_run({VARIABLE: "tpu"}, "--collect-only", __file__)
    assert wrong.returncode != 0 and f"{VARIABLE} must be 'cpu' or 'cuda', got 'tpu'" in wrong.stderr


def test_kernel_marker_selects_the_tests_that_take_the_device():
    chosen = pytest_run({}, "--collect-only", "-m", "kernel", __file__)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    collected = [line.split("::")[1] for line in chosen.stdout.splitlines() if "::" in line]
    assert collected == ["test_this_session_runs_kernels_where_it_was_asked"]
