"""The llama.cpp sources that every oracle in tests/oracles/ builds from, and the helpers to build them.

The llama-cpp-python sdist on PyPI bundles llama.cpp (vendor/llama.cpp). Each oracle builds the
targets it needs from it into its own directory of the lec19quant cache, once per machine, under a
file lock so that parallel test processes build it once:

    with locked(target):
        if not done:
            with configured(target, "prefix-", [extra cmake flags]) as (build, log):
                make_targets(build, log, [targets])
                ... copy what was built into target
"""
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.3.36"  # llama-cpp-python, which bundles llama.cpp
SDIST = f"llama-cpp-python=={VERSION}"
#: what a build never needs: test models (75 MB), docs and media, and the programs.
SKIP = ("models/", "docs/", "media/", "tools/", "examples/")


class NoToolchain(RuntimeError):
    """cmake or a C/C++ compiler is missing, so llama.cpp cannot be built here."""


def toolchain() -> None:
    """Raise NoToolchain, naming what is missing, unless cmake and C and C++ compilers exist."""
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        missing.append("a C compiler (cc/gcc/clang)")
    if not any(shutil.which(cxx) for cxx in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++/g++/clang++)")
    if missing:
        raise NoToolchain(f"building llama.cpp needs {' and '.join(missing)}")


def run(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    """Run `cmd`, appending its output to `log`; on failure raise with the log's last lines."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed (exit {result.returncode}); the log {log} ends:\n{tail}")


def sources(into: Path, log: Path, skip: tuple[str, ...] = SKIP) -> Path:
    """Download the sdist into `into` and extract vendor/llama.cpp without the `skip` folders;
    returns the llama.cpp source directory."""
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         SDIST, "-d", str(into)], log)
    tarball = next(into.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(tarball) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        skipped = tuple(prefix + d for d in skip)
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and not m.name.startswith(skipped)]
        tar.extractall(into / "src", members=members, filter="data")
    return into / "src" / prefix


def source_file(relative: str, into: Path) -> str:
    """The text of one file of the bundled llama.cpp (`relative` to vendor/llama.cpp), read from
    the sdist downloaded into `into`."""
    run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         SDIST, "-d", str(into)], into / "download.log")
    with tarfile.open(next(into.glob("llama_cpp_python-*.tar.gz"))) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        return tar.extractfile(prefix + relative).read().decode()


@contextlib.contextmanager
def locked(directory: Path):
    """An exclusive lock on `directory` (created if missing) for as long as the block runs."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def configured(target: Path, prefix: str, flags: list[str], skip: tuple[str, ...] = SKIP):
    """llama.cpp's sources configured (Release, portable, no OpenMP/curl, no tests, examples or
    server, plus `flags`) in a temporary build directory that lasts as long as the block; yields
    (build directory, log), the log being target/build.log. Raises NoToolchain first if needed."""
    toolchain()
    target.mkdir(parents=True, exist_ok=True)
    log = target / "build.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        source = sources(Path(tmp), log, skip)
        build = Path(tmp) / "build"
        run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF",
             "-DGGML_OPENMP=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_SERVER=OFF", *flags], log)
        yield build, log


def make_targets(build: Path, log: Path, targets: list[str]) -> None:
    """Build the CMake `targets` in `build` on every core."""
    run(["cmake", "--build", str(build), "--target", *targets, "-j", str(os.cpu_count() or 2)], log)
