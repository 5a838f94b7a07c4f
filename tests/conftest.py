import os

from kernel_device import VARIABLE, configure

# Triton reads TRITON_INTERPRET when a kernel module is imported: kernels run through the CPU
# interpreter, or natively on a GPU with LEC19QUANT_TEST_DEVICE=cuda. A kernel test takes the
# `device` fixture below and compares the kernel with the torch reference on that device
# (tests/kernel_device.py shows how); on "cuda" only those tests run.
DEVICE = configure(os.environ)
# Tests never download: a model that is not on disk must fail at once, not after retries.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402 (after the environment that imports read)


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures that a test draws are closed after it, so that hundreds do not pile up."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


def pytest_configure(config):
    config.addinivalue_line("markers", "kernel: a kernel test, one that takes the `device` fixture")
    if DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(f"{VARIABLE}=cuda, but torch {torch.__version__} sees no CUDA GPU")
        # The torch references sum in float32, as on the CPU (no float16/bfloat16 or TF32 reductions).
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the kernel tests `kernel` (so `-m kernel` selects them); on "cuda" run only them."""
    kernel = [item for item in items if "device" in getattr(item, "fixturenames", ())]
    for item in kernel:
        item.add_marker(pytest.mark.kernel)
    if DEVICE == "cuda":
        chosen = set(map(id, kernel))
        config.hook.pytest_deselected(items=[item for item in items if id(item) not in chosen])
        items[:] = kernel


@pytest.fixture
def device():
    """The torch.device that kernel tests put their inputs on: cpu (Triton's interpreter) or cuda."""
    import torch

    return torch.device(DEVICE)
