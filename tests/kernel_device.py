"""Where the kernel tests run: the CPU through Triton's interpreter (the default), or a CUDA GPU.

    LEC19QUANT_TEST_DEVICE=cuda python -m pytest tests      # every kernel test, natively on the GPU

tests/conftest.py calls `configure(os.environ)` before anything imports a kernel: on "cpu" it sets
TRITON_INTERPRET=1, on "cuda" it removes it (so @triton.jit compiles for the GPU) and keeps only the
kernel tests. A kernel test is one that takes the `device` fixture (conftest marks it `kernel`):

    def test_my_kernel_equals_torch(device):
        x = torch.randn(5, 300).to(device)             # inputs on the device under test
        assert torch.equal(f(x, backend="triton"), f(x, backend="torch"))   # reference on the same device

Oracles that need the CPU (numpy, ggml, bitsandbytes) take `.cpu()` of the results. Where a GPU
legitimately rounds otherwise than the interpreter (fused multiply-adds, tensor cores that truncate
while they add), the test branches on `device.type == "cuda"`, says why, and bounds the difference.
"""
import ast
import sys
from pathlib import Path

import numpy as np

VARIABLE = "LEC19QUANT_TEST_DEVICE"
DEVICES = ("cpu", "cuda")


def configure(environ) -> str:
    """The device that `environ` (a mutable mapping such as os.environ) asks for, "cpu" when unset,
    with TRITON_INTERPRET set ("cpu") or removed ("cuda") in it. Any other value is a ValueError."""
    device = environ.get(VARIABLE, "") or "cpu"
    if device not in DEVICES:
        raise ValueError(f"{VARIABLE} must be 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        environ["TRITON_INTERPRET"] = "1"
    else:
        environ.pop("TRITON_INTERPRET", None)
    return device


def near_ties(scale: float) -> list[float]:
    """float32 values x, |x·scale| < 127, whose product x·scale rounds in float32 to a tie k + ½
    without being one. torch rounds the rounded product (to even); a kernel that fuses x·scale
    with the subtraction of floor(x·scale) (a multiply-add, the GPU's default) rounds the exact
    one, away from the tie: an adversarial input for any kernel that rounds x·s to integers."""
    s = np.float32(scale)
    found = []
    for k in range(-127, 126):
        base = np.float32((k + 0.5) / float(s))
        for x in (np.nextafter(base, np.float32(-np.inf)), base, np.nextafter(base, np.float32(np.inf))):
            if np.float32(x * s) == k + 0.5 and float(x) * float(s) != k + 0.5:  # float64: exact
                found.append(float(x))
    return found


def kernel_test_files(folder) -> list[str]:
    """The test_*.py files in `folder` that hold a kernel test (a test function with a `device`
    parameter), found without importing them: a GPU machine need not import the others."""
    def has_kernel_test(path: Path) -> bool:
        return any(isinstance(node, ast.FunctionDef) and node.name.startswith("test")
                   and any(arg.arg == "device" for arg in node.args.args)
                   for node in ast.walk(ast.parse(path.read_text(), str(path))))

    return [str(p) for p in sorted(Path(folder).glob("test_*.py")) if has_kernel_test(p)]


if __name__ == "__main__":  # python tests/kernel_device.py tests: the files, one per line
    print("\n".join(kernel_test_files(sys.argv[1])))
