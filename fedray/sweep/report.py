"""``report.md``: the sweep's frontier in a few Markdown tables a reviewer can read without pandas.

Sections: trial counts and a pointer to ``tables.md`` (the paper's tables,
fedray.sweep.tables); the best configuration per target epsilon (the
max-utility completed trial, i.e. what tuning on the validation metric picks)
with the ε of that choice (:mod:`fedray.sweep.selection`); where the trials
ran federations of different sizes, the utility per number of hospitals K and
target ε; the Pareto-optimal
trials; the failed trials with their errors; the trials whose ε is no
guarantee (reproducible noise); the audit flags across the sweep, those
raised per trial and those that survive Holm's family-wise correction
(:mod:`fedray.audit.family`); and a note that hyper-parameter tuning on
private data spends privacy of its own. Tables are written by a small helper
rather than ``DataFrame.to_markdown`` so the report needs no ``tabulate``.

Federations of different sizes are not alternatives to choose between: K is
the setting a result holds for, and under client-level DP (``privacy=dpfedavg``)
the unit of the guarantee is a different hospital at each K. So where the
completed trials hold more than one K (:func:`federation_keys`), the best
trial is chosen per (K, target ε), here, in ``tables.md``, the figure and the
frontier's ``selected`` rows, and a selection ε composes only the trials of
the same K.

An ε computed for a run whose noise is reproducible from the config
(``privacy.reproducible_noise=true``; the frontier's ``dp_guarantee`` is
False) is printed with :data:`NO_GUARANTEE` beside it, here and in
``tables.md``, and so is a selection ε that compared such a trial.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fedray.audit.columns import VIEW_NOTE, VIEW_TABLE
from fedray.audit.family import holm_rejections
from fedray.sweep.selection import is_private_rule, with_selection

# The test metrics the frontier keeps a mean (and, under k-fold CV, a std) column for: fedray.metrics'
# scalars but the loss (not imported from there: it would load scikit-learn into the tables CLI).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc")
# Swept axis <axis> is the frontier column param_<axis> (frontier.py imports this: it depends on this module).
PARAM_PREFIX = "param_"
DEFAULT_UTILITY = "val_balanced_accuracy"  # choose on validation; test is only reported
# Axes already shown through their resolved config column (backbone, lr) or as the table's key (epsilon).
_SHOWN_AXES = {"backbone", "lr", "epsilon"}
MISSING = "–"
DEFAULT_AUDIT_CONFIDENCE = 0.95  # conf/audit/default.yaml's audit.confidence

NO_GUARANTEE = "no guarantee: reproducible noise"
SELECTION_NO_GUARANTEE = "no guarantee: a trial compared had none"

TUNING_NOTE = (
    "Tuning hyper-parameters on private data itself consumes privacy: each trial's \"ε spent\" is that one "
    "trial's. The configuration chosen per target ε was picked by comparing K trials on the same private data, "
    "so publishing it costs the \"selection ε\" beside it (fedray.sweep.selection): under grid or random search "
    "the composition of the K trials compared (basic, or RDP where every ledger gives its RDP curve; a "
    "non-private trial among them makes it ∞), under adaptive search (optuna, a scheduler) the composition of "
    "every trial of the sweep, and under tune.selection=poisson or negative_binomial the private selection of "
    "Papernot & Steinke 2022 ('Hyperparameter tuning with Renyi differential privacy'), whose ε covers the one "
    "released trial, tuning included, as long as K and the other trials stay unpublished."
)
PRIVATE_NOTE = (
    "This sweep made a private selection ({rule}): only trial {trial} is covered by its selection ε. This "
    "report, frontier.parquet and trial_rounds.parquet list all the trials it ran: they are the operator's record. "
    "Publishing them, or their number K, voids that bound (the theorem covers the best trial alone, with K "
    "secret); each row's own ε and their composition would apply instead."
)
NO_GUARANTEE_NOTE = (
    "{n} completed trial(s) ran with privacy.reproducible_noise=true: their noise is a function of the config, so "
    "anyone holding it can regenerate and subtract it, and the ε the accountant computes for them is no "
    "guarantee (a simulation). Their ε is marked \"({caveat})\", and so is a selection ε that compared one of "
    "them. Rerun with privacy.reproducible_noise=false for a guarantee."
)


def render_report(frame: pd.DataFrame, *, sweep_name: str, utility: str,
                  audit_confidence: float = DEFAULT_AUDIT_CONFIDENCE) -> str:
    """The Markdown report of a frontier frame (one row per trial); its audits ran at ``audit_confidence``."""
    completed = frame[frame["status"] == "completed"]
    failed = frame[frame["status"] != "completed"]
    chosen = with_epsilon_text(chosen_rows(completed, utility))
    federations = federation_keys(completed)
    other_params = [c for c in frame.columns if c.startswith(PARAM_PREFIX) and c[len(PARAM_PREFIX):] not in _SHOWN_AXES]
    lines = [
        f"# Privacy-utility frontier: {sweep_name}",
        "",
        f"{len(frame)} trials: {len(completed)} completed, {len(failed)} failed. "
        f"Trials are chosen and ranked on `{utility}` (final round; choose on validation, report test: "
        "choosing on the test set would make the reported test numbers optimistic). The columns report the "
        "held-out test metrics of the chosen trials. ε is what the accountant reports as spent "
        "(max over hospitals; ∞ = non-private). The empirical ε lower bound comes from the strongest "
        "membership-inference attack. Every audit figure (the attacks' and the one-run bounds') is computed "
        "on real training records and released un-noised: all are outside the guarantee (so are the "
        "combined metrics of k-fold cross-validation, whose test folds train the other folds). The selection "
        "ε is what publishing the chosen trial costs, the comparison of the trials it was chosen from included.",
        "",
        "Accuracy vs ε, privacy loss vs ε and the other paper tables are in [tables.md](tables.md) "
        "(regenerate them with `python -m fedray.sweep.tables frontier.parquet`).",
        "",
        "## Best configuration per target ε" + (" and number of hospitals" if federations else ""),
        "",
        markdown_table(chosen, [
            *((key, key) for key in federations),
            ("target ε", "target_epsilon"), ("trial", "trial_id"), ("backbone", "backbone"), ("lr", "lr"),
            *((c[len(PARAM_PREFIX):], c) for c in other_params),
            (f"{utility} (chosen on)", utility), ("test acc.", "test_accuracy"), ("balanced acc.", "test_balanced_accuracy"),
            ("precision", "test_precision"), ("recall", "test_recall"), ("F1", "test_f1"),
            ("AUC", "test_auc"), ("ε spent", "_epsilon_spent"), ("selection ε", "_selection_epsilon"),
            ("selection δ", "selection_delta"), ("trials compared", "selection_trials"),
            ("selection rule", "selection_rule"), ("attack AUC", "attack_auc"),
            ("empirical ε lower bound", "attack_epsilon_lower_bound"),
        ]),
        "",
        *federation_lines(chosen, utility),
        "## Pareto-optimal trials",
        "",
        f"No other trial has a `{utility}` at least as high and an ε spent at least as low (one of them "
        "strictly). Trials without a spent ε or a utility are never optimal.",
        "",
        markdown_table(with_epsilon_text(completed[completed["pareto_overall"]].sort_values("epsilon_spent")), [
            ("trial", "trial_id"), ("backbone", "backbone"), ("lr", "lr"),
            *((c[len(PARAM_PREFIX):], c) for c in other_params),
            ("target ε", "target_epsilon"), ("ε spent", "_epsilon_spent"), (utility, utility),
            ("attack AUC", "attack_auc"),
        ]),
        "",
    ]
    if not failed.empty:
        params = [c for c in frame.columns if c.startswith(PARAM_PREFIX)]
        lines += ["## Failed trials", "",
                  markdown_table(failed, [("trial", "trial_id"), *((c[len(PARAM_PREFIX):], c) for c in params),
                                  ("error", "error")]), ""]
    unguaranteed = int(sum(guarantee_caveat(r.get("dp_guarantee"), r.get("dp_noise"), r.get("epsilon_spent"))
                           is not None for _, r in completed.iterrows()))
    if unguaranteed:
        lines += ["## ε without a guarantee", "", NO_GUARANTEE_NOTE.format(n=unguaranteed, caveat=NO_GUARANTEE), ""]
    lines += white_box_lines(completed)
    lines += family_wise_lines(frame, audit_confidence)
    lines += ["## Tuning consumes privacy", "", TUNING_NOTE, ""]
    private = chosen[[is_private_rule(rule) for rule in chosen.get("selection_rule", pd.Series(dtype=object))]] \
        if not chosen.empty else chosen
    if not private.empty:
        row = private.iloc[0]
        lines += [PRIVATE_NOTE.format(rule=row["selection_rule"], trial=row["trial_id"]), ""]
    return "\n".join(lines)


def white_box_lines(completed: pd.DataFrame) -> list[str]:
    """The white-box audit's bounds per trial under each view that saw it, with the most they could show
    (:data:`fedray.audit.columns.VIEW_TABLE`); nothing for a frontier without the step view."""
    first_step_column = VIEW_TABLE[2][1]
    if first_step_column not in completed or completed[first_step_column].isna().all():
        return []
    rows = with_epsilon_text(completed.sort_values(["target_epsilon", "trial_id"]))
    return ["## White-box audit: what each view certifies", "", VIEW_NOTE, "",
            markdown_table(rows, [("target ε", "target_epsilon"), ("trial", "trial_id"), ("lr", "lr"),
                                  ("ε spent", "_epsilon_spent"), *VIEW_TABLE]), ""]


def family_wise_lines(frame: pd.DataFrame, confidence: float) -> list[str]:
    """The section on the audit flags across the sweep: per trial, and after Holm's correction at 1 - confidence
    over the trials' ``audit_p_value``; nothing when no trial was audited (or the frontier predates the columns)."""
    flags = frame.get("audit_flags", pd.Series(dtype=object)).dropna()
    if flags.empty:
        return []
    alpha = 1.0 - confidence
    p_values = frame.get("audit_p_value", pd.Series(np.nan, index=frame.index)).astype("float64")
    survivors = frame["trial_id"][holm_rejections(p_values.to_numpy(), alpha)].tolist()
    flagged = int(flags.str.contains("violation:", regex=False).sum())  # not "consistent with noise: ..."
    named = f" (trial {', '.join(map(str, survivors))})" if survivors else ""
    return [
        "## Audit flags across the sweep", "",
        f"{flagged} of {len(flags)} audited trials raised a per-trial violation flag (an audit figure above what "
        f"the accountant's ε allows, each at {confidence:.0%} confidence). {len(survivors)} of the "
        f"{int(p_values.notna().sum())} trials whose one-run audits give a p-value "
        f"survive{'s' if len(survivors) == 1 else ''} Holm's family-wise "
        f"correction at α = {alpha:.3g}{named}. A flag that does not survive reads as the noise expected among "
        f"that many audits, each of which is a false alarm with probability up to α; one that survives is a "
        f"violation of the accountant's claim at {confidence:.0%} family-wise confidence.", "",
    ]


