"""The paper's tables, computed from a written frontier.parquet: selection, layout and number formatting."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_summary

from fedray.results import DataSummary, rounds_frame
from fedray.sweep.frontier import HEADLINE_METRICS, write_frontier
from fedray.sweep.tables import NON_PRIVATE, main, mean_std, paper_tables, render_tables

AXES = ["model", "mechanism", "epsilon", "lr"]
SPENT = 0.987654  # fraction of the target the accountant reports as spent: 3 significant digits shown


def _trial(trial_id: str, *, model: str, mechanism: str, epsilon: float, accuracy: float, lr: float = 0.1,
           balanced: float | None = None, folds: int = 5, params: dict | None = None) -> dict:
    """A completed tabular trial; ``folds`` > 1 gives it std-over-folds values of 0.01 (attack: 0.02 / 0.04)."""
    means = {"loss": 0.5, "accuracy": accuracy, "balanced_accuracy": accuracy - 0.05 if balanced is None else balanced,
             "precision": 0.7, "recall": 0.6, "f1": 0.65, "auc": 0.8}
    if mechanism == "none":
        privacy = {"mechanism": "none", "target_epsilon": math.inf, "epsilon": math.inf, "delta": None}
    else:
        privacy = {"mechanism": mechanism, "target_epsilon": epsilon, "epsilon": epsilon * SPENT,
                   "delta": 0.0 if mechanism == "laplace_input" else 1e-5, "unit": "record",
                   "accountant": "rdp"}
    strongest = {"attack": "loss_threshold", "auc": 0.6, "advantage": 0.2, "tpr_at_1pct_fpr": 0.05,
                 "tpr_at_0_1pct_fpr": 0.0, "epsilon_lower_bound": 0.4321, "n_members": 50, "n_nonmembers": 50}
    summary = {"final_test": means, "final_val": means, "privacy": privacy, "data": DataSummary(without_consent=3),
               "audit": {"strongest": strongest}, "model": model}
    if folds > 1:
        summary["final_test_std"] = dict.fromkeys(HEADLINE_METRICS, 0.01)
        summary["cv"] = {"folds": folds, "per_fold": [means] * folds}
        summary["audit"]["strongest_std"] = {"auc": 0.02, "advantage": 0.04}
    config = {"data": {"name": "heart"}, "model": {"name": model}, "privacy": {"name": mechanism},
              "cv": {"folds": folds}, "train": {"lr": lr}, "mode": "federated"}
    curve = {"accuracy": accuracy, "balanced_accuracy": means["balanced_accuracy"]}
    rounds = [{"fold": fold, "round": r, "val": curve, "test": curve} for fold in range(folds) for r in (1, 2)]
    return {"trial_id": trial_id, "status": "completed", "error": None,
            "params": params or {"model": model, "mechanism": mechanism, "epsilon": epsilon, "lr": lr},
            "config": config, "summary": run_summary(**summary), "rounds": rounds_frame(rounds)}


def _records() -> list[dict]:
    failed = {"trial_id": "f1", "status": "failed", "error": "ValueError: boom",
              "params": {"model": "logreg", "mechanism": "dpsgd", "epsilon": 0.1, "lr": 1.0}, "config": None,
              "summary": None, "rounds": None}
    return [
        _trial("lr-none", model="logreg", mechanism="none", epsilon=math.inf, accuracy=0.85),
        _trial("lr-dp-0.1", model="logreg", mechanism="dpsgd", epsilon=0.1, accuracy=0.70),
        # Same (model, mechanism, ε): the sweep reports the higher balanced accuracy, not the higher accuracy.
        _trial("lr-dp-1-a", model="logreg", mechanism="dpsgd", epsilon=1.0, accuracy=0.80, balanced=0.70),
        _trial("lr-dp-1-b", model="logreg", mechanism="dpsgd", epsilon=1.0, accuracy=0.78, balanced=0.75, lr=0.01),
        _trial("lr-lap-1", model="logreg", mechanism="laplace_input", epsilon=1.0, accuracy=0.60),
        _trial("rf-tree-1", model="random_forest", mechanism="dp_tree", epsilon=1.0, accuracy=0.72, folds=1),
        failed,
    ]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The sweep's frontier files (written once: tests only read them), and its frame read back from the Parquet."""
    paths = write_frontier(tmp_path_factory.mktemp("sweep"), _records(), axes=AXES, sweep_name="tabular")
    return paths, pd.read_parquet(paths["frontier"])


