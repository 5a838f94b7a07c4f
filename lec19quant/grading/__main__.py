"""python -m lec19quant.grading SUBMISSIONS --chapter 04 --out grades.csv (see lec19quant.grading)."""
import argparse
import time

from . import chapter_exercises, grade_folder, write
from .sandbox import Limits, namespaces_available


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lec19quant.grading",
                                     description="Grade a folder of submitted notebooks of one chapter.")
    parser.add_argument("submissions", help="a folder of .ipynb files, one per student (named after them)")
    parser.add_argument("--chapter", required=True, help="chapter number (04) or path to its notebook")
    parser.add_argument("--out", default="grades.csv", help="grades.csv or grades.json")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at a time")
    parser.add_argument("--cell-seconds", type=float, default=Limits.cell_seconds)
    parser.add_argument("--check-seconds", type=float, default=Limits.check_seconds)
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    parser.add_argument("--no-isolation", action="store_true",
                        help="run without network/file-system namespaces (where unshare is not allowed)")
    args = parser.parse_args(argv)
    isolate = not args.no_isolation
    if isolate and not namespaces_available():
        parser.error("unshare cannot create user namespaces here: grade in a container or VM, "
                     "or pass --no-isolation (see `python -m pydoc lec19quant.grading.sandbox`)")
    limits = Limits(cell_seconds=args.cell_seconds, check_seconds=args.check_seconds, memory_mb=args.memory_mb,
                    isolate=isolate)
    try:
        exercises = chapter_exercises(args.chapter)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    start = time.perf_counter()
    grades = grade_folder(args.submissions, exercises, limits, args.jobs)
    write(grades, exercises, args.out)
    print(f"{len(grades)} submissions graded in {time.perf_counter() - start:.0f} s → {args.out}")


if __name__ == "__main__":
    main()