def chosen_rows(completed: pd.DataFrame, utility: str) -> pd.DataFrame:
    """The rows the sweep chose (the frontier's ``selected``), or for a frame without them the best per target ε
    (and K, :func:`federation_keys`) with its grid composition; sorted by K, then most private first."""
    keys = federation_keys(completed)
    if "selected" in completed and "selection_rule" in completed:
        chosen = completed[completed["selected"].fillna(False).astype(bool)]
        return chosen.sort_values([*keys, "target_epsilon"], na_position="last")
    return with_selection(best_per_target_epsilon(completed, utility, by=keys), completed, utility=utility, by=keys)


def federation_keys(completed: pd.DataFrame) -> tuple[str, ...]:
    """``("hospitals",)`` where the completed trials ran federations of more than one size K, else ``()``: the
    columns within whose values trials are compared (the module's docstring says why)."""
    if "hospitals" not in completed or completed["hospitals"].dropna().nunique() <= 1:
        return ()
    return ("hospitals",)


def reported_metric(utility: str, columns) -> str:
    """The held-out test twin of a validation ``utility`` (trials are chosen on validation, test is reported)
    where ``columns`` hold it, else ``utility`` itself."""
    twin = utility.replace("val_", "test_", 1)
    return twin if utility.startswith("val_") and twin in columns else utility


