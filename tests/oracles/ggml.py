"""llama.cpp's own ggml, built from source once per machine and called through ctypes.

The llama-cpp-python sdist on PyPI bundles llama.cpp. Its `ggml-base` CMake target (about 30 s
on 2 cores) holds the reference quantizers (`ggml_quantize_chunk`, which runs
quantize_row_*_ref without an importance matrix, as `llama-quantize` does) and each type's
`to_float`. The library is built into the lec19quant cache directory
(~/.cache/lec19quant/ggml-llama-cpp-python-<version>/), never into the repository, under a file
lock so that parallel test processes build it once. It is compiled with -ffp-contract=off: the
x86-64 builds that llama.cpp ships use no fused multiply-add, and this keeps an arm64 machine
from contracting a·b + c into one rounding.

    ggml = load()                      # builds on first use: pip download, cmake, make
    raw = ggml.quantize(x, "Q4_K")     # uint8 (rows, row_bytes)
    y = ggml.to_float(raw, "Q4_K", n)  # float32 (n,)
"""
import ctypes
import os
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from lec19quant.models import cache_dir
from oracles.llama_cpp_source import VERSION, NoToolchain, configured, locked, make_targets

LIBRARY = "libggml-base.so"


def build_dir() -> Path:
    return cache_dir() / f"ggml-llama-cpp-python-{VERSION}"


def build(target: Path) -> Path:
    """Download the sdist, configure llama.cpp and build ggml-base; returns the library path."""
    flags = ["-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TOOLS=OFF", "-DCMAKE_C_FLAGS=-ffp-contract=off",
             "-DCMAKE_CXX_FLAGS=-ffp-contract=off"]
    with configured(target, "ggml-build-", flags) as (build, log):
        make_targets(build, log, ["ggml-base"])
        built = next(p for p in build.rglob("libggml-base.so*") if p.is_file() and not p.is_symlink())
        partial = target / (LIBRARY + ".partial")
        shutil.copy(built, partial)
        os.replace(partial, target / LIBRARY)  # atomic: a reader sees no library or a whole one
    return target / LIBRARY


class _Traits(ctypes.Structure):  # struct ggml_type_traits (ggml.h)
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


class GGML:
    """ggml's reference quantizers and dequantizers, by GGUF type name ("Q4_K")."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]

    def traits(self, qtype: str) -> _Traits:
        return self.lib.ggml_get_type_traits(gguf.GGMLQuantizationType[qtype].value).contents

    def row_bytes(self, qtype: str, n: int) -> int:
        t = self.traits(qtype)
        return n // t.blck_size * t.type_size

    def quantize(self, x: np.ndarray, qtype: str, imatrix: np.ndarray | None = None) -> np.ndarray:
        """ggml_quantize_chunk(type, rows of x, …, imatrix): uint8 (rows, row_bytes); `imatrix`
        is one importance per column (NULL when None)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = x.reshape(-1, x.shape[-1])
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            assert imatrix.shape == (rows.shape[1],)
        out = np.zeros((rows.shape[0], self.row_bytes(qtype, rows.shape[1])), dtype=np.uint8)
        written = self.lib.ggml_quantize_chunk(gguf.GGMLQuantizationType[qtype].value, rows.ctypes.data,
                                               out.ctypes.data, 0, rows.shape[0], rows.shape[1],
                                               None if imatrix is None else imatrix.ctypes.data)
        assert written == out.nbytes
        return out

    def to_float(self, raw: np.ndarray, qtype: str, n: int) -> np.ndarray:
        """The type's to_float on `raw`: float32 (n,)."""
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        assert raw.nbytes == self.row_bytes(qtype, n)
        out = np.empty(n, dtype=np.float32)
        _TO_FLOAT(self.traits(qtype).to_float)(raw.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n)
        return out


def load() -> GGML:
    """ggml from the cache directory, built first if it is not there yet (raises NoToolchain
    when it cannot be built here)."""
    target = build_dir()
    with locked(target):
        path = target / LIBRARY
        if not path.is_file():
            build(target)
    return GGML(path)


@pytest.fixture(scope="session")
def ggml() -> GGML:
    """The oracle for a test session; skipped, saying why, only where no toolchain exists."""
    try:
        return load()
    except NoToolchain as e:
        pytest.skip(f"llama.cpp's ggml cannot be built on this machine: {e}")
