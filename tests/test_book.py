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
