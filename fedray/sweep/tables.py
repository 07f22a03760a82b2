"""``tables.md``: the seed paper's tables, computed from ``frontier.parquet`` alone.

    python -m fedray.sweep.tables sweeps/<name>/<time>/frontier.parquet [--write]

prints them as Markdown; ``--write`` also writes ``tables.md`` beside the
Parquet. ``write_frontier`` renders its ``tables.md`` from the Parquet it has
just written, so a sweep directory's tables can always be regenerated from it.

Only completed trials count. Where several trials share a row's key (model,
mechanism, target epsilon), e.g. over a learning-rate axis, the row shows the
trial the sweep reports: the one with the highest utility (the Parquet's
``fedray.utility``), as in ``report.best_per_target_epsilon``. Each "±" is the
standard deviation over cross-validation folds; a trial without CV shows its
mean alone. ``paper_tables`` returns, by key:

- ``privacy_loss_vs_epsilon``: per (model, mechanism, target ε), the ε and δ
  the accountant reports, the selection ε and δ of choosing the row's trial
  among the trials of its key (their number and the rule:
  :func:`fedray.sweep.selection.with_selection`; a private selection's row
  keeps the Parquet's), and the strongest membership-inference attack's AUC,
  advantage, balanced accuracy (1 + advantage) / 2 (the best threshold's
  (TPR + 1 - FPR) / 2), TPR at 1 % FPR and empirical ε lower bound.
- ``accuracy_vs_epsilon``: per (model, mechanism), one column per target ε
  (non-private last) of test accuracy.
- ``metrics_vs_epsilon``: the long form, accuracy, precision, recall, F1
  and AUC-ROC per (model, mechanism, target ε).
- ``utility_by_configuration``: for sweeps without an ε axis (at most one
  target ε, e.g. backbone x mode) this is the only table: every completed
  trial with its swept params, its utility and its attack AUC. The ε tables
  would pick one trial per model across configurations that are not
  alternatives (e.g. federated vs centralized), so they are left out.

Where the trials ran federations of more than one size, each number of
hospitals is a key of its own (a ``hospitals`` column after the mechanism):
a result holds for its K, which is not chosen (``report``'s docstring).

Cells are display strings: metrics to 3 decimals, ε and δ to 3 significant
digits, "∞" for infinity, "–" for missing. The numbers are in the Parquet.
An ε that is no guarantee (``dp_guarantee`` False: reproducible noise) reads
"(no guarantee: reproducible noise)"; the accuracy and metrics cells of its
trial carry "†", explained below the tables.
Frontiers of schema version 1 lack the std, precision and recall columns;
those cells are "–". Frontiers before schema version 3 have no validation
columns: their rows are chosen on the test metric, and the text above the
tables says so (:func:`selection_claim`); a sweep without an ε axis lists
every trial, and the text says none was chosen.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fedray.privacy.mechanisms import REGISTRY
from fedray.sweep.report import (
    DEFAULT_UTILITY,
    HEADLINE_METRICS,
    MISSING,
    PARAM_PREFIX,
    SELECTION_NO_GUARANTEE,
    best_per_target_epsilon,
    federation_keys,
    guarantee_caveat,
    markdown_table,
)
from fedray.sweep.selection import with_selection

NON_PRIVATE = "∞ (non-private)"
_METRICS = (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
            ("AUC-ROC", "auc"))
_PRIVACY_HEADERS = ["model", "mechanism", "target ε", "ε spent", "δ", "DP unit", "selection ε", "selection δ",
                    "trials compared", "selection rule", "attack", "attack AUC",
                    "attack advantage", "attack balanced acc.", "TPR @ 1% FPR", "empirical ε lower bound", "trial"]
_METRICS_HEADERS = ["model", "mechanism", "target ε", "folds", *(header for header, _ in _METRICS), "trial"]
_TITLES = {
    "privacy_loss_vs_epsilon": ("Privacy loss vs ε", "ε and δ as the accountant reports them for the row's trial; "
                                "the selection ε and δ of choosing it among the trials compared (their number and "
                                "the rule beside them; fedray.sweep.selection); the strongest "
                                "membership-inference attack's success, an empirical audit, not a guarantee."),
    "accuracy_vs_epsilon": ("Accuracy vs ε", "Test accuracy per target ε."),
    "metrics_vs_epsilon": ("Test metrics vs ε", "Precision, recall and F1 of the positive class (label 1) for "
                           "two classes, macro-averaged over classes otherwise; AUC-ROC one-vs-rest."),
    "utility_by_configuration": ("Utility by configuration", "Every completed trial of a sweep without an ε axis."),
}
# A frontier of schema version 1 lacks these; they read as missing.
_V2_COLUMNS = ("test_precision", "test_recall", "privacy_unit", "cv_folds", "attack_auc_std", "attack_advantage_std",
               *(f"test_{m}_std" for m in HEADLINE_METRICS))


def paper_tables(frame: pd.DataFrame, *, utility: str = DEFAULT_UTILITY) -> dict[str, pd.DataFrame]:
    """The paper's tables of a frontier frame (as read from ``frontier.parquet``), cells formatted.

    A frontier written before schema 3 has no validation columns: its rows are
    then chosen on the test counterpart of ``utility``, as they were written.
    """
    utility = selection_column(frame, utility)
    frame = frame.reindex(columns=[*frame.columns, *(c for c in _V2_COLUMNS if c not in frame.columns)])
    completed = frame[frame["status"] == "completed"]
    if completed["target_epsilon"].nunique(dropna=False) <= 1:
        return {"utility_by_configuration": _by_configuration(completed)}
    federations = federation_keys(completed)
    by = ("backbone", "mechanism", *federations)
    best = _ordered(with_selection(best_per_target_epsilon(completed, utility, by=by), completed, utility=utility,
                                   by=by), federations)
    tables = {
        "privacy_loss_vs_epsilon": pd.DataFrame([_privacy_row(row) for _, row in best.iterrows()],
                                                columns=_PRIVACY_HEADERS),
        "accuracy_vs_epsilon": _accuracy_wide(best, federations),
        "metrics_vs_epsilon": pd.DataFrame([_metrics_row(row) for _, row in best.iterrows()],
                                           columns=_METRICS_HEADERS),
    }
    for key in federations:  # each federation size is a row of its own, named after the mechanism
        for name in ("privacy_loss_vs_epsilon", "metrics_vs_epsilon"):
            tables[name].insert(2, key, [_text(value) for value in best[key]])
    return tables


def selection_column(frame: pd.DataFrame, utility: str) -> str:
    """``utility``, or for an older frontier without validation columns its ``test_`` counterpart."""
    if utility not in frame.columns and utility.startswith("val_"):
        return "test_" + utility[len("val_"):]
    return utility


def selection_claim(frame: pd.DataFrame, utility: str) -> str:
    """What choosing each row's trial on ``utility`` means for the test numbers shown, said from what the
    frontier holds: a ``val_`` column is validation (test only reported); a frontier without validation
    columns (schema version 1 or 2) could only be chosen on the test metric it reports; a ``test_`` column
    asked for on a frontier that has validation columns is the same optimistic choice, by request."""
    if utility.startswith("val_") and utility in frame.columns:
        return "chosen on validation, test reported"
    if not any(column.startswith("val_") for column in frame.columns):
        return ("no validation columns in this frontier, written before schema version 3: chosen on the test "
                "metric it reports, so the chosen rows' test numbers are optimistic")
    return "chosen on the test metric it reports, so the chosen rows' test numbers are optimistic"


def render_tables(frame: pd.DataFrame, *, utility: str = DEFAULT_UTILITY) -> str:
    """``paper_tables`` as one Markdown document."""
    utility = selection_column(frame, utility)
    completed = int((frame["status"] == "completed").sum())
    names = frame["sweep"].dropna()
    tables = paper_tables(frame, utility=utility)
    if "utility_by_configuration" in tables:  # every completed trial is a row: none is chosen over another
        chosen = "Every completed trial is listed, none chosen over another. "
    else:
        key = ", ".join(["model", "mechanism", *federation_keys(frame[frame["status"] == "completed"]), "target ε"])
        chosen = (f"Where several trials share a row's ({key}), the row is the one with the "
                  f"highest `{utility}` ({selection_claim(frame, utility)}). ")
    lines = [
        f"# Paper tables: {names.iloc[0] if len(names) else 'sweep'}",
        "",
        f"{completed} of {len(frame)} trials completed. {chosen}± is the standard deviation over "
        "cross-validation folds. Regenerate with `python -m fedray.sweep.tables frontier.parquet`.",
    ]
    for key, table in tables.items():
        title, caption = _TITLES[key]
        lines += ["", f"## {title}", "", caption, "", markdown_table(table, [(c, c) for c in table.columns])]
    if any(MARK in cell for table in tables.values() for cell in table.to_numpy().ravel() if isinstance(cell, str)):
        lines += ["", f"{MARK} {MARK_NOTE}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedray.sweep.tables",
                                     description="Print the paper's tables of a sweep's frontier.parquet.")
    parser.add_argument("frontier", type=Path, help="frontier.parquet written by a sweep")
    parser.add_argument("--write", action="store_true", help="also write tables.md next to the Parquet")
    parser.add_argument("--utility", help="column that picks each row's trial (default: the Parquet's fedray.utility)")
    args = parser.parse_args(argv)
    if not args.frontier.is_file():
        parser.error(f"{args.frontier}: no such file")
    metadata = pq.read_schema(args.frontier).metadata or {}
    utility = args.utility or metadata.get(b"fedray.utility", DEFAULT_UTILITY.encode()).decode()
    text = render_tables(pd.read_parquet(args.frontier), utility=utility)
    sys.stdout.write(text)
    if args.write:
        (args.frontier.parent / "tables.md").write_text(text, encoding="utf-8")
    return 0


def _privacy_row(row: pd.Series) -> list[str]:
    advantage, advantage_std = row["attack_advantage"], row["attack_advantage_std"]
    balanced = None if _missing(advantage) else (1 + advantage) / 2
    balanced_std = None if _missing(advantage_std) else advantage_std / 2
    selection_caveat = guarantee_caveat(row.get("selection_dp_guarantee"), None, row.get("selection_epsilon"))
    return [_text(row["backbone"]), _text(row["mechanism"]), _eps(row["target_epsilon"]), _spent(row),
            _eps(row["delta"]), _text(row["privacy_unit"]),
            _with_caveat(_eps(row.get("selection_epsilon")), selection_caveat and SELECTION_NO_GUARANTEE),
            _eps(row.get("selection_delta")), _text(row.get("selection_trials")), _text(row.get("selection_rule")),
            _text(row["attack_name"]),
            mean_std(row["attack_auc"], row["attack_auc_std"]), mean_std(advantage, advantage_std),
            mean_std(balanced, balanced_std), _number(row["attack_tpr_at_1pct_fpr"]),
            _eps(row["attack_epsilon_lower_bound"]), _text(row["trial_id"])]


def _metrics_row(row: pd.Series) -> list[str]:
    return [_text(row["backbone"]), _text(row["mechanism"]), _eps(row["target_epsilon"]) + _mark(row),
            _text(row["cv_folds"]),
            *(_metric(row, name) for _, name in _METRICS), _text(row["trial_id"])]


def _accuracy_wide(best: pd.DataFrame, federations: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per (model, mechanism, *federations), one column per target ε, finite ascending, then ∞, then
    unrecorded."""
    targets = best["target_epsilon"].drop_duplicates().sort_values(na_position="last").tolist()
    labels = {_target_label(t): t for t in targets}
    rows = {}
    for _, row in best.iterrows():
        key = (_text(row["backbone"]), _text(row["mechanism"]), *(_text(row[k]) for k in federations))
        rows.setdefault(key, dict.fromkeys(labels, MISSING))[_target_label(row["target_epsilon"])] = \
            _metric(row, "accuracy") + _mark(row)
    return pd.DataFrame([[*key, *cells.values()] for key, cells in rows.items()],
                        columns=["model", "mechanism", *federations, *labels])


