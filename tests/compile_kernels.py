"""Compile every Triton kernel of a module for CUDA targets without a GPU.

    python tests/compile_kernels.py lec19quant.kernels.absmax [--arch 75 80]

The module lists its kernels in COMPILE_SPECS as (kernel, signature, constexprs). Exits 1 and
names the kernel and target when one fails. Run without TRITON_INTERPRET (the interpreter replaces
kernels by Python functions that cannot be compiled).
"""
import argparse
import importlib
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


def compile_module(module_name: str, archs: list[int]) -> list[str]:
    """Compile each spec of `module_name` for each sm_<arch>; returns the failures."""
    module = importlib.import_module(module_name)
    failures = []
    for kernel, signature, constexprs in module.COMPILE_SPECS:
        full_signature = {**signature, **{name: "constexpr" for name in constexprs}}
        for arch in archs:
            label = f"{module_name}.{kernel.__name__} {signature} {constexprs} sm_{arch}"
            try:
                source = ASTSource(fn=kernel, signature=full_signature, constexprs=constexprs)
                compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32))
                assert compiled.asm["cubin"], "empty cubin"
                print("ok  ", label)
            except Exception as e:  # the compiler raises many kinds; report them all
                failures.append(f"{label}: {type(e).__name__}: {str(e).strip().splitlines()[-1]}")
                print("FAIL", failures[-1])
    return failures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module")
    parser.add_argument("--arch", type=int, nargs="+", default=[75, 80])
    args = parser.parse_args()
    sys.exit(1 if compile_module(args.module, args.arch) else 0)
