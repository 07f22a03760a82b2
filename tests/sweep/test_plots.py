"""What the frontier and learning-curve figures show, read from their matplotlib objects (no PNG, no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer

from test_frontier import _metrics, _record, _with_cv

from fedray.audit.columns import BOUND_SERIES, CEILING_SERIES
from fedray.results.run_dir import learning_curve_figure, rounds_frame
from fedray.sweep.frontier import frontier_frame, sweep_rounds_frame
from fedray.sweep.plots import chance_level, frontier_figure, learning_curves_figure

AXES = ["backbone", "lr", "epsilon"]
UTILITY = "val_balanced_accuracy"
BOUNDS = [column for column, _, _ in BOUND_SERIES]


def _records(*, cv: bool = False) -> list[dict]:
    records = [_record("t-1", lr=0.05, epsilon=1.0, balanced=0.6), _record("t-8", lr=0.05, epsilon=8.0, balanced=0.7),
               _record("t-inf", lr=0.05, epsilon=math.inf, balanced=0.8)]
    return [_with_cv(record) for record in records] if cv else records


def _frame(*, cv: bool = False) -> pd.DataFrame:
    return frontier_frame(_records(cv=cv), axes=AXES)


def _panels(frame: pd.DataFrame, **kwargs):
    fig = frontier_figure(frame, utility=UTILITY, title="t", **kwargs)
    return fig.axes[0], fig.axes[1]


def _labelled(ax, label: str):
    return [line for line in ax.get_lines() if line.get_label() == label]


def test_utility_panel_marks_chance_at_one_over_k():
    utility_panel, _ = _panels(_frame(), num_classes=4)
    (chance,) = _labelled(utility_panel, "chance (1/4)")
    assert list(chance.get_ydata()) == [0.25, 0.25]  # horizontal, at 1/K
    assert "chance (1/4)" in [text.get_text() for text in utility_panel.get_legend().get_texts()]


def test_no_chance_line_where_the_level_is_unknown():
    unknown_k, _ = _panels(_frame())
    assert not [line for line in unknown_k.get_lines() if line.get_label().startswith("chance")]
    assert chance_level("test_auc", None) == (0.5, "chance (0.5)")  # AUC's chance does not depend on K
    for metric in ("test_accuracy", "test_f1", "test_precision"):  # depends on class frequencies: no line
        assert chance_level(metric, 4) is None


def test_audit_panel_draws_y_equals_x_straight():
    _, audit = _panels(_frame())
    assert audit.get_xscale() == audit.get_yscale() == "symlog"
    assert audit.xaxis.get_transform().linthresh == audit.yaxis.get_transform().linthresh
    (diagonal,) = _labelled(audit, "y = x: the accountant's ε")
    assert np.array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    # y = x through the linear part near 0 and the decades above lies on one straight line on screen.
    points = audit.transData.transform([(t, t) for t in (0.0, 0.005, 0.3, 1.0, 8.0)])
    directions = points[1:] - points[0]
    cross = directions[:, 0] * directions[-1, 1] - directions[:, 1] * directions[-1, 0]
    assert np.allclose(cross, 0, atol=1e-6 * np.abs(directions).max() ** 2)


def test_zero_bounds_stay_visible():
    frame = _frame()
    frame.loc[frame["trial_id"] == "t-1", BOUNDS] = 0.0  # the audits found nothing at ε = 1
    _, audit = _panels(frame)
    assert audit.get_ylim()[0] < 0 < audit.get_ylim()[1]  # 0 is inside the axes, its markers whole
    at_zero = [line for line in audit.get_lines() if line.get_marker() not in ("None", "")
               and 0.0 in line.get_ydata()]
    assert len(at_zero) == len(BOUNDS)
    assert len({line.get_marker() for line in at_zero}) == len(BOUNDS)
    assert all(line.get_markerfacecolor() == "none" for line in at_zero)
    on_screen = [line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
                 for line in at_zero]
    zero_x = sorted(float(points[list(line.get_ydata()).index(0.0), 0]) for line, points in zip(at_zero, on_screen))
    assert min(np.diff(zero_x)) > 2  # pixels apart, side by side


def test_audit_panel_draws_the_fdp_bounds_and_faint_ceilings_and_tolerates_older_frontiers():
    frame = _frame()
    ceilings = [column for column, _, _ in CEILING_SERIES]
    frame[BOUNDS] = 0.5
    frame[ceilings] = 9.0
    _, audit = _panels(frame)
    labels = [line.get_label() for line in audit.get_lines()]
    assert any(label.endswith("white-box canaries, f-DP (Gaussian curve)") for label in labels)
    faint = [line for line in audit.get_lines() if 9.0 in line.get_ydata()]
    assert faint and all(line.get_alpha() == 0.35 for line in faint)
    assert {label for _, _, label in CEILING_SERIES} <= set(labels)  # one legend entry each
    assert audit.get_ylim()[1] > 9.0  # the ceilings are inside the axes
    older = _frame().drop(columns=[*ceilings, *(c for c in BOUNDS if c.endswith("_fdp"))])  # schema version 6
    older[[c for c in BOUNDS if c in older]] = 0.5
    _, audit = _panels(older)
    assert not [line for line in audit.get_lines() if "f-DP" in line.get_label()]


def test_error_bars_from_the_folds_std():
    utility_panel, audit = _panels(_frame(cv=True))
    bars = [c for c in utility_panel.containers if isinstance(c, ErrorbarContainer) and c.has_yerr]
    assert bars
    frame = _frame(cv=True)
    private = frame[np.isfinite(frame["epsilon_spent"])]
    (segments,) = [c.lines[2][0].get_segments() for c in bars if len(c.lines[2][0].get_segments()) == len(private)]
    half_lengths = sorted((segment[1, 1] - segment[0, 1]) / 2 for segment in segments)
    assert np.allclose(half_lengths, sorted(private["test_balanced_accuracy_std"]))
    assert not audit.containers  # the bounds have no spread to draw


def test_no_error_bars_without_cross_validation():
    utility_panel, _ = _panels(_frame())
    assert not any(isinstance(c, ErrorbarContainer) for c in utility_panel.containers)


def _integer_ticks(ax) -> bool:
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def _legend_texts(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]


@pytest.mark.parametrize("cv", [False, True], ids=["single-split", "3-fold"])
def test_sweep_learning_curves(cv):
    records = _records(cv=cv)
    fig = learning_curves_figure(frontier_frame(records, axes=AXES), sweep_rounds_frame(records, axes=AXES),
                                 title="t")
    texts = [fig.get_suptitle(), *_legend_texts(fig), *(ax.get_xlabel() for ax in fig.axes)]
    assert any("fold" in text for text in texts) == cv
    assert ("mean ± std over folds" in fig.get_suptitle()) == cv
    assert all(text.endswith(" (3 folds)") == cv for text in _legend_texts(fig))
    assert all(_integer_ticks(ax) for ax in fig.axes)
    bands = [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == (2 * len(records) if cv else 0)  # one band per trial and panel


def _run_rounds(folds: int) -> pd.DataFrame:
    """Three rounds per fold; fold f's balanced accuracy is 0.5 + 0.1 f."""
    return rounds_frame([{"round": r, "fold": f, "round_seconds": 1.0, "val": _metrics(0.5 + 0.1 * f),
                          "test": _metrics(0.5 + 0.1 * f)} for f in range(folds) for r in (1, 2, 3)])