def federation_lines(chosen: pd.DataFrame, utility: str) -> list[str]:
    """The section "Utility per number of hospitals": one row per K (with m per round and q = m/K), one column
    per target ε (non-private last) of the chosen trial's reported test utility (± std over folds) and the ε it
    spent; nothing where the chosen rows hold one K (:func:`federation_keys`)."""
    if not federation_keys(chosen):
        return []
    reported = reported_metric(utility, chosen.columns)
    targets = [_cell(t) for t in chosen["target_epsilon"].drop_duplicates().sort_values(na_position="last")]
    header = ["hospitals K", "per round m", "q = m/K", *(f"target ε {t}" for t in targets)]
    rows = []
    for hospitals, trials in chosen.groupby("hospitals", sort=True):
        first = trials.iloc[0]
        cells = dict.fromkeys(targets, MISSING)
        for _, row in trials.iterrows():
            spread = row.get(f"{reported}_std")
            value = _cell(row[reported]) + ("" if _missing(spread) else f" ± {_cell(spread)}")
            cells[_cell(row["target_epsilon"])] = f"{value} (ε {row['_epsilon_spent']})"
        rows.append([_cell(hospitals), _cell(first.get("clients_per_round")), _cell(first.get("client_sampling_rate")),
                     *cells.values()])
    table = pd.DataFrame(rows, columns=header)
    return ["## Utility per number of hospitals", "",
            f"Test `{reported}` of the trial chosen on `{utility}` for each K and target ε, with the ε it spent "
            "(∞ = non-private: the reference each K's private runs are measured against).", "",
            markdown_table(table, [(c, c) for c in header]), ""]


