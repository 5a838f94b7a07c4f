"""The Python examples on the book's prose pages run and print what they promise."""
import contextlib
import io
import re
from pathlib import Path

BOOK = Path(__file__).parent.parent / "book"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def test_landing_page_example_runs():
    blocks = python_blocks(BOOK / "index.md")
    assert len(blocks) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(blocks[0], {})
    assert out.getvalue() == "8,190,735,360 parameters, 16.4 GB in BF16\n"


def test_the_reference_page_documents_every_module():
    """book/api.md lists every module of the package but the three that serve the notebooks and
    the kernels, so a new module cannot be left out of the reference."""
    import pkgutil

    import lec19quant

    listed = set(re.findall(r"^\.\. automodule:: (\S+)$", (BOOK / "api.md").read_text(), re.M))
    modules = {m.name for m in pkgutil.walk_packages(lec19quant.__path__, "lec19quant.")
               if not m.ispkg and not m.name.startswith("lec19quant.kernels")}
    figures = {m for m in modules if m.startswith("lec19quant.plots.")}
    assert modules - {"lec19quant.display"} - figures == listed - {"lec19quant", "lec19quant.checks", "lec19quant.grading"}
