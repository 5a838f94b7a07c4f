"""The autograder: grade a folder of submitted notebooks of one chapter.

    python -m lec19quant.grading submissions/ --chapter 04 --out grades.csv

Each submission runs in its own process (lec19quant.grading.worker) under the limits of
`sandbox.Limits`: its code cells in order, each with a time limit; then, for every exercise of the
chapter (its check cells: `lec19quant.assignments`), the student's process runs the check in
record mode and sends back only the student's answers to the check's cases. This process
computes the expected answers itself and compares, so the score never depends on code of the
student's. A cell or a check that raises, overruns its time, exhausts the memory limit or kills
the process costs only what depends on it: the process is restarted (without that cell) for the
remaining exercises.

What the grader guarantees: the exercises, their points and their checks come from the chapter,
not from the submission; the comparison, the points and the results file are computed and
written here; what the student's process sends is decoded without unpickling (wire.py), so it can
at most be a wrong answer. What it does not: it does not see *how* an answer was computed (a
function that calls the package's own reference passes); without user namespaces (see sandbox.py)
the student's code can read and write the grader's files and reach local services; and it does
not look for copied submissions.
"""
import csv
import json
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import assignments
from ..checks import CheckFailed, core
from .sandbox import Limits, Overrun, StudentProcess

MAX_STARTS = 4  # processes per submission: the first, and one after each overrun
_compare = threading.Lock()  # replay mode is global to the checks


@dataclass
class Grade:
    """One submission's points and feedback per exercise (keyed by the name the student defines),
    and notes on the cells that failed."""

    student: str
    points: dict[str, float] = field(default_factory=dict)
    feedback: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.points.values())


def _unused(*args):
    raise AssertionError("in replay mode the checks do not call the student's function")


def compare(exercise: assignments.Exercise, reply: dict) -> tuple[float, str]:
    """(points, feedback) for the student process's reply to an exercise's check: the check's
    message, the check's first disagreement, or why there is nothing to compare."""
    if "error" in reply:
        return 0, f"✗ {exercise.answer}: {str(reply['error'])[:500]}"
    answers = reply.get("answers")
    if not (isinstance(answers, list) and all(
            isinstance(run, list) and all(isinstance(a, (list, tuple)) and len(a) == 2 and isinstance(a[0], bool)
                                          for a in run) for run in answers)):
        return 0, f"✗ {exercise.answer}: the student's process sent malformed answers"
    with _compare, core.replay(answers):
        try:
            return exercise.points, str(exercise.run(_unused))
        except CheckFailed as failed:
            return 0, str(failed)[:2000]
        except Exception as error:  # an answer the check could not even compare
            return 0, f"✗ {exercise.answer}: {type(error).__name__}: {str(error)[:500]}"


class _Submission:
    """A submission's code cells and the process that has run them (restarted after an overrun,
    without the cells that overran)."""

    def __init__(self, cells: list[str], limits: Limits, notes: list[str]):
        self.cells, self.limits, self.notes = cells, limits, notes
        self.skipped: set[int] = set()
        self.failed: set[int] = set()
        self.process: StudentProcess | None = None
        self.starts = 0

    def ask(self, exercise: assignments.Exercise) -> dict:
        while self.process is None:
            if self.starts == MAX_STARTS:
                raise Overrun(f"not graded: the notebook overran its limits {MAX_STARTS} times")
            self.starts += 1
            self.process = self._run_cells(StudentProcess(self.limits))
        try:
            return self.process.request({"answer": exercise.call}, self.limits.check_seconds)
        except Overrun:
            self.process = None
            raise

    def _run_cells(self, process: StudentProcess) -> StudentProcess | None:
        for i, cell in enumerate(self.cells):
            if i in self.skipped:
                continue
            try:
                reply = process.request({"exec": cell}, self.limits.cell_seconds)
            except Overrun as overrun:
                self.skipped.add(i)
                self.notes.append(f"code cell {i + 1} skipped: {overrun}")
                return None
            if "error" in reply and i not in self.failed:
                self.failed.add(i)
                self.notes.append(f"code cell {i + 1} raised {str(reply['error'])[:300]}")
        return process

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


def grade_notebook(path: Path, exercises: list[assignments.Exercise], limits: Limits = Limits()) -> Grade:
    """Grade one submitted notebook (an .ipynb file) on the chapter's exercises."""
    path = Path(path)
    grade = Grade(path.stem)
    try:
        notebook = json.loads(path.read_text())
        cells = [assignments.source(c) for c in notebook["cells"]
                 if c.get("cell_type") == "code" and "check" not in assignments.tags(c)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        for exercise in exercises:
            grade.points[exercise.answer], grade.feedback[exercise.answer] = 0, f"not a notebook: {error}"
        return grade
    submission = _Submission(cells, limits, grade.notes)
    try:
        for exercise in exercises:
            try:
                reply = submission.ask(exercise)
            except Overrun as overrun:
                reply = {"error": f"not graded: {overrun}"}
            grade.points[exercise.answer], grade.feedback[exercise.answer] = compare(exercise, reply)
    finally:
        submission.close()
    return grade


def grade_folder(folder: Path, exercises: list[assignments.Exercise], limits: Limits = Limits(),
                 jobs: int = 2) -> list[Grade]:
    """Grade every .ipynb in `folder` (sorted by name), `jobs` submissions at a time."""
    paths = sorted(Path(folder).glob("*.ipynb"))
    if not paths:
        raise ValueError(f"no .ipynb files in {folder}")
    for exercise in exercises:  # imports what the checks need before any student code runs
        compare(exercise, {"answers": []})
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda p: grade_notebook(p, exercises, limits), paths))


def chapter_exercises(chapter: str) -> list[assignments.Exercise]:
    """The exercises of a chapter given as a notebook path (the chapter or its student version)
    or as its number ("04"), looked up in the notebooks/ folder of the working directory, then
    in that of the checkout the package runs from (an installed package has none)."""
    path = Path(chapter)
    if not path.is_file():
        folders = [Path.cwd() / "notebooks", Path(__file__).resolve().parents[2] / "notebooks"]
        found = next((f for f in (sorted(d.glob(f"{chapter}_*.ipynb")) for d in folders) if f), [])
        if len(found) != 1:
            raise ValueError(f"--chapter {chapter!r}: give a notebook path, or a chapter number and run "
                             f"where the book's notebooks/ folder is")
        path = found[0]
    found = assignments.exercises(json.loads(path.read_text()))
    if not found:
        raise ValueError(f"{path} has no graded exercises (code cells tagged 'check')")
    return found


def write(grades: Iterable[Grade], exercises: list[assignments.Exercise], path: Path) -> None:
    """Write the grades as CSV (one row per student: points per exercise, total, feedback) or,
    for a .json path, as JSON (also the notes on failed cells)."""
    grades, path = list(grades), Path(path)
    maximum = sum(e.points for e in exercises)
    if path.suffix == ".json":
        path.write_text(json.dumps([
            {"student": g.student, "total": g.total, "max": maximum, "notes": g.notes,
             "exercises": {e.answer: {"points": g.points[e.answer], "max": e.points, "feedback": g.feedback[e.answer]}
                           for e in exercises}} for g in grades], indent=1, ensure_ascii=False) + "\n")
        return
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["student"] + [f"{e.answer} ({e.points:g})" for e in exercises] + [f"total ({maximum:g})", "feedback"])
        for g in grades:
            feedback = " | ".join(g.feedback[e.answer] for e in exercises if g.points[e.answer] < e.points)
            out.writerow([g.student] + [g.points[e.answer] for e in exercises] + [g.total, feedback])
