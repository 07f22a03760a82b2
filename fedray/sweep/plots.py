"""``frontier.png`` (utility and membership-inference success against the privacy spent) and
``learning_curves.png`` (test metrics per round).

Each figure is built by a ``*_figure`` function that returns the matplotlib
:class:`~matplotlib.figure.Figure` (to inspect or test); ``plot_*`` writes it
as a PNG.

Left panel: the utility (e.g. test balanced accuracy) against ``epsilon_spent``
on a log axis, per hospital or per record where every trial shares one
``privacy_unit`` (the x label says which). Each backbone (each backbone and mechanism, when a sweep holds
several mechanisms; each of those and number of hospitals K, when the trials
ran federations of several sizes, :func:`fedray.sweep.report.federation_keys`:
"how many hospitals does client-level DP need" is then one line per K) gets
one line through its best trial per target epsilon
(the max-utility one, i.e. what tuning would pick); every other trial is a
faint dot, and the overall Pareto-optimal trials are ringed. Where the frame
has the metric's std over cross-validation folds (``<metric>_std``), the best
trials carry error bars of ± 1 std (the y label says so); the faint dots carry
none. A trial whose ε is no guarantee (``dp_guarantee`` False: its noise was
reproducible from the config) is crossed in red, with its own legend entry,
and the title counts them. A dashed grey line marks chance, the expected score of a predictor that
ignores its input: 1/K for balanced accuracy ("chance (1/K)", K the number of
classes the caller passes; no line when it is unknown) and 0.5 for AUC. Plain
accuracy, precision, recall and F1 get no line: their chance level depends on
the class frequencies or on how often the guess names each class, which the
frame does not hold.

Right panel: the empirical ε lower bounds of those same best trials against
the ε the accountant spent, one marker and line style per series the audit
declares (``fedray.audit.columns.BOUND_SERIES``: its white-box, black-box and
held-out attack bounds, the first two also under f-DP, which assumes a
Gaussian trade-off curve), with the line y = x. A correct accountant keeps
every point on or below it (within the bounds' 95% confidence), but an f-DP
bound above it refutes only a Gaussian curve, not the accountant's (ε, δ);
the gap below it is how loose the audit, or the accountant, is. Faint lines
(``CEILING_SERIES``) mark what each audit could show at most, every guess
right: a bound at its ceiling is limited by the audit, not by the run. Non-private trials (x = ∞) have no
such line. Both axes share one symlog scale (logarithmic above a threshold a
decade below the smallest positive value shown, linear below it), so y = x is
a straight diagonal and a bound of 0, the common "the audit found nothing",
has a place: the "0" tick under the decades. The markers are hollow, one shape
per bound, and the (series, bound) lines are drawn side by side, shifted
sideways ``DODGE_POINTS`` apart and ``MAX_DODGE_POINTS`` at most in all (a
display offset: the data are unchanged), so bounds that coincide, above all at
0, stay visible. The bounds have no error bars: each is already a 95% lower
confidence bound (under cross-validation the smallest over the folds), and the
frame holds no spread for it.

A log axis has no place for epsilon = inf, so non-private trials are drawn at
``INF_FACTOR`` x the largest finite epsilon under a tick labelled "∞", past a
dotted break. Trials with epsilon_spent <= 0 cannot sit on a log axis and are
left out of the figure (they remain in the Parquet and the report).

Learning curves: test balanced accuracy (left) and test accuracy (right)
against the round (integer ticks), one line per completed trial labelled by
its swept params. A cross-validated trial's line is the mean over its folds
with a band of ± 1 std, and its label gives the number of folds; the title
says "mean ± std over folds" only when some trial has more than one fold.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator
from matplotlib.transforms import ScaledTranslation

from fedray.audit.columns import BOUND_SERIES, CEILING_SERIES
from fedray.results.run_dir import fold_count, fold_curve
from fedray.sweep.report import NO_GUARANTEE, PARAM_PREFIX, federation_keys, guarantee_caveat, reported_metric

INF_FACTOR = 10.0
INF_LABEL = "∞"
UNKNOWN_BACKBONE = "(backbone not recorded)"
CURVE_METRICS = (("test_balanced_accuracy", "test balanced accuracy"), ("test_accuracy", "test accuracy"))
DODGE_POINTS = 4.0  # sideways step between the audit panel's (series, bound) lines, in points
MAX_DODGE_POINTS = 24.0  # their widest spread: many lines share it, so that none strays far from its ε
MARGIN = 1.6  # the epsilon axes reach this factor beyond the outermost points


def plot_frontier(frame: pd.DataFrame, path: Path, *, utility: str, title: str, num_classes: int | None = None) -> None:
    """Write :func:`frontier_figure` into ``path`` (PNG)."""
    frontier_figure(frame, utility=utility, title=title, num_classes=num_classes).savefig(path, dpi=120, format="png")


def frontier_figure(frame: pd.DataFrame, *, utility: str, title: str, num_classes: int | None = None) -> Figure:
    """The two-panel frontier figure of a frontier frame; ``num_classes`` places balanced accuracy's chance line."""
    shown = plottable(frame, utility)
    fig = Figure(figsize=(12, 4.8), layout="tight")
    left, right = fig.subplots(1, 2)
    completed = int((frame["status"] == "completed").sum())
    unguaranteed = int(without_guarantee(shown).sum())
    caveat = f"; {unguaranteed} with an ε that is no guarantee (reproducible noise)" if unguaranteed else ""
    fig.suptitle(f"{title}: {len(shown)} of {completed} completed trials plotted ({len(frame) - completed} failed)"
                 f"{caveat}")
    if shown.empty:
        for ax in (left, right):
            _note(ax, "no completed trial with a utility and a positive ε spent")
    else:
        best = best_per_backbone_epsilon(shown, utility)
        colours = {name: f"C{i % 10}" for i, name in enumerate(series_order(shown))}
        _utility_panel(left, shown, best, utility, colours, num_classes)
        _audit_panel(right, best, colours)
    return fig


