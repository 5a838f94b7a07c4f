"""The checks of the SmoothQuant/AWQ chapter: a correct answer passes, typical mistakes fail."""
import pytest
import torch

from lec19quant import checks


def factors(a, w, alpha):
    return (a ** alpha / w.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


def fold(before, linear, s):
    with torch.no_grad():
        before.weight.div_(s[:, None] if isinstance(before, torch.nn.Linear) else s)
        if before.bias is not None:
            before.bias.div_(s)
        linear.weight.mul_(s[None, :])


def test_correct_answers_pass():
    assert "all 4 sets of channels right" in checks.check_smoothing_factors(factors).message
    assert "all 3 pairs of layers right" in checks.check_fold_scales(fold).message


def test_smoothing_factor_mistakes_fail():
    with pytest.raises(checks.CheckFailed, match="α"):  # no floor on w: inf where a weight column is 0
        checks.check_smoothing_factors(lambda a, w, alpha: a ** alpha / w ** (1 - alpha))
    with pytest.raises(checks.CheckFailed):  # α and 1 − α swapped
        checks.check_smoothing_factors(lambda a, w, alpha: factors(a, w, 1 - alpha))
    with pytest.raises(checks.CheckFailed):  # no floor on s: 0 for a channel never active
        checks.check_smoothing_factors(lambda a, w, alpha: a ** alpha / w.clamp(min=1e-5) ** (1 - alpha))


def test_folding_mistakes_fail():
    def forgets_the_bias(before, linear, s):
        with torch.no_grad():
            before.weight.div_(s[:, None] if isinstance(before, torch.nn.Linear) else s)
            linear.weight.mul_(s[None, :])

    def scales_the_rows(before, linear, s):  # W·diag(s) multiplies columns, not rows
        with torch.no_grad():
            before.weight.div_(s[:, None] if isinstance(before, torch.nn.Linear) else s)
            if before.bias is not None:
                before.bias.div_(s)
            linear.weight.mul_(s[:linear.weight.shape[0], None])

    for wrong in (forgets_the_bias, scales_the_rows, lambda before, linear, s: None):
        with pytest.raises(checks.CheckFailed):
            checks.check_fold_scales(wrong)
