"""The GPTQ chapter's checks (a correct answer passes, typical mistakes fail) and figures (they
draw the numbers they claim)."""
import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from lec19quant import checks, gptq, plots  # noqa: E402
from lec19quant.groupwise import GroupQuantLinear  # noqa: E402


def test_inverse_hessian_cholesky_check():
    def right(H, damp):
        H = H + damp * H.diagonal().mean() * torch.eye(len(H), dtype=H.dtype)
        return torch.linalg.cholesky(torch.linalg.inv(H), upper=True)

    assert "all 6" in repr(checks.check_inverse_hessian_cholesky(right))
    with pytest.raises(checks.CheckFailed, match="6 of 6"):  # the lower factor
        checks.check_inverse_hessian_cholesky(lambda H, d: right(H, d).t())
    with pytest.raises(checks.CheckFailed):  # the factor of H, not of its inverse
        checks.check_inverse_hessian_cholesky(
            lambda H, d: torch.linalg.cholesky(H + d * H.diagonal().mean() * torch.eye(len(H), dtype=H.dtype),
                                               upper=True))
    with pytest.raises(checks.CheckFailed):  # no dampening
        checks.check_inverse_hessian_cholesky(lambda H, d: right(H, 0.0))


def test_column_update_check():
    def right(W, q, u):
        e = (W[:, 0] - q) / u[0]
        return W - e[:, None] * u[None, :]

    assert "all 9" in repr(checks.check_column_update(right))
    with pytest.raises(checks.CheckFailed):  # OBQ's error without dividing by the diagonal
        checks.check_column_update(lambda W, q, u: W - (W[:, 0] - q)[:, None] * u[None, :])
    with pytest.raises(checks.CheckFailed):  # the column only rounded, the others left alone
        checks.check_column_update(lambda W, q, u: torch.cat([q[:, None], W[:, 1:]], 1))


def test_error_as_columns_are_processed_draws_both_methods():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 48, generator=g) * (torch.rand(48, generator=g) * 3)
    H, W = 2 * X.t() @ X / 200, torch.randn(16, 48, generator=g)
    fig = plots.error_as_columns_are_processed(W, H, bits=3, group_size=16, every=8)
    rtn, ours = fig.axes[0].get_lines()
    assert list(rtn.get_xdata()) == [0, 8, 16, 24, 32, 40, 48]
    linear = torch.nn.Linear(48, 16, bias=False)
    linear.weight.data = W
    D = (W - GroupQuantLinear.from_linear(linear, 3, 16).dequantized_weight()).double()
    assert rtn.get_ydata()[-1] == pytest.approx(torch.trace(D @ H.double() @ D.t()).item())
    D = (W - gptq.gptq_quantize(W, H, 3, 16).weight).double()
    assert ours.get_ydata()[-1] == pytest.approx(torch.trace(D @ H.double() @ D.t()).item(), rel=1e-4)
    assert ours.get_ydata()[-1] < rtn.get_ydata()[-1]


def test_damp_and_act_order_plots_each_setting():
    fig = plots.damp_and_act_order({(False, 0.01): 3.0, (False, 0.1): 4.0, (True, 0.01): 2.0})
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines["columns in order"].get_ydata()) == [3.0, 4.0]
    assert list(lines["act-order"].get_xdata()) == [0.01]
    with pytest.raises(ValueError):
        plots.damp_and_act_order({})