def plottable(frame: pd.DataFrame, utility: str) -> pd.DataFrame:
    """Completed trials with a utility and a positive epsilon spent: x position ``_x``, line ``series``."""
    eps = frame["epsilon_spent"]
    keep = (frame["status"] == "completed") & frame[utility].notna() & eps.notna() & (eps > 0)
    shown = frame[keep].copy()
    shown["backbone"] = shown["backbone"].fillna(UNKNOWN_BACKBONE).astype(str)
    mechanisms = shown["mechanism"].fillna("none").astype(str)
    several = mechanisms.groupby(shown["backbone"]).transform("nunique") > 1
    shown["series"] = shown["backbone"].where(~several, shown["backbone"] + " / " + mechanisms)
    units = shown["privacy_unit"] if "privacy_unit" in shown else pd.Series(None, index=shown.index)
    if units.dropna().nunique() > 1:  # ε per record and ε per hospital are different guarantees: say which
        shown["series"] = shown["series"] + " [ε per " + units.fillna("—").astype(str) + "]"
    if federation_keys(shown):  # a line per federation size: K is the setting, not a choice
        shown["series"] = shown["series"] + ", K = " + shown["hospitals"].astype(str) + " hospitals"
    shown["_x"] = _x_positions(shown["epsilon_spent"].to_numpy(float))
    return shown


def series_order(shown: pd.DataFrame) -> list[str]:
    """The series of :func:`plottable`'s rows by number of hospitals (K = 5 before K = 50), then name: the order
    of their colours and legend entries."""
    return list(shown.sort_values(["hospitals", "series"], na_position="last")["series"].unique())


def without_guarantee(frame: pd.DataFrame) -> pd.Series:
    """Rows whose finite ε is no guarantee (reproducible noise), as a bool Series."""
    return pd.Series([guarantee_caveat(row.get("dp_guarantee"), row.get("dp_noise"), row.get("epsilon_spent"))
                      is not None for _, row in frame.iterrows()], index=frame.index, dtype=bool)


def best_per_backbone_epsilon(shown: pd.DataFrame, utility: str) -> pd.DataFrame:
    """The max-utility trial of each (series, target epsilon), sorted along the epsilon axis."""
    best = shown.loc[shown.groupby(["series", "target_epsilon"], dropna=False)[utility].idxmax()]
    return best.sort_values(["series", "_x"])


def chance_level(metric: str, num_classes: int | None) -> tuple[float, str] | None:
    """(score, label) of a predictor that ignores its input, where the metric has one that the frame can tell."""
    if metric.endswith("balanced_accuracy"):
        return (1 / num_classes, f"chance (1/{num_classes})") if num_classes else None
    if metric.endswith("auc"):
        return 0.5, "chance (0.5)"
    return None


def _x_positions(eps: np.ndarray) -> np.ndarray:
    finite = eps[np.isfinite(eps)]
    inf_x = INF_FACTOR * finite.max() if finite.size else 1.0
    return np.where(np.isinf(eps), inf_x, eps)


