"""What every check shares: run a student's function on every case, compare, report."""
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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


class _Answers:
    """Where `_run` takes a student's answers from. Normally it calls the function on each case;
    the grader (lec19quant.grading) records them in the student's process instead (`record`) and
    compares them in its own (`replay`), so that no code of the student's decides a score."""

    recorded: list | None = None  # one list of (called, got) per _run while recording
    replayed: list | None = None  # the lists to compare, in the order of the _run calls


def _answer(student: Callable, case) -> tuple[bool, object]:
    """(True, student(case)), or (False, the error's text) when the student's function raises."""
    try:
        return True, student(case)
    except Exception as error:  # the student's bug, reported as a wrong answer
        return False, f"{type(error).__name__}: {error}"


@contextmanager
def record() -> Iterator[list]:
    """Within it, `_run` stores the student's answers (one list per check run) and compares nothing."""
    _Answers.recorded = []
    try:
        yield _Answers.recorded
    finally:
        _Answers.recorded = None


@contextmanager
def replay(answers: list) -> Iterator[None]:
    """Within it, `_run` compares `answers` (as `record` stored them) instead of calling the student."""
    _Answers.replayed = list(answers)
    try:
        yield
    finally:
        _Answers.replayed = None


def _run(name: str, student: Callable, cases: Iterable, expected: Iterable, same: Callable,
         describe: Callable, what: str) -> Passed:
    """Call `student` on each case and compare with the expected answer by `same(got, want)`."""
    replayed = _Answers.replayed
    if replayed is None and not callable(student):
        raise TypeError(f"{name} takes your function, got {type(student).__name__}")
    if _Answers.recorded is not None:
        _Answers.recorded.append([_answer(student, case) for case in cases])
        return Passed(f"{name}: answers recorded")
    if replayed is None:
        answers = (_answer(student, case) for case in cases)
    else:
        answers = iter(replayed.pop(0) if replayed else [])
    n, failed, first = 0, 0, None
    for case, want in zip(cases, expected):
        n += 1
        called, got = next(answers, (False, "no answer"))
        try:
            ok = called and same(got, want)
        except Exception as error:  # an answer of the wrong kind
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
