"""The figures of the chapter "GPTQ"."""
import matplotlib.pyplot as plt
import torch


def _output_error(D: torch.Tensor, H: torch.Tensor) -> float:
    """tr(D·H·Dᵀ) = Σ over calibration inputs of ‖D·x‖² (times 2/n): the layer's output error."""
    D = D.double()
    return torch.einsum("ij,jk,ik->", D, H.double(), D).item()


def error_as_columns_are_processed(W: torch.Tensor, H: torch.Tensor, bits: int = 3, group_size: int = 128,
                                   every: int = 8, ax=None):
    """A layer's output error tr(DHDᵀ), D = W − (the weight so far), after each `every` columns:
    round to nearest (the columns so far rounded, the rest untouched) against GPTQ (the columns so
    far rounded, the rest moved by its updates). GPTQ runs with 1-column blocks, so that every
    intermediate weight is up to date; the result is the same as with 128."""
    from ..gptq import gptq_quantize
    from ..groupwise import GroupQuantLinear

    linear = torch.nn.Linear(W.shape[1], W.shape[0], bias=False)
    linear.weight.data = W.float()
    rtn = GroupQuantLinear.from_linear(linear, bits, group_size, backend="torch").dequantized_weight()
    steps, gptq_errors = [0], [0.0]

    def record(n, current):
        if n % every == 0 or n == W.shape[1]:
            steps.append(n)
            gptq_errors.append(_output_error(W - current, H))

    gptq_quantize(W, H, bits, group_size, block_size=1, callback=record)
    rtn_errors = [_output_error(torch.cat([W[:, :n] - rtn[:, :n], torch.zeros_like(W[:, n:])], 1), H) for n in steps]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, rtn_errors, color="C3", label="round to nearest")
    ax.plot(steps, gptq_errors, color="C0", label="GPTQ")
    ax.set_xlabel("columns quantized")
    ax.set_ylabel("output error tr(D H Dᵀ)")
    ax.set_title(f"{bits}-bit, groups of {group_size}")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax.figure


def damp_and_act_order(losses: dict[tuple[bool, float], float], ax=None):
    """GPTQ's layer loss against the dampening fraction, with and without act-order; `losses` maps
    (act_order, damp) to the loss."""
    if not losses:
        raise ValueError("give at least one (act_order, damp) → loss")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for act_order, style in ((False, "o-"), (True, "s--")):
        damps = sorted(d for a, d in losses if a == act_order)
        if damps:
            ax.plot(damps, [losses[act_order, d] for d in damps], style,
                    label="act-order" if act_order else "columns in order")
    ax.set_xscale("log")
    ax.set_xlabel("dampening λ / mean(diag H)")
    ax.set_ylabel("GPTQ loss Σ e²/2")
    ax.legend()
    ax.grid(alpha=0.3)
    return ax.figure
