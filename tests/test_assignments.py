"""Every chapter's exercises follow the convention, and its student notebook is up to date, holds no
solution, and still runs: what the solutions define is not needed by any other cell, every stub
fails its check and every solution passes it."""
import ast
import json
import symtable
from pathlib import Path

import pytest

from lec19quant import assignments, checks
from lec19quant.grading.worker import _without_magics

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 10


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_each_exercise_is_a_stub_a_hidden_solution_and_a_check(chapter):
    cells = code_cells(load(chapter))
    exercises = assignments.exercises(load(chapter))
    assert exercises, f"{chapter.name} has no graded exercise"
    kinds = [next((t for t in ("exercise", "solution", "check") if t in assignments.tags(c)), None) for c in cells]
    triples = [i for i in range(len(kinds) - 2) if kinds[i:i + 3] == ["exercise", "solution", "check"]]
    assert len(triples) == len(exercises) == kinds.count("exercise") == kinds.count("solution")
    for i, exercise in zip(triples, exercises):
        stub, solution = (_defined(assignments.source(cells[j])) for j in (i, i + 1))
        assert exercise.answer in stub and exercise.answer in solution
        assert "hide-cell" in assignments.tags(cells[i + 1]), "the book shows no solution expanded"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_is_up_to_date(chapter):
    student = assignments.student_path(chapter)
    assert student.exists() and student.read_text() == assignments.dumps(assignments.student_version(load(chapter))), (
        f"{student.relative_to(NOTEBOOKS.parent)} is stale: python -m lec19quant.assignments")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_has_no_solution_and_everything_else(chapter):
    notebook, student = load(chapter), load(assignments.student_path(chapter))
    kept = [c for c in notebook["cells"] if "solution" not in assignments.tags(c)]
    elsewhere = {line.strip() for c in kept for line in assignments.source(c).splitlines()}
    text = {line.strip() for c in student["cells"] for line in assignments.source(c).splitlines()}
    for cell in notebook["cells"]:
        if "solution" in assignments.tags(cell):
            own = {line.strip() for line in assignments.source(cell).splitlines()} - elsewhere - {""}
            assert own and not own & text, f"solution code left in the student notebook: {own & text}"
    assert len(student["cells"]) == len(kept) and student["metadata"] == notebook["metadata"]
    for mine, theirs in zip(student["cells"], kept):
        extra = ["raises-exception"] if "check" in assignments.tags(theirs) else []
        assert assignments.tags(mine) == assignments.tags(theirs) + extra
        assert {k: v for k, v in mine.items() if k != "metadata"} == {k: v for k, v in theirs.items() if k != "metadata"}
    colab = assignments.source(code_cells(student)[0])
    assert "google.colab" in colab and "pip install" in colab


def _defined(source: str) -> set[str]:
    table = symtable.symtable(_without_magics(source), "cell", "exec")
    return {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}


def _used(source: str) -> set[str]:
    """The global names a cell reads, in its own statements or in the functions it defines."""
    used, tables = set(), [symtable.symtable(_without_magics(source), "cell", "exec")]
    while tables:
        table = tables.pop()
        tables.extend(table.get_children())
        used |= {s.get_name() for s in table.get_symbols()
                 if s.is_referenced() and (table.get_type() == "module" or s.is_global())}
    return used


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_kept_cell_needs_what_only_a_solution_defines(chapter):
    cells = code_cells(load(chapter))
    kept = [assignments.source(c) for c in cells if "solution" not in assignments.tags(c)]
    by_kept = set().union(*map(_defined, kept))
    only_solutions = set().union(*(_defined(assignments.source(c)) for c in cells
                                   if "solution" in assignments.tags(c))) - by_kept
    needed = {name: i for i, source in enumerate(kept) for name in _used(source) & only_solutions}
    assert not needed, f"kept cells read names that only solutions define: {needed}"


def _namespace(notebook: dict) -> dict:
    """What the exercise cells may use from the chapter: the modules its cells import."""
    namespace = {}
    for cell in code_cells(notebook):
        tree = ast.parse(_without_magics(assignments.source(cell)))
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        exec(compile(ast.Module(imports, type_ignores=[]), "imports", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_stubs_fail_their_checks_and_solutions_pass(chapter):
    notebook = load(chapter)
    stubs, solutions = _namespace(notebook), _namespace(notebook)
    for cell in code_cells(notebook):
        if "exercise" in assignments.tags(cell):
            exec(assignments.source(cell), stubs)
            exec(assignments.source(cell), solutions)
        if "solution" in assignments.tags(cell):
            exec(assignments.source(cell), solutions)
    for exercise in assignments.exercises(notebook):
        with pytest.raises(checks.CheckFailed):
            exercise.run(stubs[exercise.answer])
        assert str(exercise.run(solutions[exercise.answer])).startswith("✓")
