import pytest

from lec19quant.display import Table


def test_markdown_and_text():
    t = Table([{"format": "BF16", "GB": 16.38, "fits": False}, {"format": "Q4_K", "GB": 4.6, "fits": True}],
              formats={"GB": ".1f"})
    assert t._repr_markdown_().splitlines() == [
        "| format | GB | fits |", "| --- | --- | --- |", "| BF16 | 16.4 | no |", "| Q4_K | 4.6 | yes |"]
    assert repr(t).splitlines()[0] == "format  GB    fits"
    assert repr(t).splitlines()[2] == "Q4_K    4.6   yes"


def test_callable_format():
    t = Table([{"n": 8_190_735_360}], formats={"n": lambda v: f"{v / 1e9:.2f}B"})
    assert t.cells == [["8.19B"]]


@pytest.mark.parametrize("rows, formats, match", [
    ([], None, "at least one row"),
    ([{"a": 1}, {"b": 2}], None, "row 1 has columns"),
    ([{"a": 1}], {"b": ".1f"}, "lack"),
])
def test_bad_tables(rows, formats, match):
    with pytest.raises(ValueError, match=match):
        Table(rows, formats)


def test_markdown_cells_stay_on_one_line():
    t = Table([{"max |x|": 11.6, "text": "CHAPTER 1.\n\nCall me"}], formats={"max |x|": ".1f"})
    assert t._repr_markdown_().splitlines() == ["| max \\|x\\| | text |", "| --- | --- |", "| 11.6 | CHAPTER 1. Call me |"]