def _by_configuration(completed: pd.DataFrame) -> pd.DataFrame:
    params = [c for c in completed.columns if c.startswith(PARAM_PREFIX)]
    metrics = (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("F1", "f1"),
               ("AUC-ROC", "auc"))
    rows = [[_text(row["trial_id"]), *(_param(row[c]) for c in params), *(_metric(row, m) for _, m in metrics),
             _spent(row), mean_std(row["attack_auc"], row["attack_auc_std"])]
            for _, row in completed.iterrows()]
    return pd.DataFrame(rows, columns=["trial", *(c[len(PARAM_PREFIX):] for c in params),
                                       *(header for header, _ in metrics), "ε spent", "attack AUC"])


def _ordered(best: pd.DataFrame, federations: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows by model, then mechanism in the registry's order (read now: a mechanism registered later sorts too;
    a name it does not hold comes last), then the number of hospitals where it varies, then target ε."""
    order = {name: i for i, name in enumerate(REGISTRY)}
    rank = best["mechanism"].map(order).astype(float).fillna(len(order))
    keys = ["backbone", "_rank", "mechanism", *federations, "target_epsilon"]
    return best.assign(_rank=rank).sort_values(keys, na_position="last", kind="stable").drop(columns="_rank")


# A cell whose trial's ε is no guarantee (reproducible noise) carries MARK; render_tables explains it below.
MARK = "†"
MARK_NOTE = ("the ε of this row's trial is no guarantee: its noise was reproducible from the config "
             "(privacy.reproducible_noise=true), a simulation.")


def _caveat(row: pd.Series) -> str | None:
    return guarantee_caveat(row.get("dp_guarantee"), row.get("dp_noise"), row.get("epsilon_spent"))


def _spent(row: pd.Series) -> str:
    """ε spent, with "(no guarantee: reproducible noise)" when it is none."""
    return _with_caveat(_eps(row["epsilon_spent"]), _caveat(row))


def _mark(row: pd.Series) -> str:
    return f" {MARK}" if _caveat(row) is not None else ""


def _with_caveat(text: str, caveat: str | None) -> str:
    return text if caveat is None or text == MISSING else f"{text} ({caveat})"


def _metric(row: pd.Series, name: str) -> str:
    return mean_std(row[f"test_{name}"], row[f"test_{name}_std"])


def mean_std(mean, std) -> str:
    """"mean ± std" to 3 decimals; the mean alone without a std; "–" without a mean.

    >>> mean_std(0.81234, 0.0129), mean_std(0.8, None), mean_std(None, 0.1)
    ('0.812 ± 0.013', '0.800', '–')
    """
    if _missing(mean):
        return MISSING
    return _number(mean) if _missing(std) else f"{_number(mean)} ± {_number(std)}"


def _target_label(value) -> str:
    if _missing(value):
        return f"ε = {MISSING}"
    return NON_PRIVATE if math.isinf(value) else f"ε = {_eps(value)}"


def _number(value) -> str:
    return _format(value, ".3f")


def _eps(value) -> str:
    return _format(value, ".3g")


def _param(value) -> str:
    return _format(value, ".3g") if isinstance(value, float) else _text(value)


def _format(value, spec: str) -> str:
    if _missing(value):
        return MISSING
    return "∞" if math.isinf(value) else format(float(value), spec)


def _text(value) -> str:
    return MISSING if _missing(value) else str(value)


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


if __name__ == "__main__":
    raise SystemExit(main())