def test_accuracy_vs_epsilon_layout_from_parquet(written):
    table = paper_tables(written[1])["accuracy_vs_epsilon"]
    assert list(table.columns) == ["model", "mechanism", "ε = 0.1", "ε = 1", NON_PRIVATE]  # ∞ last
    assert table.values.tolist() == [
        ["logreg", "none", "–", "–", "0.850 ± 0.010"],
        ["logreg", "dpsgd", "0.700 ± 0.010", "0.780 ± 0.010", "–"],
        ["logreg", "laplace_input", "–", "0.600 ± 0.010", "–"],
        ["random_forest", "dp_tree", "–", "0.720", "–"],  # no CV: the mean alone
    ]


def test_best_trial_per_model_mechanism_and_epsilon(written):
    tables = paper_tables(written[1])
    for key in ("privacy_loss_vs_epsilon", "metrics_vs_epsilon"):
        assert tables[key]["trial"].tolist() == ["lr-none", "lr-dp-0.1", "lr-dp-1-b", "lr-lap-1", "rf-tree-1"], key
    # Another utility picks the other trial of the tied key.
    by_accuracy = paper_tables(written[1], utility="test_accuracy")["metrics_vs_epsilon"]
    assert "lr-dp-1-a" in by_accuracy["trial"].tolist() and "lr-dp-1-b" not in by_accuracy["trial"].tolist()


def test_privacy_loss_vs_epsilon_cells(written):
    table = paper_tables(written[1])["privacy_loss_vs_epsilon"].set_index("trial")
    dp = table.loc["lr-dp-0.1"]
    assert (dp["target ε"], dp["ε spent"], dp["δ"], dp["DP unit"]) == ("0.1", "0.0988", "1e-05", "record")
    assert dp["attack AUC"] == "0.600 ± 0.020" and dp["attack advantage"] == "0.200 ± 0.040"
    assert dp["attack balanced acc."] == "0.600 ± 0.020"  # (1 + advantage) / 2
    assert dp["TPR @ 1% FPR"] == "0.050" and dp["empirical ε lower bound"] == "0.432"
    laplace = table.loc["lr-lap-1"]
    assert laplace["δ"] == "0" and laplace["ε spent"] == "0.988"  # pure ε-local DP
    public = table.loc["lr-none"]
    assert (public["target ε"], public["ε spent"], public["δ"], public["DP unit"]) == ("∞", "∞", "–", "–")
    assert table.loc["rf-tree-1", "attack AUC"] == "0.600"


def test_metrics_vs_epsilon_long_table(written):
    table = paper_tables(written[1])["metrics_vs_epsilon"]
    assert list(table.columns) == ["model", "mechanism", "target ε", "folds", "accuracy", "precision", "recall",
                                   "F1", "AUC-ROC", "trial"]
    assert table.iloc[2].tolist() == ["logreg", "dpsgd", "1", "5", "0.780 ± 0.010", "0.700 ± 0.010",
                                      "0.600 ± 0.010", "0.650 ± 0.010", "0.800 ± 0.010", "lr-dp-1-b"]


def test_utility_by_configuration_only_without_an_epsilon_axis(written, tmp_path):
    assert "utility_by_configuration" not in paper_tables(written[1])
    configs = [_trial(f"{model}-{mode}", model=model, mechanism="dpsgd", epsilon=1.0, accuracy=0.7,
                      params={"backbone": model, "mode": mode}, folds=1 if model == "mlp" else 5)
               for model in ("mlp", "logreg") for mode in ("federated", "centralized")]
    path = write_frontier(tmp_path, configs, axes=["backbone", "mode"], sweep_name="modes")["frontier"]
    tables = paper_tables(pd.read_parquet(path))
    assert "Every completed trial is listed, none chosen over another." in render_tables(pd.read_parquet(path))
    assert list(tables) == ["utility_by_configuration"]  # one ε: the ε tables would mix unlike configurations
    table = tables["utility_by_configuration"]
    assert list(table.columns) == ["trial", "backbone", "mode", "accuracy", "balanced accuracy", "F1",
                                   "AUC-ROC", "ε spent", "attack AUC"]
    assert table.iloc[0].tolist()[:8] == ["mlp-federated", "mlp", "federated", "0.700", "0.650", "0.650", "0.800",
                                          "0.988"]
    assert table.iloc[2]["accuracy"] == "0.700 ± 0.010"


