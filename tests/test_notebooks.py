"""Each chapter's committed .ipynb is exactly what jupytext makes of its .md source."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md"))


def test_there_are_chapters():
    assert SOURCES


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_generated_from_md(md, tmp_path):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: jupytext --to ipynb {md}"
    shutil.copy(md, tmp_path / md.name)
    shutil.copy(ipynb, tmp_path / ipynb.name)
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--update",
                    str(tmp_path / md.name)], check=True)
    assert (tmp_path / ipynb.name).read_text() == ipynb.read_text(), (
        f"{ipynb.name} is stale: jupytext --to ipynb --update {md.relative_to(NOTEBOOKS.parent)}")


@pytest.mark.parametrize("md", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_output_free_and_installs_in_colab(md):
    nb = json.loads(md.with_suffix(".ipynb").read_text())
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert all(not cell["outputs"] and cell["execution_count"] is None for cell in code)
    first = code[0]
    assert "remove-cell" in first["metadata"].get("tags", [])
    assert "google.colab" in "".join(first["source"]) and "pip install" in "".join(first["source"])
