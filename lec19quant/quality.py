"""What quantization costs, measured as llama.cpp measures it: KL divergence to the base model,
top-token agreement and the change in p(correct), token by token (llama-perplexity's
--kl-divergence-base / --kl-divergence, tools/perplexity/perplexity.cpp).

The protocol for a text:

- Its tokens are cut into chunks of n_ctx (512); a remainder shorter than n_ctx is dropped.
- Each chunk is evaluated on its own (a fresh context). Where the model's vocabulary says
  add_bos, the chunk's first token is replaced by BOS for the evaluation (SmolLM2's says no).
- Only the second half is scored: the logits at positions n_ctx/2 … n_ctx−2 predict tokens
  n_ctx/2+1 … n_ctx−1, so every scored token has at least n_ctx/2 tokens of context
  (255 scored tokens per chunk of 512).
- The base model's log-probabilities at those positions are computed once (`base_logits`) and
  stored as llama.cpp stores them (16-bit codes over the 16 nats below the top token, `Base`;
  `Base.save` writes llama.cpp's file), so that comparing ten models costs one base pass.

Per scored token t, with base log-probabilities ℓᵇ and the quantized model's ℓ^q = z − LSE(z):

    KLD_t       = Σ_{i: ℓᵇ_i > −16} exp(ℓᵇ_i)·(ℓᵇ_i − ℓ^q_i)     (KL(base ‖ q); p < 1.1e-7 left out)
    same_top_t  = [argmax ℓᵇ = argmax z]                          (first index on ties)
    p_base_t    = exp(ℓᵇ_{x_t}),  p_q_t = exp(ℓ^q_{x_t}),  Δp_t = p_q_t − p_base_t

`summarize` gives llama.cpp's summary of them. `llama_cpp_arithmetic` makes a model compute as
llama.cpp's CPU backend does (8-bit matmul inputs, F16 attention), so that the package's numbers
for a GGUF file can be set beside llama.cpp's.
"""
import contextlib
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

N_CTX = 512
CUTOFF = -16.0  # base log-probabilities at or below this are left out of the KLD sum (llama.cpp)
MAGIC = b"_logits_"  # the first bytes of llama.cpp's --kl-divergence-base file


# ---- the protocol: chunks and scored tokens ----------------------------------------------------

def tokenize(tokenizer, text: str) -> torch.Tensor:
    """The text's token ids as llama.cpp's tokenizer gives them (special tokens added as the
    vocabulary says: BOS first when the tokenizer adds one)."""
    return torch.as_tensor(tokenizer(text)["input_ids"], dtype=torch.long)


def chunks(tokens: torch.Tensor, n_ctx: int = N_CTX, n_chunks: int | None = None) -> torch.Tensor:
    """The first `n_chunks` (default: all) whole chunks of `n_ctx` tokens: (n_chunks, n_ctx)."""
    if not isinstance(n_ctx, int) or n_ctx < 4:
        raise ValueError(f"n_ctx must be an int ≥ 4, got {n_ctx!r}")
    tokens = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    available = len(tokens) // n_ctx
    if n_chunks is None:
        n_chunks = available
    if not isinstance(n_chunks, int) or n_chunks < 1:
        raise ValueError(f"n_chunks must be a positive int, got {n_chunks!r}")
    if available < n_chunks:
        raise ValueError(f"{len(tokens)} tokens make {available} chunk(s) of {n_ctx}, not {n_chunks}")
    return tokens[:n_chunks * n_ctx].reshape(n_chunks, n_ctx)


