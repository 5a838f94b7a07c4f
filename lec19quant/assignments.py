"""Exercises as assignments: the chapters' exercise cells, and the student notebooks made from them.

A graded exercise is three code cells (README.md, "Adding a chapter"): a stub tagged `exercise`,
the solution tagged `solution` (and `hide-cell`, for the book), and a check tagged `check` whose
metadata holds its `points` and whose source is one call `checks.check_X(answer, ...)`: the name
the student defines first, then literals and package names (`formats.FP8_E4M3`). The student
notebook is the chapter's notebook without its solution cells; its check cells are also tagged
`raises-exception`, so that a notebook run goes on past a check the stub fails.

    python -m lec19quant.assignments    # notebooks/NN_slug.ipynb → notebooks/student/NN_slug.ipynb
"""
import ast
import copy
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from . import checks

STUDENT_DIR = "student"  # beside the chapters: notebooks/student/NN_slug.ipynb
_MODULES = {"torch", "math"}  # besides lec19quant's modules, what a check's arguments may name


def tags(cell: dict) -> list[str]:
    """A notebook cell's tags."""
    return cell.get("metadata", {}).get("tags", [])


def source(cell: dict) -> str:
    """A notebook cell's source as one string."""
    text = cell.get("source", "")
    return text if isinstance(text, str) else "".join(text)


@dataclass(frozen=True)
class Exercise:
    """A graded exercise: the check call of a cell tagged `check`, and its points."""

    call: str  # the check cell's source: checks.check_X(answer, ...)
    points: float

    def __post_init__(self):
        tree = _parse(self.call)
        if not hasattr(checks, tree.func.attr):
            raise ValueError(f"{self.call!r}: lec19quant.checks has no {tree.func.attr}")
        for node in tree.args[1:] + [k.value for k in tree.keywords]:
            _argument(node)  # fails now, not when grading
        if isinstance(self.points, bool) or not isinstance(self.points, (int, float)) or not self.points > 0:
            raise ValueError(f"{self.call!r}: points must be a positive number, got {self.points!r}")

    @property
    def answer(self) -> str:
        """The name the student defines, the check's first argument."""
        return _parse(self.call).args[0].id

    def run(self, answer) -> checks.Passed:
        """Call the check on `answer`, with the other arguments of the chapter's call."""
        tree = _parse(self.call)
        return getattr(checks, tree.func.attr)(
            answer, *map(_argument, tree.args[1:]), **{k.arg: _argument(k.value) for k in tree.keywords})


def _parse(call: str) -> ast.Call:
    """The check call `checks.check_X(name, ...)`, or ValueError saying what the cell must hold."""
    try:
        tree = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Attribute)
            and isinstance(tree.func.value, ast.Name) and tree.func.value.id == "checks"
            and tree.args and isinstance(tree.args[0], ast.Name)
            and all(k.arg for k in tree.keywords)):
        raise ValueError(f"a check cell holds one call checks.check_X(answer, ...) with the "
                         f"student's name first, got {call!r}")
    return tree


def _argument(node: ast.AST):
    """A check's argument other than the answer: a literal, or a name in torch, math or lec19quant."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    path = []
    while isinstance(node, ast.Attribute):
        path.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise ValueError(f"a check's argument is a literal or a package name, got {ast.unparse(node)!r}")
    if node.id in _MODULES:
        value = importlib.import_module(node.id)
    elif importlib.util.find_spec(f"lec19quant.{node.id}"):
        value = importlib.import_module(f"lec19quant.{node.id}")
    else:
        raise ValueError(f"a check's argument names torch, math or a lec19quant module, got {node.id!r}")
    for attr in reversed(path):
        value = getattr(value, attr)
    return value


def exercises(notebook: dict) -> list[Exercise]:
    """The graded exercises of a notebook (a chapter or its student version), in order."""
    found = [Exercise(source(cell), cell.get("metadata", {}).get("points"))
             for cell in notebook["cells"] if cell["cell_type"] == "code" and "check" in tags(cell)]
    names = [e.answer for e in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two exercises check the same name: {names}")
    return found


def student_version(notebook: dict) -> dict:
    """The notebook without its solution cells; check cells also tagged `raises-exception`."""
    student = copy.deepcopy(notebook)
    student["cells"] = [cell for cell in student["cells"] if "solution" not in tags(cell)]
    for cell in student["cells"]:
        if "check" in tags(cell) and "raises-exception" not in tags(cell):
            cell["metadata"]["tags"] = tags(cell) + ["raises-exception"]
    return student


def dumps(notebook: dict) -> str:
    """A notebook as nbformat writes it."""
    return json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def student_path(chapter: Path) -> Path:
    """Where the student version of notebooks/NN_slug.ipynb goes."""
    return chapter.parent / STUDENT_DIR / chapter.name


def main(argv: list[str]) -> None:
    """Write the student version of each chapter given (default: every notebooks/NN_*.ipynb)."""
    root = Path(__file__).resolve().parent.parent / "notebooks"
    chapters = [Path(a) for a in argv] or sorted(root.glob("[0-9][0-9]_*.ipynb"))
    for chapter in chapters:
        notebook = json.loads(chapter.read_text())
        exercises(notebook)  # the chapter's check cells are well formed
        path = student_path(chapter)
        path.parent.mkdir(exist_ok=True)
        path.write_text(dumps(student_version(notebook)))
        print(f"{chapter} → {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
