"""llama.cpp's per-token quality statistics in one pass over a base and a quantized row.

Each program reads one row pair — base log-probabilities ℓᵇ and quantized logits z — in blocks
of BLOCK, keeping only scalars: the online log-sum-exp of z (running max m and s = Σ exp(z − m),
rescaled by exp(m_old − m_new) when the max grows, as flash attention does for softmax), the
running argmax of both rows, w = Σ pᵇ and a = Σ pᵇ·(ℓᵇ − z + m) over the tokens with ℓᵇ > −16
(a grows by w·(m_new − m_old) when m does). At the end LSE(z) = m + ln s and

    KLD = Σ pᵇ·(ℓᵇ − (z − LSE(z))) = a + w·ln s.

Matches `lec19quant.quality.token_stats`' torch path: top agreement and both p(correct) exactly
except for last-bit differences of exp, KLD within float32 summation error (the tests bound it).
"""
import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def token_stats_kernel(
    lb_ptr, z_ptr, target_ptr, kld_ptr, same_ptr, p_base_ptr, p_q_ptr, V, stride_b, stride_z,
    CUTOFF: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.full([], 0.0, tl.float32)
    a = tl.full([], 0.0, tl.float32)
    w = tl.full([], 0.0, tl.float32)
    top_z = tl.full([], float("-inf"), tl.float32)
    top_b = tl.full([], float("-inf"), tl.float32)
    arg_z = tl.full([], 0, tl.int32)
    arg_b = tl.full([], 0, tl.int32)
    for start in range(0, V, BLOCK):
        offs = start + cols
        inside = offs < V
        lb = tl.load(lb_ptr + row * stride_b + offs, mask=inside, other=float("-inf")).to(tl.float32)
        z = tl.load(z_ptr + row * stride_z + offs, mask=inside, other=float("-inf")).to(tl.float32)
        # running argmax, the first index among equal maxima
        block_z = tl.max(z, axis=0)
        first_z = tl.min(tl.where(inside & (z == block_z), offs, V), axis=0)
        arg_z = tl.where(block_z > top_z, first_z, arg_z)
        top_z = tl.maximum(top_z, block_z)
        block_b = tl.max(lb, axis=0)
        first_b = tl.min(tl.where(inside & (lb == block_b), offs, V), axis=0)
        arg_b = tl.where(block_b > top_b, first_b, arg_b)
        top_b = tl.maximum(top_b, block_b)
        # online log-sum-exp of z, and the KLD sums measured from the running max
        m_new = tl.maximum(m, block_z)
        s = s * tl.exp(m - m_new) + tl.sum(tl.where(inside, tl.exp(z - m_new), 0.0), axis=0)
        a = a + tl.where(w > 0, w * (m_new - m), 0.0)
        kept = inside & (lb > CUTOFF)
        p = tl.where(kept, tl.exp(lb), 0.0)
        a = a + tl.sum(tl.where(kept, p * (lb - z + m_new), 0.0), axis=0)
        w = w + tl.sum(p, axis=0)
        m = m_new
    log_s = tl.log(s)
    tl.store(kld_ptr + row, a + w * log_s)
    tl.store(same_ptr + row, (arg_z == arg_b).to(tl.int8))
    t = tl.load(target_ptr + row)
    tl.store(p_base_ptr + row, tl.exp(tl.load(lb_ptr + row * stride_b + t).to(tl.float32)))
    tl.store(p_q_ptr + row, tl.exp(tl.load(z_ptr + row * stride_z + t).to(tl.float32) - m - log_s))


def token_stats(base_log_probs: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, cutoff: float = -16.0):
    """Launch one program per row; returns float32 KLD, bool same-top, float32 p_base and p_q."""
    lb = base_log_probs if base_log_probs.stride(-1) == 1 else base_log_probs.contiguous()
    z = logits if logits.stride(-1) == 1 else logits.contiguous()
    n, vocab = z.shape
    out = [torch.empty(n, dtype=torch.float32, device=z.device) for _ in range(3)]
    same = torch.empty(n, dtype=torch.int8, device=z.device)
    if n:
        token_stats_kernel[(n,)](lb, z, target.contiguous(), out[0], same, out[1], out[2], vocab, lb.stride(0),
                                 z.stride(0), CUTOFF=cutoff, BLOCK=BLOCK)
    return out[0], same.bool(), out[1], out[2]


# What tests/compile_kernels.py compiles for sm_75 and sm_80: (kernel, signature, constexprs).
COMPILE_SPECS = [
    (
        token_stats_kernel,
        {"lb_ptr": f"*{dtype}", "z_ptr": f"*{dtype}", "target_ptr": "*i64", "kld_ptr": "*fp32", "same_ptr": "*i8",
         "p_base_ptr": "*fp32", "p_q_ptr": "*fp32", "V": "i32", "stride_b": "i32", "stride_z": "i32"},
        {"CUTOFF": -16.0, "BLOCK": BLOCK},
    )
    for dtype in ("fp32", "fp16", "bf16")
]