def test_schema_version_1_frontier_still_renders(written):
    """A Parquet written before CV support has no std, precision or recall columns: those cells are "–"."""
    v1 = written[1].drop(columns=[c for c in written[1].columns if c.endswith("_std") or c in
                                  ("test_precision", "test_recall", "cv_folds", "privacy_unit")])
    tables = paper_tables(v1)
    assert tables["accuracy_vs_epsilon"].iloc[0].tolist() == ["logreg", "none", "–", "–", "0.850"]
    assert tables["metrics_vs_epsilon"].iloc[0][["folds", "precision"]].tolist() == ["–", "–"]


def test_selection_claim_says_what_the_frontier_holds(written):
    """Only a frontier with validation columns is "chosen on validation, test reported"; an older one (schema
    version 1 or 2, no val_ columns) was chosen on the test metric it reports, and its tables.md says so."""
    frame = written[1]
    assert "(chosen on validation, test reported)" in render_tables(frame)
    older = frame.drop(columns=[c for c in frame.columns if c.startswith("val_")])
    text = render_tables(older, utility="test_balanced_accuracy")
    assert "chosen on validation" not in text
    assert ("the highest `test_balanced_accuracy` (no validation columns in this frontier, written before schema "
            "version 3: chosen on the test metric it reports, so the chosen rows' test numbers are optimistic)") in text
    # The default utility (a val_ column) falls back to its test counterpart, and the claim follows it.
    assert render_tables(older) == text
    # Choosing on test by request, where validation columns exist, is not called validation either.
    by_test = render_tables(frame, utility="test_accuracy")
    assert "chosen on validation" not in by_test and "chosen on the test metric it reports" in by_test


def test_mean_std_formatting():
    assert mean_std(0.81234, 0.0129) == "0.812 ± 0.013"
    assert mean_std(0.8, None) == "0.800" and mean_std(0.8, float("nan")) == "0.800"
    assert mean_std(None, 0.1) == "–" and mean_std(pd.NA, pd.NA) == "–"


def test_tables_md_is_rendered_from_the_parquet(written):
    paths, frame = written
    assert paths["tables"].read_text(encoding="utf-8") == render_tables(frame)


def test_main_prints_both_paper_tables_and_writes_tables_md(written, tmp_path, capsys):
    parquet = Path(shutil.copy(written[0]["frontier"], tmp_path))
    assert main([str(parquet)]) == 0
    printed = capsys.readouterr().out
    assert "## Privacy loss vs ε" in printed and "## Accuracy vs ε" in printed and "lr-dp-1-b" in printed
    assert not (tmp_path / "tables.md").exists()
    assert main([str(parquet), "--write"]) == 0
    assert (tmp_path / "tables.md").read_text(encoding="utf-8") == capsys.readouterr().out == printed
    assert printed == written[0]["tables"].read_text(encoding="utf-8")  # the utility comes from the Parquet


def test_module_entry_point(written):
    done = subprocess.run([sys.executable, "-m", "fedray.sweep.tables", str(written[0]["frontier"])],
                          capture_output=True, text=True, check=True)
    assert "## Privacy loss vs ε" in done.stdout and f"| {NON_PRIVATE} |" in done.stdout


def test_rows_follow_the_registry_order_so_a_registered_mechanism_sorts_too(monkeypatch):
    """Mechanisms sort in fedray.privacy.mechanisms.REGISTRY's order, read when the table is made: one registered
    after import (here "toy") follows the built-in ones, and a name the registry does not hold comes last."""
    import fedray.sweep.tables as tables_module
    from fedray.privacy.mechanisms import REGISTRY

    monkeypatch.setitem(REGISTRY, "toy", object)
    names = ["unregistered", "toy", "dp_tree", "dpsgd", "none", "laplace_input", "dpfedavg"]
    best = pd.DataFrame({"backbone": "logreg", "mechanism": names, "target_epsilon": 1.0})
    ordered = tables_module._ordered(best)["mechanism"].tolist()
    assert ordered == [*(n for n in REGISTRY if n in names), "unregistered"]
    assert ordered[:5] == ["none", "dpsgd", "dpfedavg", "laplace_input", "dp_tree"] and ordered[5] == "toy"
