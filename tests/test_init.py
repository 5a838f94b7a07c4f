import pytest

import lec19quant


@pytest.mark.parametrize("value, expected", [(None, False), ("", False), ("0", False), ("no", False),
                                             ("False", False), ("1", True), ("true", True), (" YES ", True)])
def test_full_size_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(lec19quant.FULL_SIZE_ENV, raising=False)
    else:
        monkeypatch.setenv(lec19quant.FULL_SIZE_ENV, value)
    assert lec19quant.full_size() is expected


def test_full_size_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv(lec19quant.FULL_SIZE_ENV, "big")
    with pytest.raises(ValueError, match="LEC19QUANT_FULL='big'"):
        lec19quant.full_size()
