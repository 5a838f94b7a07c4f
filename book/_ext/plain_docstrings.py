"""Sphinx extension: the package's docstrings are plain text (math in Unicode, |x|, indented
formulas), not reStructuredText, so autodoc shows each one as written, in a block of text (CSS
class `docstring`) that wraps long lines. The lines of a prose paragraph are joined first, so that
they wrap as one; indented lines, list items and lines with aligned columns stay as they are."""
import re

_KEEP = re.compile(r"^\s|^[-*•] |\S {3,}\S")  # indented, a list item, or aligned in columns


def _prose(line: str) -> bool:
    return bool(line.strip()) and not _KEEP.search(line)


def _as_text_block(app, what, name, obj, options, lines):
    if not any(line.strip() for line in lines):
        return
    joined: list[str] = []
    for line in lines:
        if joined and _prose(joined[-1]) and _prose(line):
            joined[-1] += " " + line
        else:
            joined.append(line)
    lines[:] = [".. code-block:: text", "   :class: docstring", ""] + [f"   {line}" for line in joined] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _as_text_block)
    app.add_css_file("docstrings.css")
    return {"parallel_read_safe": True}
