"""``report.md``: the sweep's frontier in a few Markdown tables a reviewer can read without pandas.

Sections: trial counts and a pointer to ``tables.md`` (the paper's tables,
fedray.sweep.tables); the best configuration per target epsilon (the
max-utility completed trial, i.e. what tuning on the test metric would pick);
the Pareto-optimal trials; the failed trials with their errors; and a note that
hyper-parameter tuning on private data spends privacy of its own. Tables are
written by a small helper rather than ``DataFrame.to_markdown`` so the report
needs no ``tabulate``.
"""

from __future__ import annotations

import math

import pandas as pd

# The test metrics the frontier keeps a mean (and, under k-fold CV, a std) column for: fedray.metrics'
# scalars but the loss (not imported from there: it would load scikit-learn into the tables CLI).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc")
# Swept axis <axis> is the frontier column param_<axis> (frontier.py imports this: it depends on this module).
PARAM_PREFIX = "param_"
DEFAULT_UTILITY = "val_balanced_accuracy"  # choose on validation; test is only reported
# Axes already shown through their resolved config column (backbone, lr) or as the table's key (epsilon).
_SHOWN_AXES = {"backbone", "lr", "epsilon"}
MISSING = "–"

TUNING_NOTE = (
    "Tuning hyper-parameters on private data itself consumes privacy: the epsilon in these tables is per "
    "trial. Selecting the best of K trials on the same private data costs more than any one trial's epsilon "
    "unless the selection is itself made private (e.g. Papernot & Steinke 2022, 'Hyperparameter tuning with "
    "Renyi differential privacy')."
)


def render_report(frame: pd.DataFrame, *, sweep_name: str, utility: str) -> str:
    """The Markdown report of a frontier frame (one row per trial)."""
    completed = frame[frame["status"] == "completed"]
    failed = frame[frame["status"] != "completed"]
    other_params = [c for c in frame.columns if c.startswith(PARAM_PREFIX) and c[len(PARAM_PREFIX):] not in _SHOWN_AXES]
    lines = [
        f"# Privacy-utility frontier: {sweep_name}",
        "",
        f"{len(frame)} trials: {len(completed)} completed, {len(failed)} failed. "
        f"Trials are chosen and ranked on `{utility}` (final round; choose on validation, report test: "
        "choosing on the test set would make the reported test numbers optimistic). The columns report the "
        "held-out test metrics of the chosen trials. ε is what the accountant reports as spent "
        "(max over hospitals; ∞ = non-private). The empirical ε lower bound comes from the strongest "
        "membership-inference attack.",
        "",
        "Accuracy vs ε, privacy loss vs ε and the other paper tables are in [tables.md](tables.md) "
        "(regenerate them with `python -m fedray.sweep.tables frontier.parquet`).",
        "",
        "## Best configuration per target ε",
        "",
        markdown_table(best_per_target_epsilon(completed, utility), [
            ("target ε", "target_epsilon"), ("trial", "trial_id"), ("backbone", "backbone"), ("lr", "lr"),
            *((c[len(PARAM_PREFIX):], c) for c in other_params),
            (f"{utility} (chosen on)", utility), ("test acc.", "test_accuracy"), ("balanced acc.", "test_balanced_accuracy"),
            ("precision", "test_precision"), ("recall", "test_recall"), ("F1", "test_f1"),
            ("AUC", "test_auc"), ("ε spent", "epsilon_spent"), ("attack AUC", "attack_auc"),
            ("empirical ε lower bound", "attack_epsilon_lower_bound"),
        ]),
        "",
        "## Pareto-optimal trials",
        "",
        f"No other trial has a `{utility}` at least as high and an ε spent at least as low (one of them "
        "strictly). Trials without a spent ε or a utility are never optimal.",
        "",
        markdown_table(completed[completed["pareto_overall"]].sort_values("epsilon_spent"), [
            ("trial", "trial_id"), ("backbone", "backbone"), ("lr", "lr"),
            *((c[len(PARAM_PREFIX):], c) for c in other_params),
            ("target ε", "target_epsilon"), ("ε spent", "epsilon_spent"), (utility, utility),
            ("attack AUC", "attack_auc"),
        ]),
        "",
    ]
    if not failed.empty:
        params = [c for c in frame.columns if c.startswith(PARAM_PREFIX)]
        lines += ["## Failed trials", "",
                  markdown_table(failed, [("trial", "trial_id"), *((c[len(PARAM_PREFIX):], c) for c in params),
                                  ("error", "error")]), ""]
    lines += ["## Tuning consumes privacy", "", TUNING_NOTE, ""]
    return "\n".join(lines)


def best_per_target_epsilon(completed: pd.DataFrame, utility: str, *, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """The max-utility trial for each target epsilon (within each value of the ``by`` columns), sorted by
    ``by`` and then most private first (non-private last). Trials without a utility are never picked."""
    scored = completed[completed[utility].notna()]
    if scored.empty:
        return scored
    keys = [*by, "target_epsilon"]
    best = scored.loc[scored.groupby(keys, dropna=False)[utility].idxmax()]
    return best.sort_values(keys, na_position="last")


def markdown_table(rows: pd.DataFrame, columns: list[tuple[str, str]]) -> str:
    """A GitHub-flavoured Markdown table of ``rows``: (header, column) pairs, cells via ``_cell``; "_none_" if
    there are no rows."""
    if rows.empty:
        return "_none_"
    header = "| " + " | ".join(_escape(h) for h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(row[c]) for _, c in columns) + " |" for _, row in rows.iterrows()]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return MISSING
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return _escape(str(value))


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
