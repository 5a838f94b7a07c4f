"""The assignment checks of the chapter "GGUF and llama.cpp"."""
from collections.abc import Callable

import torch

from .core import Passed, _describe, _run


def check_scale_min_k4(student: Callable) -> Passed:
    """student(q, j) must return (scale, min) of sub-block j (0..7) from the 12 bytes `q` (a
    list of ints) of a Q4_K super-block's scales, as ggml's get_scale_min_k4 unpacks them."""
    from ..gguf.blocks import unpack_scales_k4

    g = torch.Generator().manual_seed(4)
    blocks = torch.cat([torch.randint(0, 256, (40, 12), generator=g, dtype=torch.uint8),
                        torch.full((1, 12), 255, dtype=torch.uint8), torch.zeros(1, 12, dtype=torch.uint8),
                        torch.tensor([[0xC0] * 4 + [0x3F] * 4 + [0xA5] * 4], dtype=torch.uint8)])
    scales, mins = unpack_scales_k4(blocks)
    cases = [(q, j) for q in blocks.tolist() for j in range(8)]
    wants = [(int(scales[i // 8, i % 8]), int(mins[i // 8, i % 8])) for i in range(len(cases))]
    return _run("check_scale_min_k4", lambda case: tuple(int(v) for v in student(list(case[0]), case[1])), cases,
                wants, lambda got, want: got == want, lambda case: f"q = {case[0]}, j = {case[1]}", "sub-blocks")


def q8_0_cases() -> list[torch.Tensor]:
    """Blocks of 32 that test a Q8_0 quantizer: normal and heavy-tailed weights, exact halves
    (ties), an outlier, a negative maximum, all zeros."""
    g = torch.Generator().manual_seed(8)
    ties = torch.arange(-15.5, 16.5, 1.0)
    ties[0] = -127.0  # d = 1: every other value is a tie
    outlier = torch.randn(32, generator=g)
    outlier[9] = -80.0
    return [torch.randn(32, generator=g), torch.randn(32, generator=g) * torch.exp(2 * torch.randn(32, generator=g)),
            ties, outlier, torch.zeros(32)]


def check_q8_0(student: Callable) -> Passed:
    """student(x) must return (d, codes) of llama.cpp's Q8_0 for a block x of 32 float32
    weights: d = max|x| / 127 and codes = roundf(x / d) (halves away from zero; 0 when d = 0)."""
    from ..gguf import explain_block, quantize

    cases = q8_0_cases()
    wants = []
    for x in cases:
        block = explain_block(quantize(x, "Q8_0")[0], "Q8_0")
        wants.append((block["d"].item(), block["codes"].tolist()))

    def same(got, want):
        d, codes = got
        return float(torch.tensor(float(d)).half()) == want[0] and [int(c) for c in codes] == want[1]

    return _run("check_q8_0", lambda x: student(x.clone()), cases, wants, same, _describe, "blocks")


def check_use_more_bits(student: Callable) -> Passed:
    """student(i, n) must say whether layer i of n gets more bits in llama.cpp's Q4_K_M: the
    first and last eighth of the layers and every third layer between (integer division)."""
    from ..gguf.recipes import use_more_bits

    cases = [(i, n) for n in range(1, 81) for i in range(n)]
    return _run("check_use_more_bits", lambda case: bool(student(*case)), cases,
                (use_more_bits(i, n) for i, n in cases), lambda got, want: got == want,
                lambda case: f"layer {case[0]} of {case[1]}", "layers")
