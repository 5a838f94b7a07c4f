"""The autograder on a small synthetic chapter (right, wrong, crashing, looping, memory-hungry,
dying, tampering and network-seeking submissions, graded together) and on one real chapter."""
import csv
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch

from lec19quant import assignments, checks, grading, models
from lec19quant.checks import core, gguf
from lec19quant.grading import sandbox, wire

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
ISOLATED = sandbox.namespaces_available()
LIMITS = sandbox.Limits(cell_seconds=30, check_seconds=30, start_seconds=300, memory_mb=3072, isolate=ISOLATED)


def code(source: str, *tags: str, **metadata) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": f"c{abs(hash(source)) % 10**8}",
            "metadata": dict(metadata, tags=list(tags)) if tags else dict(metadata), "outputs": [], "source": source}


# A chapter in the convention: a Colab cell, an import cell, three exercises (1, 2 and 3 points).
RIGHT = {
    "use_more_bits": "def use_more_bits(i, n):\n    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2\n",
    "int8_bits": "def int8_bits(value):\n    return format(value & 0xFF, '08b')\n",
    "my_min_time": ("def my_min_time(m, k, n, weight_bits, gpu):\n"
                    "    n_bytes = (n * k * weight_bits + m * k * 16 + m * n * 16) / 8\n"
                    "    return max(n_bytes / gpu.bandwidth, 2 * m * n * k / gpu.fp16_flops)\n"),
}
CHECKS = {"use_more_bits": ("checks.check_use_more_bits(use_more_bits)", 1),
          "int8_bits": ("checks.check_to_bits(int8_bits, 8)", 2),
          "my_min_time": ("checks.check_min_time(my_min_time)", 3)}
