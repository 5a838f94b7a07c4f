"""A kernel that the interpreter runs but a T4 cannot build: an int8 tl.dot (triton issue #9349).

tests/test_kernels_compile.py checks that compile_kernels.py rejects it for sm_75, so the
compile check is known to catch what the interpreter lets through.
"""
import triton
import triton.language as tl


@triton.jit
def int8_dot_kernel(a_ptr, b_ptr, c_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    a = tl.load(a_ptr + i[:, None] * N + i[None, :])
    b = tl.load(b_ptr + i[:, None] * N + i[None, :])
    tl.store(c_ptr + i[:, None] * N + i[None, :], tl.dot(a, b, out_dtype=tl.int32))


COMPILE_SPECS = [(int8_dot_kernel, {"a_ptr": "*i8", "b_ptr": "*i8", "c_ptr": "*i32"}, {"N": 32})]
