import os

# Triton reads this when a kernel module is imported: kernels must run through the CPU interpreter.
os.environ["TRITON_INTERPRET"] = "1"
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