def guarantee_caveat(guarantee, noise, epsilon=None) -> str | None:
    """:data:`NO_GUARANTEE` (or why else there is none) for a finite ε that is no guarantee; None otherwise."""
    if not isinstance(guarantee, (bool, np.bool_)) or guarantee:
        return None
    if epsilon is not None and not _missing(epsilon) and math.isinf(float(epsilon)):
        return None  # ∞ claims nothing already
    from fedray.privacy.randomness import REPRODUCIBLE_DESCRIPTION

    if noise is None or _missing(noise) or noise == REPRODUCIBLE_DESCRIPTION:
        return NO_GUARANTEE
    return f"no guarantee: {noise}"


def epsilon_text(epsilon, caveat: str | None) -> str:
    """ε as a report cell, with its caveat when it is no guarantee."""
    text = _cell(epsilon)
    return text if caveat is None or text == MISSING else f"{text} ({caveat})"


def with_epsilon_text(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` plus display columns ``_epsilon_spent`` and ``_selection_epsilon``, caveats included."""
    def spent(row):
        return epsilon_text(row.get("epsilon_spent"),
                            guarantee_caveat(row.get("dp_guarantee"), row.get("dp_noise"), row.get("epsilon_spent")))

    def selection(row):
        caveat = guarantee_caveat(row.get("selection_dp_guarantee"), None, row.get("selection_epsilon"))
        return epsilon_text(row.get("selection_epsilon"), caveat and SELECTION_NO_GUARANTEE)

    return rows.assign(_epsilon_spent=[spent(r) for _, r in rows.iterrows()],
                       _selection_epsilon=[selection(r) for _, r in rows.iterrows()])


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


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