def _utility_panel(ax, shown: pd.DataFrame, best: pd.DataFrame, utility: str, colours: dict,
                   num_classes: int | None) -> None:
    # Trials are chosen on ``utility`` (validation); the panel shows their held-out test counterpart.
    reported = reported_metric(utility, shown.columns)
    spread = f"{reported}_std"
    error_column = spread if spread in best and best[spread].notna().any() else None
    for name, colour in colours.items():
        trials = shown[shown["series"] == name]
        ax.scatter(trials["_x"], trials[reported], s=12, color=colour, alpha=0.3)
        line = best[best["series"] == name]
        _broken_line(ax, line, reported, "-o", colour, f"{name} (trial chosen per target ε on {utility})",
                     error_column=error_column)
    pareto = shown[shown["pareto_overall"]]
    ax.scatter(pareto["_x"], pareto[reported], s=170, facecolors="none", edgecolors="black", linewidths=1.4,
               label=f"Pareto-optimal on {utility}, within each privacy unit")
    unguaranteed = shown[without_guarantee(shown)]
    if not unguaranteed.empty:
        ax.scatter(unguaranteed["_x"], unguaranteed[reported], s=90, marker="x", color="red", linewidths=1.8,
                   zorder=5, label=f"ε is {NO_GUARANTEE}")
    chance = chance_level(reported, num_classes)
    if chance is not None:
        ax.axhline(chance[0], color="grey", linestyle="--", linewidth=1, label=chance[1])
    ax.set_ylabel(reported.replace("_", " ") + (" (bars: ± 1 std over CV folds)" if error_column else ""))
    ax.set_title("utility vs privacy spent")
    ax.set_xscale("log")
    _epsilon_axis(ax, shown["_x"].to_numpy(float), shown["epsilon_spent"].to_numpy(float))
    units = shown["privacy_unit"].dropna().unique() if "privacy_unit" in shown else []
    if len(units) == 1:
        ax.set_xlabel(f"ε spent per {units[0]} (log scale; ∞ = non-private)")
    ax.legend(fontsize=8)


def _audit_panel(ax, best: pd.DataFrame, colours: dict) -> None:
    bounds = [(column, style, label) for column, style, label in BOUND_SERIES
              if column in best and best[column].notna().any()]
    if not bounds:
        _note(ax, "no privacy audit in these trials")
        return
    x, eps = best["_x"].to_numpy(float), best["epsilon_spent"].to_numpy(float)
    values = best[[column for column, _, _ in bounds]].to_numpy(float)
    finite = np.sort(x[np.isfinite(eps)])
    # The linear part of the symlog scale lies below every positive value shown, where it holds only the zeros.
    smallest = np.concatenate([x, values[values > 0]]).min()
    threshold = 10.0 ** math.floor(math.log10(smallest / MARGIN))
    ax.set_xscale("symlog", linthresh=threshold)
    ax.set_yscale("symlog", linthresh=threshold)
    lines = [(name, colour, column, style, label) for name, colour in colours.items()
             for column, style, label in bounds if ((best["series"] == name) & best[column].notna()).any()]
    step = min(DODGE_POINTS, MAX_DODGE_POINTS / max(len(lines) - 1, 1))
    for i, (name, colour, column, style, label) in enumerate(lines):
        shift = ScaledTranslation((i - (len(lines) - 1) / 2) * step / 72, 0, ax.figure.dpi_scale_trans)
        line = best[(best["series"] == name) & best[column].notna()]
        _broken_line(ax, line, column, style, colour, f"{name}: {label}", transform=ax.transData + shift,
                     markersize=5, markerfacecolor="none")
    ceilings = [(column, style, label) for column, style, label in CEILING_SERIES
                if column in best and best[column].notna().any()]
    for column, style, label in ceilings:
        for name, colour in colours.items():
            line = best[(best["series"] == name) & best[column].notna()]
            if not line.empty:  # one legend entry per ceiling, on the first series that has it
                _broken_line(ax, line, column, style, colour, label, alpha=0.35, linewidth=0.8)
                label = None
    if finite.size:
        ends = np.array([finite[0] / MARGIN, finite[-1] * MARGIN])
        ax.plot(ends, ends, color="grey", linestyle="-", linewidth=0.8, label="y = x: the accountant's ε")
    highest = np.nanmax([np.nanmax(values), *(best[column].max() for column, _, _ in ceilings)])
    top = MARGIN * max(float(highest), finite[-1] if finite.size else 0.0, 10 * threshold)
    ax.set_ylim(-threshold / 2, top)  # below 0, so that markers at 0 are whole
    ticks = [0.0, *(t for t in _decades(threshold, top) if t <= top)]  # a tick above would stretch the axis
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_ylabel(f"empirical ε lower bound (95%; linear below {threshold:g})")
    ax.set_title("audited ε vs ε spent (markers shifted sideways)")
    _epsilon_axis(ax, x, eps)
    ax.legend(fontsize=7)


