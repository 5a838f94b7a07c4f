"""quantize.code_entropy against PyTorch's own entropy of a categorical distribution."""
import math

import pytest
import torch

from lec19quant.quantize import code_entropy


def categorical_bits(codes: torch.Tensor) -> float:
    """The oracle: torch.distributions' entropy (in nats) of the codes' frequencies, in bits."""
    _, counts = torch.unique(codes, return_counts=True)
    return torch.distributions.Categorical(probs=counts.double()).entropy().item() / math.log(2)


@pytest.mark.parametrize("codes", [
    torch.randint(0, 16, (4096,), generator=torch.Generator().manual_seed(0)),
    torch.randint(-7, 8, (64, 64), generator=torch.Generator().manual_seed(1)),  # absmax INT4 codes
    torch.round(torch.randn(10_000, generator=torch.Generator().manual_seed(2)) * 3).to(torch.int8),
    torch.tensor([5, 5, 5, 200], dtype=torch.uint8),
])
def test_equals_the_categorical_entropy(codes):
    assert code_entropy(codes) == pytest.approx(categorical_bits(codes), rel=1e-12, abs=1e-15)


def test_edge_cases():
    assert code_entropy(torch.arange(16).repeat(3)) == pytest.approx(4.0, rel=1e-15)  # all used equally
    assert code_entropy(torch.tensor([-3, 2])) == pytest.approx(1.0, rel=1e-15)
    assert code_entropy(torch.full((100,), 7)) == 0.0  # one code: no information, and not −0.0
    assert math.copysign(1, code_entropy(torch.full((3,), -1))) == 1


@pytest.mark.parametrize("codes, error, match", [
    (torch.tensor([0.0, 1.0]), TypeError, "integer tensor"),
    (torch.tensor([True, False]), TypeError, "integer tensor"),
    (torch.tensor([], dtype=torch.int64), ValueError, "empty"),
])
def test_bad_codes_are_named(codes, error, match):
    with pytest.raises(error, match=match):
        code_entropy(codes)