def scored(n_ctx: int = N_CTX) -> slice:
    """The positions whose logits are scored in a chunk: n_ctx/2 … n_ctx−2 (each predicts the
    token after it)."""
    return slice(n_ctx // 2, n_ctx - 1)


def targets(chunked: torch.Tensor) -> torch.Tensor:
    """The scored tokens of every chunk, in order: chunk[:, n_ctx/2 + 1:] flattened."""
    return chunked[:, chunked.shape[1] // 2 + 1:].reshape(-1)


def model_inputs(chunked: torch.Tensor, bos: int | None) -> torch.Tensor:
    """The chunks as the model sees them: the first token replaced by `bos` unless it is None."""
    inputs = chunked.clone()
    if bos is not None:
        inputs[:, 0] = bos
    return inputs


def add_bos(tokenizer) -> int | None:
    """The BOS id that llama.cpp puts first in each chunk for this tokenizer, or None when its
    vocabulary does not add one (as write_gguf records it: tokenizer.ggml.add_bos_token)."""
    return tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None


# ---- llama.cpp's storage of the base log-probabilities -----------------------------------------

def encode_log_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's 16-bit code of log-softmax rows: (header float32 (rows, 2), codes uint16
    (rows, V)). With M = max z, m = max(min z, M − 16) and L = log Σ exp(z − M):

        scale = (M − m)/65535,  min_log_prob = m − M − L,  code_i = round((z_i − m)/scale) if z_i > m else 0

    so ℓ_i ≈ scale·code_i + min_log_prob within scale/2 for the tokens within 16 nats of the top."""
    z = logits.float()
    top = z.max(-1, keepdim=True).values
    low = torch.maximum(z.min(-1, keepdim=True).values, top - 16)
    lse = torch.exp(z - top).double().sum(-1, keepdim=True).log().float()
    scale = (top - low) / 65535
    inv = torch.where(scale > 0, _divide(1, scale), torch.zeros_like(scale))
    codes = torch.where(z > low, torch.round(inv * (z - low)), torch.zeros_like(z))
    header = torch.cat([scale, low - top - lse], dim=-1)
    return header, codes.to(torch.int32).to(torch.uint16)


def decode_log_probs(header: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """ℓ_i = scale·code_i + min_log_prob (float32), as llama.cpp reads its base file."""
    return header[:, :1] * codes.to(torch.int32).float() + header[:, 1:]


@dataclass
class Base:
    """The base model's side of a comparison: the chunks (original tokens, before any BOS) and
    the log-probabilities at the scored positions in llama.cpp's 16-bit code."""

    tokens: torch.Tensor  # (n_chunks, n_ctx) int64
    header: torch.Tensor  # (n_scored, 2) float32: scale, min_log_prob
    codes: torch.Tensor  # (n_scored, V) uint16
    bos: int | None = None

    @property
    def n_ctx(self) -> int:
        return self.tokens.shape[1]

    @property
    def targets(self) -> torch.Tensor:
        return targets(self.tokens)

    def log_probs(self, rows: slice = slice(None)) -> torch.Tensor:
        return decode_log_probs(self.header[rows], self.codes[rows])

    def save(self, path) -> Path:
        """Write llama.cpp's base file ("_logits_", n_ctx, n_vocab, n_chunk, the tokens, then per
        scored token the two floats of the header and the V codes, padded to an even count):
        `llama-perplexity --kl-divergence-base path --kl-divergence` reads it."""
        path = Path(path)
        n_chunks, n_ctx = self.tokens.shape
        n_vocab = self.codes.shape[1]
        rows = np.zeros((self.codes.shape[0], 2 * ((n_vocab + 1) // 2) + 4), dtype=np.uint16)
        rows[:, :4] = self.header.numpy().astype(np.float32).view(np.uint16)
        rows[:, 4:4 + n_vocab] = self.codes.numpy()
        with path.open("wb") as f:
            f.write(MAGIC + struct.pack("<Iii", n_ctx, n_vocab, n_chunks))
            f.write(self.tokens.numpy().astype(np.int32).tobytes())
            f.write(rows.tobytes())
        return path

    @classmethod
    def load(cls, path, bos: int | None = None) -> "Base":
        """Read a base file written by `save` or by llama-perplexity --kl-divergence-base."""
        data = Path(path).read_bytes()
        if data[:8] != MAGIC:
            raise ValueError(f"{path} is not a llama.cpp log-probability file: it starts with {data[:8]!r}")
        n_ctx, n_vocab, n_chunks = struct.unpack("<Iii", data[8:20])
        n_tokens = n_ctx * n_chunks
        tokens = np.frombuffer(data, dtype=np.int32, count=n_tokens, offset=20)
        nv = 2 * ((n_vocab + 1) // 2) + 4
        n_scored = n_chunks * (n_ctx - 1 - n_ctx // 2)
        expected = 20 + 4 * n_tokens + 2 * nv * n_scored
        if len(data) != expected:
            raise ValueError(f"{path} has {len(data):,} bytes; its header ({n_chunks} chunks of {n_ctx}, "
                             f"vocabulary {n_vocab}) needs {expected:,}")
        rows = np.frombuffer(data, dtype=np.uint16, offset=20 + 4 * n_tokens).reshape(n_scored, nv)
        header = torch.from_numpy(rows[:, :4].copy().view(np.float32))
        codes = torch.from_numpy(rows[:, 4:4 + n_vocab].copy())
        return cls(torch.from_numpy(tokens.astype(np.int64)).reshape(n_chunks, n_ctx), header, codes, bos)


# ---- per-token statistics -----------------------------------------------------------------------

@dataclass
class TokenStats:
    """Per scored token: KLD, whether the top tokens agree, p(correct) in the base and the
    quantized model (float64/bool tensors of equal length)."""

    kld: torch.Tensor
    same_top: torch.Tensor
    p_base: torch.Tensor
    p_q: torch.Tensor

    @property
    def nll_q(self) -> torch.Tensor:
        """−ln p(correct token) under the quantized model, per scored token."""
        return -torch.log(self.p_q)

    @property
    def nll_base(self) -> torch.Tensor:
        """−ln p(correct token) under the base model, per scored token."""
        return -torch.log(self.p_base)

    @staticmethod
    def cat(parts: list["TokenStats"]) -> "TokenStats":
        return TokenStats(*(torch.cat([getattr(p, f) for p in parts]) for f in ("kld", "same_top", "p_base", "p_q")))


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """ℓ = z − LSE(z) in float32: the base log-probabilities without llama.cpp's 16-bit code."""
    z = logits.float()
    return z - torch.logsumexp(z, dim=-1, keepdim=True)


def _check_rows(base_log_probs: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
    if base_log_probs.ndim != 2 or base_log_probs.shape != logits.shape:
        raise ValueError(f"base log-probabilities {tuple(base_log_probs.shape)} and logits {tuple(logits.shape)} "
                         "must be two (tokens, vocabulary) matrices of the same shape")
    if target.shape != (logits.shape[0],):
        raise ValueError(f"targets {tuple(target.shape)} must hold one token id per row ({logits.shape[0]})")
    if logits.shape[1] == 0:
        raise ValueError("the vocabulary is empty")
    if len(target) and (target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"target ids must lie in [0, {logits.shape[1]})")
    if torch.isnan(logits).any() or torch.isnan(base_log_probs).any():
        raise ValueError("the logits contain NaN")


def token_stats(base_log_probs: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                backend: str = "auto") -> TokenStats:
    """KLD, top agreement and both p(correct) for each row (module docstring), from the base
    log-probabilities ℓᵇ (tokens, V), the quantized model's logits z (tokens, V) and the
    correct tokens (tokens,). backend "triton" reads each pair of rows once (kernels/quality.py)."""
    from .kernels import use_triton

    target = torch.as_tensor(target, dtype=torch.long, device=logits.device)
    _check_rows(base_log_probs, logits, target)
    if use_triton(backend, base_log_probs, logits):
        from .kernels.quality import token_stats as triton_stats

        kld, same, p_base, p_q = triton_stats(base_log_probs, logits, target)
        return TokenStats(kld.double(), same, p_base.double(), p_q.double())
    lb, lq = base_log_probs.float(), log_probs(logits)
    terms = torch.where(lb > CUTOFF, torch.exp(lb) * (lb - lq), torch.zeros_like(lb))
    rows = torch.arange(len(target), device=logits.device)
    return TokenStats(terms.sum(-1, dtype=torch.float64), lb.argmax(-1) == logits.argmax(-1),
                      torch.exp(lb[rows, target]).double(), torch.exp(lq[rows, target]).double())


def online_logsumexp(z: torch.Tensor, block: int) -> list[tuple[int, float, float]]:
    """LSE(z) of a 1-D row read `block` values at a time, as the Triton kernel reads it: a running
    max m and s = Σ exp(z_i − m) over the values read so far; when a block raises the max to m',
    s becomes s·exp(m − m') + Σ_block exp(z_i − m'). Returns (values read, m, s) after each block;
    LSE(z) = m + ln s at the end, and no exp ever overflows."""
    if z.ndim != 1 or len(z) == 0:
        raise ValueError(f"z must be a non-empty 1-D row, got shape {tuple(z.shape)}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    m, s, trace = float("-inf"), 0.0, []
    for start in range(0, len(z), block):
        part = z[start:start + block].double()
        m_new = max(m, part.max().item())
        s = s * math.exp(m - m_new) + torch.exp(part - m_new).sum().item()
        m = m_new
        trace.append((start + len(part), m, s))
    return trace


# ---- llama.cpp's summary ------------------------------------------------------------------------

def mean_and_error(x: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error: x̄ = Σx/n, σ = sqrt((Σx²/n − x̄²)/(n − 1)) (0 when n ≤ 10
    or the variance is not positive), as llama.cpp computes them."""
    x = x.double()
    n = len(x)
    if n < 1:
        return 0.0, 0.0
    mean = x.sum().item() / n
    var = (x * x).sum().item() / n - mean * mean
    return mean, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0


def percentile(sorted_values: torch.Tensor, fraction: float) -> float:
    """Linear interpolation at position f·(n − 1) of the sorted values (llama.cpp's percentile)."""
    n = len(sorted_values)
    p = fraction * (n - 1)
    i = int(p)
    return ((1 - (p - i)) * sorted_values[i] + (p - i) * sorted_values[min(i + 1, n - 1)]).item()


def summarize(stats: TokenStats) -> dict[str, float]:
    """llama.cpp's summary of the per-token statistics (probabilities as fractions, not %):

    - ppl_q, ppl_base = exp(mean NLL), each ± PPL·σ(NLL), NLL_t = −ln p_t
    - ln_ppl_ratio = mean(NLL_q) − mean(NLL_base) ± sqrt(σ_q² + σ_b² − 2·cov), where
      cov = (Σ NLL_q·NLL_b/n − mean_q·mean_b)/(n − 1); ppl_ratio = exp(ln_ppl_ratio)
    - mean_kld ± its standard error; kld_90/95/99/99.9 percentiles, median_kld, max_kld
    - mean_dp ± error, dp percentiles (1, 5, 95, 99), median_dp, min_dp and max_dp of Δp = p_q − p_base
    - rms_dp = sqrt(mean Δp²) ± σ(Δp²)/(2·rms_dp)
    - same_top_p = n_same/n ± sqrt(f(1 − f)/(n − 1))
    """
    n = len(stats.kld)
    if n < 2:
        raise ValueError(f"a summary needs at least 2 scored tokens, got {n}")
    nll_q, nll_b = stats.nll_q, stats.nll_base
    (mq, eq), (mb, eb) = mean_and_error(nll_q), mean_and_error(nll_b)
    cov = ((nll_q * nll_b).sum().item() / n - mq * mb) / (n - 1) if n >= 10 else 0.0
    ln_ratio_err = math.sqrt(max(eq * eq + eb * eb - 2 * cov, 0.0))
    kld, kld_err = mean_and_error(stats.kld)
    k = torch.sort(stats.kld.double()).values
    dp = (stats.p_q - stats.p_base).double()
    d = torch.sort(dp).values
    mean_dp, mean_dp_err = mean_and_error(dp)
    mse, mse_err = mean_and_error(dp * dp)
    rms = math.sqrt(mse)
    same = stats.same_top.double().mean().item()
    out = {
        "tokens": n,
        "ppl_q": math.exp(mq), "ppl_q_err": math.exp(mq) * eq,
        "ppl_base": math.exp(mb), "ppl_base_err": math.exp(mb) * eb,
        "ln_ppl_ratio": mq - mb, "ln_ppl_ratio_err": ln_ratio_err,
        "ppl_ratio": math.exp(mq - mb), "ppl_ratio_err": math.exp(mq - mb) * ln_ratio_err,
        "mean_kld": kld, "mean_kld_err": kld_err,
        "max_kld": k[-1].item(), "min_kld": k[0].item(), "median_kld": percentile(k, 0.5),
        "mean_dp": mean_dp, "mean_dp_err": mean_dp_err,
        "max_dp": d[-1].item(), "min_dp": d[0].item(), "median_dp": percentile(d, 0.5),
        "rms_dp": rms, "rms_dp_err": 0.5 / rms * mse_err if rms > 0 else 0.0,
        "same_top_p": same, "same_top_p_err": math.sqrt(same * (1 - same) / (n - 1)),
    }
    for f in (90, 95, 99, 99.9):
        out[f"kld_{f:g}"] = percentile(k, f / 100)
    for f in (1, 5, 95, 99):
        out[f"dp_{f:g}"] = percentile(d, f / 100)
    return out


# ---- evaluating models --------------------------------------------------------------------------

def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def scored_logits(model, chunked: torch.Tensor, bos: int | None = None, batch_size: int = 1):
    """Yield the logits (float32, (n_ctx/2 − 1, V)) at the scored positions of each chunk,
    every chunk evaluated on its own."""
    inputs = model_inputs(chunked, bos).to(_device(model))
    keep = chunked.shape[1] - chunked.shape[1] // 2
    for i in range(0, len(inputs), batch_size):
        logits = model(inputs[i:i + batch_size], logits_to_keep=keep).logits[:, :-1].float()
        yield from logits


def base_logits(model, tokens: torch.Tensor, n_ctx: int = N_CTX, n_chunks: int | None = None,
                bos: int | None = None, progress: bool = False) -> Base:
    """The base pass (llama-perplexity --kl-divergence-base): the base model's log-probabilities
    at the scored positions of each chunk of `tokens`, in llama.cpp's 16-bit code."""
    chunked = chunks(tokens, n_ctx, n_chunks)
    headers, codes = [], []
    for logits in tqdm(scored_logits(model, chunked, bos), total=len(chunked), desc="base", disable=not progress):
        h, c = encode_log_probs(logits.cpu())
        headers.append(h)
        codes.append(c)
    return Base(chunked, torch.cat(headers), torch.cat(codes), bos)


@dataclass
class Report:
    """A comparison with the base: per-token statistics and llama.cpp's summary of them."""

    stats: TokenStats
    summary: dict = field(init=False)

    def __post_init__(self):
        self.summary = summarize(self.stats)

    def __getitem__(self, key: str) -> float:
        return self.summary[key]

    def format(self, key: str, spec: str = ".4f") -> str:
        """A statistic with its standard error as text, "mean ± error", both formatted by `spec`
        (e.g. format("mean_kld", ".4f"), format("same_top_p", ".1%"))."""
        if f"{key}_err" not in self.summary:
            with_error = sorted(k[:-4] for k in self.summary if k.endswith("_err"))
            raise KeyError(f"{key!r} has no standard error in the summary; those that do: {with_error}")
        return f"{self[key]:{spec}} ± {self[key + '_err']:{spec}}"


def evaluate(base: Base, model, backend: str = "auto", progress: bool = False, batch_size: int = 1) -> Report:
    """The quantized pass (llama-perplexity --kl-divergence): `model` on the base's chunks,
    `batch_size` chunks per call (each still on its own), compared token by token with the stored
    base log-probabilities."""
    per_chunk = base.n_ctx - 1 - base.n_ctx // 2
    parts = []
    for i, logits in enumerate(tqdm(scored_logits(model, base.tokens, base.bos, batch_size), total=len(base.tokens),
                                    desc="compare", disable=not progress)):
        rows = slice(i * per_chunk, (i + 1) * per_chunk)
        lb = base.log_probs(rows).to(logits.device)
        parts.append(token_stats(lb, logits, base.targets[rows].to(logits.device), backend=backend))
    return Report(TokenStats.cat(parts))


def compare(base_model, quantized_model, tokenizer, text: str, n_ctx: int = N_CTX, n_chunks: int | None = None,
            backend: str = "auto") -> Report:
    """Both passes at once: `quantized_model` against `base_model` on `text` (llama.cpp's
    protocol, BOS as the tokenizer's vocabulary says). To compare several models with one base
    pass, call `base_logits` once and `evaluate` for each."""
    base = base_logits(base_model, tokenize(tokenizer, text), n_ctx, n_chunks, add_bos(tokenizer))
    return evaluate(base, quantized_model, backend=backend)


# ---- llama.cpp's CPU arithmetic -----------------------------------------------------------------

#: the rounding ggml's CPU backend applies to a matmul's input for each weight format
#: (its vec_dot_type): 8-bit blocks of 32 (Q8_0; Q8_1 rounds alike) or of 256 (Q8_K), F16, BF16.
ACTIVATION_ROUNDING = {
    "F32": None, "F16": "F16", "BF16": "BF16",
    "Q4_0": "Q8_0", "Q4_1": "Q8_0", "Q5_0": "Q8_0", "Q5_1": "Q8_0", "Q8_0": "Q8_0", "MXFP4": "Q8_0",
    "Q2_K": "Q8_K", "Q3_K": "Q8_K", "Q4_K": "Q8_K", "Q5_K": "Q8_K", "Q6_K": "Q8_K",
    "IQ4_NL": "Q8_0", "IQ4_XS": "Q8_K",
}


def _divide(c: float, t: torch.Tensor) -> torch.Tensor:
    """c / t correctly rounded (`c / t` in torch multiplies by t's reciprocal: two roundings)."""
    return torch.div(torch.full_like(t, c), t)


def _blocks_of(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] % size:
        raise ValueError(f"rows of {x.shape[-1]} values are not a whole number of blocks of {size}")
    return x.float().reshape(*x.shape[:-1], -1, size)


def round_q8_0(x: torch.Tensor) -> torch.Tensor:
    """x through ggml's Q8_0 (blocks of 32 along the last axis): d = max|x|/127,
    q = round_half_away(x·(1/d)), x̂ = fp16(d)·q."""
    b = _blocks_of(x, 32)
    d = b.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d > 0, _divide(1, d), torch.zeros_like(d))
    y = b * inv
    t = torch.trunc(y)
    q = torch.where((y - t).abs() >= 0.5, t + torch.sign(y), t)  # roundf: halves away from zero
    return (d.half().float() * q).reshape(x.shape)


def round_q8_k(x: torch.Tensor) -> torch.Tensor:
    """x through ggml's Q8_K (blocks of 256): with M the value of largest |x| (the first),
    s = −127/M, q = min(127, round_half_even(s·x)), x̂ = (1/s)·q (float32 scale)."""
    b = _blocks_of(x, 256)
    first = b.abs().argmax(-1, keepdim=True)
    top = b.gather(-1, first)
    s = torch.where(top != 0, _divide(-127, top), torch.zeros_like(top))
    q = torch.clamp(torch.round(s * b), max=127)
    return torch.where(top != 0, _divide(1, s) * q, torch.zeros_like(b)).reshape(x.shape)


def round_activations(x: torch.Tensor, rounding: str | None) -> torch.Tensor:
    """x as ggml's CPU backend feeds it to a matmul with a weight of that ACTIVATION_ROUNDING."""
    if rounding is None:
        return x
    if rounding == "F16":
        return x.half().to(x.dtype)
    if rounding == "BF16":
        return x.bfloat16().to(x.dtype)
    if rounding == "Q8_0":
        return round_q8_0(x).to(x.dtype)
    if rounding == "Q8_K":
        return round_q8_k(x).to(x.dtype)
    raise ValueError(f"unknown activation rounding {rounding!r}; known: F16, BF16, Q8_0, Q8_K")


def _f16_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Causal attention with Q, K and V rounded to F16, as llama.cpp's CPU backend computes it
    from its F16 KV cache (Q is converted to K's type for the dot products)."""
    q, k, v = (t.half().float() for t in (query, key, value))
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scaling
    n_q, n_k = scores.shape[-2:]
    future = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).triu(n_k - n_q + 1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return (weights @ v).to(query.dtype).transpose(1, 2).contiguous(), None


_F16_ATTENTION = "lec19quant_llama_cpp_f16"


def _register_attention() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(_F16_ATTENTION, _f16_attention)
    AttentionMaskInterface.register(_F16_ATTENTION, sdpa_mask)


def matmul_types(model, types: dict[str, str]) -> dict[str, str]:
    """The GGUF format of each Linear's weight, by module name, from a file's tensor formats
    (`gguf.io.read_gguf(path).types`); a head tied to the embedding has the embedding's."""
    from .gguf.io import gguf_names

    names = gguf_names(model)
    out = {hf.removesuffix(".weight"): types[g] for hf, g in names.items() if g in types}
    if "lm_head" not in out and "model.embed_tokens" in out:
        out["lm_head"] = out["model.embed_tokens"]
    return out


@contextlib.contextmanager
def llama_cpp_arithmetic(model, types: dict[str, str]):
    """Inside the block, `model` computes as llama.cpp's CPU backend does on a GGUF file whose
    Linear weights have formats `types` (module name → format, see `matmul_types`): the input
    of each matmul rounded per ACTIVATION_ROUNDING (8-bit blocks of 32 for legacy formats, of
    256 for K-quants), and attention on an F16 KV cache. Weights are not touched: load the
    file's dequantized weights first (`gguf.io.load_weights`)."""
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name in types:
            if types[name] not in ACTIVATION_ROUNDING:
                raise ValueError(f"no known llama.cpp activation rounding for {name}'s format {types[name]}")
            rounding = ACTIVATION_ROUNDING[types[name]]
            hooks.append(module.register_forward_pre_hook(
                lambda m, args, r=rounding: (round_activations(args[0], r), *args[1:])))
    _register_attention()
    previous = model.config._attn_implementation
    model.config._attn_implementation = _F16_ATTENTION
    try:
        yield model
    finally:
        model.config._attn_implementation = previous
        for h in hooks:
            h.remove()
