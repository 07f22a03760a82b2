"""docs/api.md's examples run as doctests, so the API page stays true (in process: no Ray)."""

from __future__ import annotations

import doctest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_api_page_runs(monkeypatch):
    monkeypatch.chdir(ROOT)  # the page reads a committed sweep by its path in the checkout
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20 and result.failed == 0, result
