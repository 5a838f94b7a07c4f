"""Grading 20 submissions of a chapter with the autograder, two at a time (2 cores).

    python benchmarks/bench_grading.py [--save]          # chapters 01 and 03
    BENCH_GRADING_CHAPTERS=03 python benchmarks/bench_grading.py

Half the submissions are the chapter's own notebook (full marks), half its student notebook (zero).
Each submission runs in its own process, one thread each: the notebook once, then every exercise
in that process. Chapter 03 loads the running example in its notebook and once more in its check
(`checks.running_example`, cached for the process), not once per exercise; the grader's own
process loads it once for all submissions.
"""
import os
import tempfile
import time
from pathlib import Path

from harness import machine, run

from lec19quant import grading
from lec19quant.grading import sandbox

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SUBMISSIONS = 20


def measure() -> list[dict]:
    rows = []
    limits = sandbox.Limits(isolate=sandbox.namespaces_available())
    for chapter in os.environ.get("BENCH_GRADING_CHAPTERS", "01 03").split():
        notebook = next(NOTEBOOKS.glob(f"{chapter}_*.ipynb"))
        exercises = grading.chapter_exercises(chapter)
        with tempfile.TemporaryDirectory() as folder:
            for i in range(SUBMISSIONS):
                source = notebook if i % 2 else NOTEBOOKS / "student" / notebook.name
                (Path(folder) / f"student{i:02d}.ipynb").write_text(source.read_text())
            start = time.perf_counter()
            grades = grading.grade_folder(folder, exercises, limits, jobs=2)
            seconds = time.perf_counter() - start
        maximum = sum(e.points for e in exercises)
        right = sum(g.total == (maximum if int(g.student[-2:]) % 2 else 0) and not g.notes for g in grades)
        rows.append({"chapter": notebook.stem, "submissions": len(grades), "exercises": len(exercises),
                     "graded as expected": right, "seconds": seconds, "s per submission": seconds / len(grades),
                     "isolated": limits.isolate})
    return rows


def main() -> None:
    load = round(os.getloadavg()[0], 1)
    run(__doc__, "grading", measure, title=f"Grading {SUBMISSIONS} submissions, 2 at a time, on {machine()} "
        f"(load average {load} at the start)", formats={"seconds": ".0f", "s per submission": ".1f"},
        load_average_at_start=load)


if __name__ == "__main__":
    main()
