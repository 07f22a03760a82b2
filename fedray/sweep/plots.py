"""``frontier.png`` (utility and membership-inference success against the privacy spent) and
``learning_curves.png`` (test metrics per round).

Left panel: the utility (e.g. test balanced accuracy) against ``epsilon_spent``
on a log axis. Each backbone (each backbone and mechanism, when a sweep holds
several mechanisms) gets one line through its best trial per target epsilon
(the max-utility one, i.e. what tuning would pick); every other trial is a
faint dot, and the overall Pareto-optimal trials are ringed. A trial whose ε
is no guarantee (``dp_guarantee`` False: its noise was reproducible from the
config) is crossed in red, with its own legend entry, and the title counts
them.
Right panel: the empirical ε lower bounds of those same best trials against
the ε the accountant spent, one line style per series the audit declares
(``fedray.audit.columns.BOUND_SERIES``: its white-box, black-box and held-out
attack bounds), with the line y = x. A correct accountant keeps every point on or below it (within the
bounds' 95% confidence); the gap below it is how loose the audit, or the
accountant, is. Non-private trials (x = ∞) have no such line.

A log axis has no place for epsilon = inf, so non-private trials are drawn at
``INF_FACTOR`` x the largest finite epsilon under a tick labelled "∞", past a
dotted break. Trials with epsilon_spent <= 0 cannot sit on a log axis and are
left out of the figure (they remain in the Parquet and the report).

Learning curves: test balanced accuracy (left) and test accuracy (right)
against the round, one line per completed trial labelled by its swept params.
Under k-fold cross-validation a trial's rounds repeat once per fold; each
round's point is the mean over the folds.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

from fedray.audit.columns import BOUND_SERIES  # noqa: E402
from fedray.sweep.report import NO_GUARANTEE, PARAM_PREFIX, guarantee_caveat  # noqa: E402

INF_FACTOR = 10.0
INF_LABEL = "∞"
UNKNOWN_BACKBONE = "(backbone not recorded)"
CURVE_METRICS = (("test_balanced_accuracy", "test balanced accuracy"), ("test_accuracy", "test accuracy"))


def plot_frontier(frame: pd.DataFrame, path: Path, *, utility: str, title: str) -> None:
    """Draw the two-panel frontier figure of a frontier frame into ``path`` (PNG)."""
    shown = plottable(frame, utility)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
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
        colours = {name: f"C{i % 10}" for i, name in enumerate(sorted(shown["series"].unique()))}
        _utility_panel(left, shown, best, utility, colours)
        _audit_panel(right, best, colours)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


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
    shown["_x"] = _x_positions(shown["epsilon_spent"].to_numpy(float))
    return shown


def without_guarantee(frame: pd.DataFrame) -> pd.Series:
    """Rows whose finite ε is no guarantee (reproducible noise), as a bool Series."""
    return pd.Series([guarantee_caveat(row.get("dp_guarantee"), row.get("dp_noise"), row.get("epsilon_spent"))
                      is not None for _, row in frame.iterrows()], index=frame.index, dtype=bool)


def best_per_backbone_epsilon(shown: pd.DataFrame, utility: str) -> pd.DataFrame:
    """The max-utility trial of each (series, target epsilon), sorted along the epsilon axis."""
    best = shown.loc[shown.groupby(["series", "target_epsilon"], dropna=False)[utility].idxmax()]
    return best.sort_values(["series", "_x"])


def _x_positions(eps: np.ndarray) -> np.ndarray:
    finite = eps[np.isfinite(eps)]
    inf_x = INF_FACTOR * finite.max() if finite.size else 1.0
    return np.where(np.isinf(eps), inf_x, eps)


def _utility_panel(ax, shown: pd.DataFrame, best: pd.DataFrame, utility: str, colours: dict) -> None:
    # Trials are chosen on ``utility`` (validation); the panel shows their held-out test counterpart.
    reported = utility.replace("val_", "test_", 1) if utility.startswith("val_") and \
        utility.replace("val_", "test_", 1) in shown else utility
    for name, colour in colours.items():
        trials = shown[shown["series"] == name]
        ax.scatter(trials["_x"], trials[reported], s=12, color=colour, alpha=0.3)
        line = best[best["series"] == name]
        _broken_line(ax, line, reported, "-o", colour, f"{name} (trial chosen per target ε on {utility})")
    pareto = shown[shown["pareto_overall"]]
    ax.scatter(pareto["_x"], pareto[reported], s=170, facecolors="none", edgecolors="black", linewidths=1.4,
               label=f"Pareto-optimal on {utility}, within each privacy unit")
    unguaranteed = shown[without_guarantee(shown)]
    if not unguaranteed.empty:
        ax.scatter(unguaranteed["_x"], unguaranteed[reported], s=90, marker="x", color="red", linewidths=1.8,
                   zorder=5, label=f"ε is {NO_GUARANTEE}")
    ax.set_ylabel(reported.replace("_", " "))
    ax.set_title("utility vs privacy spent")
    _epsilon_axis(ax, shown["_x"].to_numpy(float), shown["epsilon_spent"].to_numpy(float))
    ax.legend(fontsize=8)


def _audit_panel(ax, best: pd.DataFrame, colours: dict) -> None:
    bounds = [(column, style, label) for column, style, label in BOUND_SERIES
              if column in best and best[column].notna().any()]
    if not bounds:
        _note(ax, "no privacy audit in these trials")
        return
    for name, colour in colours.items():
        for column, style, label in bounds:
            line = best[(best["series"] == name) & best[column].notna()]
            _broken_line(ax, line, column, style, colour, f"{name}: {label}", markersize=4)
    eps = best["epsilon_spent"].to_numpy(float)
    top = max(float(np.nanmax(best[[c for c, _, _ in bounds]].to_numpy(float))), 1.0) * 1.15
    finite = np.sort(best["_x"].to_numpy(float)[np.isfinite(eps)])
    if finite.size:
        x = np.geomspace(finite[0] / 1.6, finite[-1] * 1.6, 50)
        ax.plot(x, x, color="grey", linestyle="-", linewidth=0.8, label="y = x: the accountant's ε")
    ax.set_ylim(0, top)
    ax.set_ylabel("empirical ε lower bound (95%)")
    ax.set_title("audited ε vs ε spent")
    _epsilon_axis(ax, best["_x"].to_numpy(float), eps)
    ax.legend(fontsize=7)


def _broken_line(ax, line: pd.DataFrame, column: str, style: str, colour: str, label: str, **kwargs) -> None:
    """``column`` against ``_x``: joined over finite epsilons, only dotted across the break to the ∞ point."""
    private = line[np.isfinite(line["epsilon_spent"])]
    public = line[np.isinf(line["epsilon_spent"])]
    if not private.empty:
        ax.plot(private["_x"], private[column], style, color=colour, label=label, **kwargs)
    if not public.empty:
        marker = style.lstrip("-")
        ax.plot(public["_x"], public[column], marker, color=colour, label=label if private.empty else None, **kwargs)
    if not private.empty and not public.empty:
        bridge = pd.concat([private.tail(1), public.head(1)])
        ax.plot(bridge["_x"], bridge[column], ":", color=colour, linewidth=0.8)


def _epsilon_axis(ax, x: np.ndarray, eps: np.ndarray) -> None:
    """Log x axis with decade ticks over the finite epsilons and one "∞" tick for the non-private trials."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    finite = eps[np.isfinite(eps)]
    ticks, labels = [], []
    if finite.size:
        low, high = math.floor(math.log10(finite.min())), math.ceil(math.log10(finite.max()))
        ticks = [10.0**p for p in range(low, max(high, low + 1) + 1)]
        labels = [f"{t:g}" for t in ticks]
    if np.isinf(eps).any():
        inf_x = float(x[np.isinf(eps)][0])
        if finite.size:
            ax.axvline(math.sqrt(finite.max() * inf_x), color="grey", linestyle=":", linewidth=0.8)
            kept = [i for i, t in enumerate(ticks) if t < inf_x / 2]
            ticks, labels = [ticks[i] for i in kept], [labels[i] for i in kept]
        ticks, labels = [*ticks, inf_x], [*labels, INF_LABEL]
    low_x, high_x = x.min() / 1.6, x.max() * 1.6
    shown = [(t, label) for t, label in zip(ticks, labels) if low_x <= t <= high_x]
    ax.set_xticks([t for t, _ in shown], [label for _, label in shown])
    ax.set_xlim(low_x, high_x)
    ax.set_xlabel("ε spent (log scale; ∞ = non-private)")
    ax.grid(alpha=0.3)


