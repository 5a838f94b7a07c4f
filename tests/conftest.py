import os

# Triton reads this when a kernel module is imported: kernels must run through the CPU interpreter.
os.environ["TRITON_INTERPRET"] = "1"