def test_run_learning_curve_single_split():
    fig = learning_curve_figure(_run_rounds(1), title="federated · small_cnn · ε=1.00")
    assert "fold" not in fig.get_suptitle() and not any("fold" in text for text in _legend_texts(fig))
    assert all(_integer_ticks(ax) for ax in fig.axes)
    assert not [c for ax in fig.axes for c in ax.collections]


def test_run_learning_curve_bands_the_folds():
    fig = learning_curve_figure(_run_rounds(3), title="federated · small_cnn · ε=1.00")
    assert fig.get_suptitle().endswith("mean ± std over 3 folds")
    accuracy_panel = fig.axes[0]
    (test_balanced,) = _labelled(accuracy_panel, "test balanced acc.")
    assert np.allclose(test_balanced.get_ydata(), 0.6)  # the mean over folds 0.5, 0.6, 0.7
    (band,) = [c for c in accuracy_panel.collections
               if np.allclose(c.get_facecolor()[0][:3], to_rgb(test_balanced.get_color()))]
    at_round_2 = band.get_paths()[0].vertices
    heights = at_round_2[np.isclose(at_round_2[:, 0], 2.0), 1]
    assert np.allclose([heights.min(), heights.max()], [0.6 - 0.1, 0.6 + 0.1])  # sample std of 0.5, 0.6, 0.7