def _note(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")


def plot_learning_curves(frame: pd.DataFrame, rounds: pd.DataFrame, path: Path, *, title: str) -> None:
    """Draw the per-round test metrics of ``frame``'s completed trials from ``rounds`` (sweep_rounds_frame) into
    ``path`` (PNG)."""
    completed = set(frame.loc[frame["status"] == "completed", "trial_id"])
    shown = rounds[rounds["trial_id"].isin(completed)]
    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(12, 4.8))
    fig.suptitle(f"{title}: test metrics per round ({shown['trial_id'].nunique()} completed trials)")
    params = [c for c in shown.columns if c.startswith(PARAM_PREFIX)]
    for ax, (column, label) in zip(axes, CURVE_METRICS):
        if column not in shown or shown[column].isna().all():
            _note(ax, f"no {label} in the rounds")
            continue
        for i, (trial_id, trial) in enumerate(shown.groupby("trial_id", sort=False)):
            curve = trial.groupby("round")[column].mean()  # the mean over folds; a single split has one
            ax.plot(curve.index, curve.to_numpy(float), "-o", markersize=3, color=plt.cm.tab20(i % 20),
                    label=_trial_label(trial_id, trial.iloc[0], params))
        ax.set_xlabel("round (mean over folds under cross-validation)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _trial_label(trial_id: str, row: pd.Series, params: list[str]) -> str:
    shown = [f"{c[len(PARAM_PREFIX):]}={_param_text(row[c])}" for c in params if not pd.isna(row[c])]
    return ", ".join(shown) or str(trial_id)


def _param_text(value) -> str:
    if isinstance(value, float):
        return INF_LABEL if math.isinf(value) else f"{value:g}"
    return str(value)
