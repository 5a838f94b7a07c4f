import os

# Triton reads this when a kernel module is imported: kernels must run through the CPU interpreter.
os.environ["TRITON_INTERPRET"] = "1"
# Tests never download: a model that is not on disk must fail at once, not after retries.
os.environ["HF_HUB_OFFLINE"] = "1"