CHAPTER = {"cells": [code('import sys\n\nif "google.colab" in sys.modules:\n    %pip install -q lec19quant\n', "remove-cell"),
                     code("import math\n\nfrom lec19quant import checks, roofline\n")]
           + [cell for name, (call, points) in CHECKS.items() for cell in (
               code(RIGHT[name].split("\n")[0] + "\n    ...  # your code\n", "exercise"),
               code(RIGHT[name], "solution", "hide-cell"), code(call, "check", points=points))],
           "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}
EXERCISES = assignments.exercises(CHAPTER)
MAX = 6


def submission(extra: str = "", **answers: str) -> dict:
    """The student notebook with the exercise cells of `answers` filled in and a cell `extra` after
    the imports."""
    notebook = assignments.student_version(CHAPTER)
    for cell in notebook["cells"]:
        if "exercise" in assignments.tags(cell):
            name = assignments.source(cell).split("(")[0].removeprefix("def ")
            cell["source"] = answers.get(name, cell["source"])
    if extra:
        notebook["cells"].insert(2, code(extra))
    return notebook


WRONG_BITS = "def use_more_bits(i, n):\n    return i < n // 8 or i >= 7 * n // 8\n"
TAMPER = """
import lec19quant.checks as real
from lec19quant.checks import core
fake = real.Passed("✓ all right")
real.check_use_more_bits = real.check_to_bits = real.check_min_time = lambda *a, **k: fake
core._run = lambda *a, **k: fake
core.record = None
class checks:
    def __getattr__(self, name):
        return lambda *a, **k: fake
checks = checks()
print("✓ check_use_more_bits: all 3240 layers right")
"""


@pytest.fixture(scope="module")
def listener():
    """A local TCP port that a student's process must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def graded(tmp_path_factory, listener):
    """Every submission of the synthetic chapter, graded in one run, two at a time."""
    folder = tmp_path_factory.mktemp("submissions")
    port = listener.getsockname()[1]
    target = models.cache_dir() / f"written_by_a_student_{os.getpid()}.txt"  # outside /tmp
    students = {
        "right": submission(**RIGHT),
        "stub": submission(),
        "wrong": submission(**dict(RIGHT, use_more_bits=WRONG_BITS)),
        "crash": submission("raise RuntimeError('boom')",
                            **dict(RIGHT, use_more_bits="def use_more_bits(i, n):\n    return 1 / 0\n")),
        "dies": submission(**dict(RIGHT, int8_bits="import os\n\ndef int8_bits(value):\n    os._exit(3)\n")),
        "loops": submission("while True:\n    pass\n",
                            **dict(RIGHT, use_more_bits="def use_more_bits(i, n):\n    while True:\n        pass\n")),
        "hog": submission(**dict(RIGHT, my_min_time="import torch\n\ndef my_min_time(*args):\n    hoard = []\n"
                                                    "    while True:\n        hoard.append(torch.empty(10**8))\n")),
        "tamper": submission(TAMPER),
        "network": submission(f"open({str(target)!r}, 'w').write('x')\n", **dict(RIGHT, int8_bits=(
            "import socket\n\ndef int8_bits(value):\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
            "    return format(value & 0xFF, '08b')\n"))),
        "reference": submission(**dict(RIGHT, use_more_bits="from lec19quant.gguf.recipes import use_more_bits\n")),
    }
    for name, notebook in students.items():
        (folder / f"{name}.ipynb").write_text(assignments.dumps(notebook))
    (folder / "garbled.ipynb").write_text("{not json")
    grades = {g.student: g for g in grading.grade_folder(folder, EXERCISES, LIMITS, jobs=2)}
    yield grades, target
    target.unlink(missing_ok=True)


def test_right_answers_get_full_marks_and_the_checks_messages(graded):
    grades, _ = graded
    right = grades["right"]
    assert right.points == {"use_more_bits": 1, "int8_bits": 2, "my_min_time": 3} and right.total == MAX
    assert right.feedback["int8_bits"] == str(checks.check_to_bits(_define(RIGHT["int8_bits"]), 8))
    assert right.notes == []


def _define(source: str):
    namespace = {}
    exec(source, namespace)
    return next(v for k, v in namespace.items() if not k.startswith("__"))


def test_a_wrong_answer_costs_its_exercise_with_the_checks_first_disagreement(graded):
    grades, _ = graded
    wrong = grades["wrong"]
    assert wrong.points == {"use_more_bits": 0, "int8_bits": 2, "my_min_time": 3}
    with pytest.raises(checks.CheckFailed) as in_process:
        gguf.check_use_more_bits(_define(WRONG_BITS))
    assert wrong.feedback["use_more_bits"] == str(in_process.value)
    assert "the first: layer 2 of 4, expected True, got False" in wrong.feedback["use_more_bits"]


def test_the_stubs_fail_their_checks_and_every_other_cell_runs(graded):
    stub = graded[0]["stub"]
    assert stub.total == 0 and stub.notes == []
    assert all(f.startswith("✗ check_") for f in stub.feedback.values()), stub.feedback


def test_a_crash_costs_only_what_depends_on_it(graded):
    crash = graded[0]["crash"]
    assert crash.points == {"use_more_bits": 0, "int8_bits": 2, "my_min_time": 3}
    assert "ZeroDivisionError" in crash.feedback["use_more_bits"]
    assert crash.notes == ["code cell 3 raised RuntimeError: boom"]


def test_a_process_that_dies_is_restarted_for_the_other_exercises(graded):
    dies = graded[0]["dies"]
    assert dies.points == {"use_more_bits": 1, "int8_bits": 0, "my_min_time": 3}
    assert "died" in dies.feedback["int8_bits"] and "exit code 3" in dies.feedback["int8_bits"]


def test_endless_loops_time_out(graded):
    loops = graded[0]["loops"]
    assert loops.points == {"use_more_bits": 0, "int8_bits": 2, "my_min_time": 3}
    assert f"took longer than {LIMITS.check_seconds:g} s" in loops.feedback["use_more_bits"]
    assert loops.notes == [f"code cell 3 skipped: the student's process took longer than {LIMITS.cell_seconds:g} s"]


def test_unbounded_allocation_hits_the_memory_limit(graded):
    hog = graded[0]["hog"]
    assert hog.points == {"use_more_bits": 1, "int8_bits": 2, "my_min_time": 0}
    assert "can't allocate memory" in hog.feedback["my_min_time"]


def test_tampering_with_checks_in_the_students_process_changes_nothing(graded):
    tamper = graded[0]["tamper"]
    assert tamper.total == 0 and tamper.notes == []
    assert all(f.startswith("✗") for f in tamper.feedback.values()), tamper.feedback


def test_no_network_and_no_writes_outside_tmp(graded, listener):
    grades, target = graded
    network = grades["network"]
    assert network.points == {"use_more_bits": 1, "int8_bits": 0, "my_min_time": 3}
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    if not ISOLATED:
        pytest.skip("no user namespaces here: the file system is not read-only for students")
    assert not target.exists()
    assert "Read-only file system" in network.notes[0]


def test_what_the_grader_does_not_guarantee_calling_the_reference_passes(graded):
    assert graded[0]["reference"].points["use_more_bits"] == 1


def test_a_file_that_is_not_a_notebook_gets_zero(graded):
    garbled = graded[0]["garbled"]
    assert garbled.total == 0 and all(f.startswith("not a notebook") for f in garbled.feedback.values())


def test_results_as_csv_and_json(graded, tmp_path):
    grades = [graded[0][name] for name in ("right", "wrong")]
    grading.write(grades, EXERCISES, tmp_path / "grades.csv")
    rows = list(csv.reader((tmp_path / "grades.csv").open()))
    assert rows[0] == ["student", "use_more_bits (1)", "int8_bits (2)", "my_min_time (3)", "total (6)", "feedback"]
    assert rows[1] == ["right", "1", "2", "3", "6", ""]
    assert rows[2][:5] == ["wrong", "0", "2", "3", "5"] and rows[2][5] == grades[1].feedback["use_more_bits"]
    grading.write(grades, EXERCISES, tmp_path / "grades.json")
    results = json.loads((tmp_path / "grades.json").read_text())
    assert results[1]["total"] == 5 and results[1]["max"] == MAX
    assert results[1]["exercises"]["use_more_bits"] == {"points": 0, "max": 1,
                                                         "feedback": grades[1].feedback["use_more_bits"]}


# --- the pieces -------------------------------------------------------------------------------

def test_record_then_replay_is_the_check_itself():
    wrong = _define(WRONG_BITS)
    with core.record() as recorded:
        gguf.check_use_more_bits(wrong)
    assert len(recorded) == 1 and len(recorded[0]) == sum(range(1, 81))
    with core.replay(recorded), pytest.raises(checks.CheckFailed) as replayed:
        gguf.check_use_more_bits(None)
    with pytest.raises(checks.CheckFailed) as direct:
        gguf.check_use_more_bits(wrong)
    assert str(replayed.value) == str(direct.value)
    with core.replay([]), pytest.raises(checks.CheckFailed, match="3240 of 3240 layers wrong.*got 'no answer'"):
        gguf.check_use_more_bits(None)


@pytest.mark.parametrize("value", [
    None, True, -3, 2**70, -0.0, math.inf, 1 + 2j, "✓", [1, (2, 3)], {"a": [1.5], 2: None},
    torch.tensor([-0.0, math.nan, math.inf, 1e-45]), torch.arange(6, dtype=torch.int8).reshape(2, 3),
    torch.tensor([1.5, -2.0], dtype=torch.bfloat16), torch.tensor([True, False]), torch.zeros(0, 3),
    torch.ones(3, requires_grad=True), torch.arange(12.0).reshape(3, 4).t()])
def test_wire_round_trip(value):
    back = wire.decode(json.loads(json.dumps(wire.encode(value))))
    if isinstance(value, torch.Tensor):
        assert back.dtype == value.dtype and back.shape == value.shape
        assert torch.equal(back.view(-1).view(torch.uint8), value.detach().contiguous().view(-1).view(torch.uint8))
    else:
        assert type(back) is type(value) and repr(back) == repr(value)


def test_wire_carries_the_checks_answer_classes_and_nothing_else():
    from lec19quant.checks.qat import _ValueAndGradient

    answer = _ValueAndGradient(torch.ones(2), torch.zeros(2))
    back = wire.decode(json.loads(json.dumps(wire.encode(answer))))
    assert type(back) is _ValueAndGradient and torch.equal(back.value, answer.value)
    with pytest.raises(TypeError, match="cannot be sent"):
        wire.encode(object())
    for forged in (["os", "system"], ["lec19quant.checks.core", "Path"], ["lec19quant.checks.core", "torch"],
                   ["lec19quant.checks.nope", "X"], ["lec19quant.checks.core", "Passed.__init__"]):
        with pytest.raises(ValueError, match="not an answer class"):
            wire.decode({"object": [*forged, {"dict": []}]})


def test_wire_refuses_oversized_and_cut_messages(tmp_path):
    import os
    import struct

    r, w = os.pipe()
    os.write(w, struct.pack("<Q", wire.MAX_MESSAGE + 1))
    with pytest.raises(wire.WireError, match="at most"):
        wire.receive(r, 1)
    os.write(w, struct.pack("<Q", 10) + b"[1")
    with pytest.raises(TimeoutError):
        wire.receive(r, 0.2)
    os.close(w)
    with pytest.raises(wire.WireError, match="closed"):
        wire.receive(r, 1)
    os.close(r)


@pytest.mark.parametrize("call", ["print(1)", "checks.check_absmax(lambda x: x)", "checks.nope(f)",
                                  "checks.check_absmax(f, bits=n)", "checks.check_absmax(f, os.sep)",
                                  "checks.check_absmax(f, **k)", "check_absmax(f)"])
def test_a_check_cell_must_be_one_call_of_a_check(call):
    with pytest.raises(ValueError):
        assignments.Exercise(call, 1)


@pytest.mark.parametrize("points", [None, 0, -1, True, "2"])
def test_points_are_positive_numbers(points):
    with pytest.raises(ValueError, match="points"):
        assignments.Exercise("checks.check_absmax(f, bits=8)", points)


def test_limits_are_checked():
    with pytest.raises(ValueError, match="memory_mb"):
        sandbox.Limits(memory_mb=0)


# --- one real chapter, end to end ----------------------------------------------------------------

def test_chapter_01_end_to_end(tmp_path):
    """The chapter's own notebook (stubs followed by solutions) gets full marks; its student
    notebook runs every cell and gets zero."""
    chapter = NOTEBOOKS / "01_why_quantize.ipynb"
    exercises = grading.chapter_exercises("01")
    (tmp_path / "solution.ipynb").write_text(chapter.read_text())
    (tmp_path / "student.ipynb").write_text((NOTEBOOKS / "student" / chapter.name).read_text())
    grades = {g.student: g for g in grading.grade_folder(tmp_path, exercises, LIMITS, jobs=2)}
    maximum = sum(e.points for e in exercises)
    assert grades["solution"].total == maximum and grades["solution"].notes == []
    assert grades["student"].total == 0 and grades["student"].notes == []


def test_command_line(tmp_path, capsys):
    from lec19quant.grading.__main__ import main

    chapter, folder = tmp_path / "chapter.ipynb", tmp_path / "submissions"
    chapter.write_text(assignments.dumps(CHAPTER))
    folder.mkdir()
    (folder / "garbled.ipynb").write_text("{")
    main([str(folder), "--chapter", str(chapter), "--out", str(tmp_path / "grades.csv")]
         + ([] if ISOLATED else ["--no-isolation"]))
    rows = list(csv.reader((tmp_path / "grades.csv").open()))
    assert rows[1][:5] == ["garbled", "0", "0", "0", "0"] and "1 submissions graded" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(folder), "--chapter", "99"])
    assert "give a notebook path, or a chapter number" in capsys.readouterr().err


def test_a_chapter_number_is_found_in_the_working_directory(tmp_path, monkeypatch):
    """An installed package has no notebooks/ beside it: a teacher runs the grader where the
    book's notebooks are."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "97_tiny.ipynb").write_text(assignments.dumps(CHAPTER))
    monkeypatch.chdir(tmp_path)
    assert grading.chapter_exercises("97") == assignments.exercises(CHAPTER)
    with pytest.raises(ValueError, match="chapter number and run where"):
        grading.chapter_exercises("96")


def test_ipython_magics_and_shell_lines_do_not_run():
    from lec19quant.grading.worker import _without_magics

    assert _without_magics("%pip install x\nif a:\n    !ls\nx = (1\n     != 2)\n") == \
        "pass\nif a:\n    pass\nx = (1\n     != 2)\n"


def test_without_namespaces_an_audit_hook_still_blocks_the_network(tmp_path, listener):
    port = listener.getsockname()[1]
    notebook = submission(**dict(RIGHT, int8_bits=(
        "import socket\n\ndef int8_bits(value):\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n"
        "    return format(value & 0xFF, '08b')\n")))
    (tmp_path / "network.ipynb").write_text(assignments.dumps(notebook))
    limits = sandbox.Limits(cell_seconds=30, check_seconds=30, start_seconds=300, memory_mb=3072, isolate=False)
    grade = grading.grade_notebook(tmp_path / "network.ipynb", EXERCISES, limits)
    assert grade.points == {"use_more_bits": 1, "int8_bits": 0, "my_min_time": 3}
    assert "got 'PermissionError: no network while grading (socket.getaddrinfo)'" in grade.feedback["int8_bits"]
    with pytest.raises(BlockingIOError):
        listener.accept()
