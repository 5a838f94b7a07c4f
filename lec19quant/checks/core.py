"""What every check shares: run a student's function on every case, compare, report."""
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch


class CheckFailed(AssertionError):
    """A student's function disagreed with the reference."""


@dataclass(frozen=True)
class Passed:
    """The message of a check that passed."""

    message: str

    def __repr__(self) -> str:
        return self.message


def _run(name: str, student: Callable, cases: Iterable, expected: Iterable, same: Callable,
         describe: Callable, what: str) -> Passed:
    """Call `student` on each case and compare with the expected answer by `same(got, want)`."""
    if not callable(student):
        raise TypeError(f"{name} takes your function, got {type(student).__name__}")
    n, failed, first = 0, 0, None
    for case, want in zip(cases, expected):
        n += 1
        try:
            got = student(case)
            ok = same(got, want)
        except Exception as error:  # the student's bug, reported as a wrong answer
            got, ok = f"{type(error).__name__}: {error}", False
        if not ok:
            failed += 1
            first = first or (case, want, got)
    if failed:
        case, want, got = first
        raise CheckFailed(f"✗ {name}: {failed} of {n} {what} wrong; the first: {describe(case)}, "
                          f"expected {want!r}, got {got!r}")
    return Passed(f"✓ {name}: all {n} {what} right")


def _close(got, want: torch.Tensor) -> bool:
    got = torch.as_tensor(got, dtype=torch.float32).reshape(want.shape)
    return bool(torch.allclose(got, want.float(), rtol=1e-5, atol=1e-7))


def _describe(x: torch.Tensor) -> str:
    return f"x = {x.tolist()}" if x.numel() <= 8 else f"x of {x.numel()} values, max |x| = {x.abs().max():.3g}"
