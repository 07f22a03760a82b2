"""A trial run with reproducible noise (privacy.reproducible_noise=true) keeps its "no guarantee" in every output."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from test_frontier import _record

from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION, SECRET_DESCRIPTION
from fedray.sweep.frontier import write_frontier
from fedray.sweep.plots import frontier_figure
from fedray.sweep.tables import paper_tables

AXES = ["backbone", "lr", "epsilon"]
CAVEAT = "(no guarantee: reproducible noise)"


def _records(guarantee_flag: bool) -> list[dict]:
    """t-sim ran with reproducible noise and is the best at ε = 1; t-real had secret noise."""
    simulated = _record("t-sim", lr=0.05, epsilon=1.0, balanced=0.70)
    real = _record("t-real", lr=0.1, epsilon=1.0, balanced=0.60)
    other = _record("t-8", lr=0.05, epsilon=8.0, balanced=0.55)
    simulated["summary"].privacy["noise"] = REPRODUCIBLE_DESCRIPTION
    for record in (real, other):
        record["summary"].privacy["noise"] = SECRET_DESCRIPTION
    if guarantee_flag:  # the ledger's own flag, where it has one, decides
        simulated["summary"].privacy["guarantee"] = False
        real["summary"].privacy["guarantee"] = other["summary"].privacy["guarantee"] = True
    return [simulated, real, other, _record("t-inf", lr=0.05, epsilon=math.inf, balanced=0.8)]


@pytest.fixture(params=[False, True], ids=["noise-line", "guarantee-flag"])
def written(request, tmp_path):
    return write_frontier(tmp_path, _records(request.param), axes=AXES, sweep_name="caveats")


def _line(text: str, trial: str) -> str:
    return next(line for line in text.splitlines() if f"| {trial} |" in line)


def test_frontier_parquet_says_which_epsilon_is_no_guarantee(written):
    frame = pd.read_parquet(written["frontier"]).set_index("trial_id")
    assert frame.loc["t-sim", "dp_guarantee"] == False  # noqa: E712 (an object column of True/False/None)
    assert frame.loc["t-sim", "dp_noise"] == REPRODUCIBLE_DESCRIPTION
    assert frame.loc["t-real", "dp_guarantee"] == True and frame.loc["t-8", "dp_guarantee"] == True  # noqa: E712
    assert pd.isna(frame.loc["t-inf", "dp_guarantee"])  # non-private: no claim to qualify
    # The choice at ε = 1 compared t-sim: the selection's ε is no guarantee either.
    assert frame.loc["t-sim", "selected"] and frame.loc["t-sim", "selection_dp_guarantee"] == False  # noqa: E712
    assert frame.loc["t-8", "selection_dp_guarantee"] == True  # noqa: E712


def test_report_marks_the_epsilon(written):
    report = written["report"].read_text(encoding="utf-8")
    best = report.split("## Best configuration per target ε")[1].split("## Pareto")[0]
    assert f"0.98 {CAVEAT}" in _line(best, "t-sim") and "no guarantee" in _line(best, "t-sim")
    assert "no guarantee" not in _line(best, "t-8") and "no guarantee" not in _line(best, "t-inf")
    assert "## ε without a guarantee" in report and "privacy.reproducible_noise=true" in report


def test_tables_mark_the_epsilon(written):
    tables = written["tables"].read_text(encoding="utf-8")
    privacy = tables.split("## Privacy loss vs ε")[1].split("## ")[0]
    assert f"0.98 {CAVEAT}" in _line(privacy, "t-sim") and "no guarantee" not in _line(privacy, "t-8")
    frame = paper_tables(pd.read_parquet(written["frontier"]))
    accuracy = frame["accuracy_vs_epsilon"].set_index("mechanism").loc["dpsgd"]
    assert accuracy["ε = 1"].endswith("†") and not accuracy["ε = 8"].endswith("†")
    assert "† the ε of this row's trial is no guarantee" in tables


def test_frontier_png_marks_the_trial(written):
    frame = pd.read_parquet(written["frontier"])
    figure = frontier_figure(frame, utility="val_balanced_accuracy", title="caveats")
    utility_panel = figure.axes[0]
    labels = [text.get_text() for text in utility_panel.get_legend().get_texts()]
    assert "ε is no guarantee: reproducible noise" in labels
    marked = next(c for c in utility_panel.collections if c.get_label() == "ε is no guarantee: reproducible noise")
    assert len(marked.get_offsets()) == 1  # t-sim alone
    assert "no guarantee" in figure.get_suptitle()


def test_secret_noise_alone_marks_nothing(tmp_path):
    records = [r for r in _records(False) if r["trial_id"] != "t-sim"]
    paths = write_frontier(tmp_path, records, axes=AXES, sweep_name="secret")
    for name in ("report", "tables"):
        assert "no guarantee" not in paths[name].read_text(encoding="utf-8")