def _broken_line(ax, line: pd.DataFrame, column: str, style: str, colour: str, label: str, *,
                 error_column: str | None = None, transform=None, **marker_style) -> None:
    """``column`` against ``_x``: joined over finite epsilons, only dotted across the break to the ∞ point.

    ``error_column``: each point's ± error bar; ``transform``: where to draw (default the data coordinates).
    """
    transform = transform or ax.transData
    private = line[np.isfinite(line["epsilon_spent"])]
    public = line[np.isinf(line["epsilon_spent"])]
    if not private.empty:
        _points(ax, private, column, style, colour, label, error_column, transform=transform, **marker_style)
    if not public.empty:
        _points(ax, public, column, style.lstrip("-:"), colour, label if private.empty else None, error_column,
                transform=transform, **marker_style)
    if not private.empty and not public.empty:
        bridge = pd.concat([private.tail(1), public.head(1)])
        ax.plot(bridge["_x"], bridge[column], ":", color=colour, linewidth=0.8, transform=transform,
                alpha=marker_style.get("alpha"))


def _points(ax, part: pd.DataFrame, column: str, style: str, colour: str, label: str | None,
            error_column: str | None, **kwargs) -> None:
    if error_column is None:
        ax.plot(part["_x"], part[column], style, color=colour, label=label, **kwargs)
    else:
        ax.errorbar(part["_x"], part[column], yerr=part[error_column], fmt=style, color=colour, label=label,
                    capsize=3, **kwargs)


def _decades(low: float, high: float) -> list[float]:
    """The powers of ten from ``low``'s decade up to ``high``, at least two."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    return [10.0**p for p in range(first, max(last, first + 1) + 1)]


def _epsilon_axis(ax, x: np.ndarray, eps: np.ndarray) -> None:
    """Decade ticks over the finite epsilons and one "∞" tick for the non-private trials, on the x scale set."""
    ax.xaxis.set_minor_locator(NullLocator())
    finite = eps[np.isfinite(eps)]
    ticks = _decades(finite.min(), finite.max()) if finite.size else []
    labels = [f"{t:g}" for t in ticks]
    if np.isinf(eps).any():
        inf_x = float(x[np.isinf(eps)][0])
        if finite.size:
            ax.axvline(math.sqrt(finite.max() * inf_x), color="grey", linestyle=":", linewidth=0.8)
            kept = [i for i, t in enumerate(ticks) if t < inf_x / 2]
            ticks, labels = [ticks[i] for i in kept], [labels[i] for i in kept]
        ticks, labels = [*ticks, inf_x], [*labels, INF_LABEL]
    low_x, high_x = x.min() / MARGIN, x.max() * MARGIN
    shown = [(t, label) for t, label in zip(ticks, labels) if low_x <= t <= high_x]
    ax.set_xticks([t for t, _ in shown], [label for _, label in shown])
    ax.set_xlim(low_x, high_x)
    ax.set_xlabel("ε spent (log scale; ∞ = non-private)")
    ax.grid(alpha=0.3)


def _note(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")


def plot_learning_curves(frame: pd.DataFrame, rounds: pd.DataFrame, path: Path, *, title: str) -> None:
    """Write :func:`learning_curves_figure` into ``path`` (PNG)."""
    learning_curves_figure(frame, rounds, title=title).savefig(path, dpi=120, format="png")


def learning_curves_figure(frame: pd.DataFrame, rounds: pd.DataFrame, *, title: str) -> Figure:
    """The per-round test metrics of ``frame``'s completed trials, from ``rounds`` (sweep_rounds_frame)."""
    completed = set(frame.loc[frame["status"] == "completed", "trial_id"])
    shown = rounds[rounds["trial_id"].isin(completed)]
    trials = list(shown.groupby("trial_id", sort=False))
    folded = any(fold_count(trial) > 1 for _, trial in trials)
    fig = Figure(figsize=(12, 4.8), layout="tight")
    axes = fig.subplots(1, len(CURVE_METRICS))
    fig.suptitle(f"{title}: test metrics per round ({len(trials)} completed trials)"
                 + ("; cross-validated trials: mean ± std over folds" if folded else ""))
    params = [c for c in shown.columns if c.startswith(PARAM_PREFIX)]
    palette = matplotlib.colormaps["tab20"]
    for ax, (column, label) in zip(axes, CURVE_METRICS):
        if column not in shown or shown[column].isna().all():
            _note(ax, f"no {label} in the rounds")
            continue
        for i, (trial_id, trial) in enumerate(trials):
            folds = fold_count(trial)
            fold_text = f" ({folds} folds)" if folds > 1 else ""
            fold_curve(ax, trial, column, label=_trial_label(trial_id, trial.iloc[0], params) + fold_text,
                       marker="o", markersize=3, color=palette(i % 20))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def _trial_label(trial_id: str, row: pd.Series, params: list[str]) -> str:
    shown = [f"{c[len(PARAM_PREFIX):]}={_param_text(row[c])}" for c in params if not pd.isna(row[c])]
    return ", ".join(shown) or str(trial_id)


def _param_text(value) -> str:
    if isinstance(value, float):
        return INF_LABEL if math.isinf(value) else f"{value:g}"
    return str(value)
