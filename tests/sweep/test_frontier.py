"""The frontier writer on synthetic trial records: columns, types, Pareto flags and the six files."""

from __future__ import annotations

import dataclasses
import json
import math
from functools import lru_cache

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_summary

import fedray.sweep.frontier as frontier_module
from fedray.privacy.accounting import RDP_ORDERS
from fedray.results import DataSummary, rounds_frame
from fedray.sweep.frontier import (FRONTIER_SCHEMA, HEADLINE_METRICS, SCHEMA_VERSION, frontier_frame,
                                   sweep_rounds_frame, write_frontier)
from fedray.sweep.report import TUNING_NOTE

AXES = ["backbone", "lr", "epsilon"]
PARAMS = ["param_backbone", "param_lr", "param_epsilon"]
INT_COLUMNS = ["image_size", "records_without_consent", "rounds", "local_epochs", "hospitals", "cv_folds", "seed",
               "batch_size", "best_val_round", "attack_n_members", "attack_n_nonmembers"]
TEST_STDS = [f"test_{m}_std" for m in HEADLINE_METRICS]
# Schema version 2's additions, read from CV / consent / DP-unit aware summaries; null for older summaries.
V2_COLUMNS = {"records_without_consent": pa.int64(), "cv_folds": pa.int64(), "test_precision": pa.float64(),
              "test_recall": pa.float64(), **dict.fromkeys(TEST_STDS, pa.float64()), "privacy_unit": pa.string(),
              "attack_auc_std": pa.float64(), "attack_advantage_std": pa.float64()}
# Schema version 4's additions: the canary audits and the audit's flags.
V4_COLUMNS = {**{f"canary_{kind}_{f}": pa.int64() for kind in ("input", "white_box")
                 for f in ("m", "included", "k_plus", "k_minus", "correct")},
              "canary_input_epsilon_lower_bound": pa.float64(), "canary_white_box_epsilon_lower_bound": pa.float64(),
              "canary_white_box_kind": pa.string(), "canary_gaussian_epsilon": pa.float64(),
              "canary_gaussian_epsilon_low": pa.float64(), "canary_gaussian_epsilon_high": pa.float64(),
              "audit_flag_count": pa.int64(), "audit_flags": pa.string()}
# Schema version 7's additions: each canary audit's f-DP bound and both ceilings.
V7_COLUMNS = {f"canary_{kind}_{f}": pa.float64() for kind in ("input", "white_box")
              for f in ("epsilon_lower_bound_fdp", "ceiling", "ceiling_fdp")}
FILES = ["frontier.parquet", "frontier.png", "learning_curves.png", "report.md", "tables.md", "trial_rounds.parquet"]


def _metrics(balanced: float) -> dict:
    return {"loss": 1.0 - balanced, "accuracy": balanced + 0.05, "balanced_accuracy": balanced, "precision": 0.5,
            "recall": 0.5, "f1": balanced - 0.05, "auc": balanced + 0.1, "confusion_matrix": [[1, 0], [0, 1]]}


@lru_cache(maxsize=None)
def ledger_rdp(sigmas: tuple[float, ...] = (1.3, 1.2), sample_rate: float = 0.1, steps: int = 30) -> tuple:
    """What a DP-SGD ledger's ``rdp`` holds: the max over hospitals of each one's curve (dp-accounting)."""
    import dp_accounting

    curves = []
    for sigma in sigmas:
        accountant = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
        accountant.compose(dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(sigma)), steps))
        curves.append(accountant._rdp)
    return tuple(float(max(values)) for values in zip(*curves))


def _record(trial_id: str, *, lr: float, epsilon: float, balanced: float, attack: bool = True) -> dict:
    private = math.isfinite(epsilon)
    privacy = {"mechanism": "dpsgd", "target_epsilon": epsilon, "epsilon": epsilon * 0.98, "delta": 1e-5,
               "accountant": "rdp", "max_noise_multiplier": 1.3, "rdp": list(ledger_rdp()),
               "hospitals": [{"hospital": k, "noise_multiplier": 1.3 - 0.1 * k, "sample_rate": 0.1, "steps": 30,
                              "epsilon": epsilon * 0.98, "delta": 1e-5, "accountant": "rdp", "max_grad_norm": 1.0}
                             for k in range(2)]} if private else \
        {"mechanism": "none", "target_epsilon": math.inf, "epsilon": math.inf, "delta": None}
    summary = {
        "mode": "federated", "model": "small_cnn", "rounds": 2, "final_test": _metrics(balanced),
        "final_val": _metrics(balanced),
        "best_val_round": 2, "best_val_round_test": _metrics(balanced), "privacy": privacy,
        "wall_seconds": 12.0, "gpu_hours": 0.0, "seconds_per_round": 6.0,
    }
    if attack:
        strongest = {"attack": "lira_offline", "auc": 0.55, "advantage": 0.1, "tpr_at_1pct_fpr": 0.02,
                     "tpr_at_0_1pct_fpr": 0.0, "epsilon_lower_bound": 0.3, "epsilon_lower_bound_point": 0.4,
                     "n_members": 100, "n_nonmembers": 100}
        summary["audit"] = {"strongest": strongest, "attacks": [strongest]}
    config = {"data": {"name": "synthetic", "image_size": 16}, "seed": 0, "mode": "federated",
              "fl": {"partition": {"scheme": "dirichlet", "alpha": 0.5}, "rounds": 2, "local_epochs": 1,
                     "num_hospitals": 2},
              "model": {"name": "small_cnn"}, "train": {"lr": lr, "batch_size": 8}}
    rounds = [{"round": r, "round_seconds": 6.0, "val": _metrics(balanced), "test": _metrics(balanced)}
              for r in (1, 2)]
    return {"trial_id": trial_id, "status": "completed", "error": None,
            "params": {"backbone": "small_cnn", "lr": lr, "epsilon": epsilon},
            "config": config, "summary": run_summary(**summary), "rounds": rounds_frame(rounds)}


def _with_cv(record: dict, folds: int = 3) -> dict:
    """``record`` as a k-fold cross-validated run: means in final_test, stds beside them, rounds per fold."""
    summary = record["summary"]
    summary.privacy["unit"] = "record"
    summary.privacy["cv_note"] = f"k-fold CV: each of the {folds} fold models spends epsilon on overlapping records"
    summary.audit["strongest_std"] = {"auc": 0.02, "advantage": 0.03, "tpr_at_1pct_fpr": 0.01}
    record["summary"] = dataclasses.replace(
        summary, final_test_std={"loss": 0.2, **{m: 0.01 * (i + 1) for i, m in enumerate(HEADLINE_METRICS)}},
        cv={"folds": folds, "per_fold": [summary.final_test] * folds}, data=DataSummary(without_consent=7))
    record["config"]["cv"] = {"folds": folds}
    record["rounds"] = pd.concat([record["rounds"].assign(fold=fold) for fold in range(folds)], ignore_index=True)
    return record


@pytest.fixture
def records() -> list[dict]:
    failed = {"trial_id": "t4", "status": "failed", "error": "RayActorError: hospital 1 died",
              "params": {"backbone": "small_cnn", "lr": 0.1, "epsilon": 1.0}, "config": None, "summary": None,
              "rounds": None}
    return [
        _record("t1", lr=0.05, epsilon=1.0, balanced=0.60),
        _record("t2", lr=0.05, epsilon=8.0, balanced=0.55),  # less useful and less private than t1
        _record("t3", lr=0.05, epsilon=math.inf, balanced=0.70, attack=False),
        failed,
    ]


def test_frontier_frame_columns_types_and_rows(records):
    frame = frontier_frame(records, axes=AXES, sweep_name="demo")
    fixed = FRONTIER_SCHEMA.names
    assert list(frame.columns) == fixed[:5] + PARAMS + fixed[5:]
    assert frame["trial_id"].tolist() == ["t1", "t2", "t3", "t4"]
    assert (frame["schema_version"] == SCHEMA_VERSION).all() and (frame["sweep"] == "demo").all()
    assert frame["param_backbone"].tolist() == ["small_cnn"] * 4
    assert frame["param_lr"].dtype == "float64" and frame["param_epsilon"].tolist()[2] == math.inf
    for column in INT_COLUMNS:
        assert frame[column].dtype == "Int64", column
    for column in ("test_balanced_accuracy", "target_epsilon", "epsilon_spent", "attack_auc", "gpu_hours"):
        assert frame[column].dtype == "float64", column
    assert frame["pareto_overall"].dtype == bool and frame["pareto_per_backbone"].dtype == bool
    t1 = frame.iloc[0]
    assert t1["backbone"] == "small_cnn" and t1["lr"] == 0.05 and t1["image_size"] == 16 and t1["alpha"] == 0.5
    assert t1["noise_multiplier"] == 1.3 and t1["accountant"] == "rdp" and t1["attack_n_members"] == 100
    assert t1["epsilon_spent"] == pytest.approx(0.98)


def test_non_private_and_failed_rows(records):
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    public = frame.loc["t3"]
    assert public["mechanism"] == "none" and public["epsilon_spent"] == math.inf
    assert public["noise_multiplier"] == 0.0 and pd.isna(public["accountant"]) and pd.isna(public["delta"])
    assert pd.isna(public["attack_auc"]) and pd.isna(public["attack_n_members"])  # audit disabled: missing
    failed = frame.loc["t4"]
    assert failed["status"] == "failed" and failed["error"].startswith("RayActorError")
    assert pd.isna(failed["test_balanced_accuracy"]) and pd.isna(failed["epsilon_spent"])
    assert pd.isna(failed["backbone"]) and pd.isna(failed["rounds"])
    assert failed["param_lr"] == 0.1  # the params are known even when the trial failed
    # t1 is the most private, t3 the most useful; t2 is dominated by t1; the failed trial is never optimal.
    assert frame["pareto_overall"].to_dict() == {"t1": True, "t2": False, "t3": True, "t4": False}
    assert frame["pareto_per_backbone"].to_dict() == frame["pareto_overall"].to_dict()


def test_ledger_from_entries_without_top_level_maxima(records):
    """Summaries that list hospitals under "entries" and give no max noise / accountant still fill both."""
    privacy = records[0]["summary"].privacy
    privacy["entries"] = privacy.pop("hospitals")
    del privacy["max_noise_multiplier"], privacy["accountant"]
    privacy["epsilon"] = "0.98"  # a JSON round trip may leave numbers as strings
    row = frontier_frame(records, axes=AXES).iloc[0]
    assert row["noise_multiplier"] == 1.3 and row["accountant"] == "rdp" and row["epsilon_spent"] == 0.98


def test_string_and_numeric_axes_are_typed_per_axis(records):
    records[0]["params"]["clip"] = "auto"
    records[1]["params"]["clip"] = 1.0
    frame = frontier_frame(records, axes=[*AXES, "clip"])
    assert frame["param_clip"].tolist()[:2] == ["auto", "1.0"] and frame["param_clip"].isna().tolist()[2:] == [True] * 2


def test_unknown_utility_is_rejected(records):
    with pytest.raises(ValueError, match="not a numeric frontier column"):
        frontier_frame(records, axes=AXES, utility="val_happiness")


def test_schema_version_6_rdp_column(records):
    """dp_rdp (version 6, replacing dp_event) is the ledger's curve as JSON, whatever the mechanism; null without
    one (non-private, failed, cross-validated: one fold's curve)."""
    assert SCHEMA_VERSION >= 6 and "dp_event" not in FRONTIER_SCHEMA.names
    assert FRONTIER_SCHEMA.field("dp_rdp").type == pa.string()
    records[1]["summary"].privacy["mechanism"] = "laplace_input"  # any mechanism's curve, e.g. a pure one
    records[1]["summary"].privacy["rdp"] = [2.0] * len(ledger_rdp())
    frame = frontier_frame([*records, _with_cv(_record("t5", lr=0.1, epsilon=1.0, balanced=0.5))],
                           axes=AXES).set_index("trial_id")
    cell = json.loads(frame.loc["t1", "dp_rdp"])
    assert cell == {"orders": list(RDP_ORDERS), "rdp": list(ledger_rdp())}
    assert json.loads(frame.loc["t2", "dp_rdp"])["rdp"] == [2.0] * len(RDP_ORDERS)
    assert frame.loc[["t3", "t4", "t5"], "dp_rdp"].isna().all()


def test_schema_version_4_columns_and_types(records):
    names = FRONTIER_SCHEMA.names
    assert [f"val_{m}" for m in HEADLINE_METRICS] == [n for n in names if n.startswith("val_")]
    assert FRONTIER_SCHEMA.field("strategy").type == pa.string()
    assert FRONTIER_SCHEMA.field("secure_aggregation").type == pa.bool_()
    for name, type_ in V2_COLUMNS.items():
        assert FRONTIER_SCHEMA.field(name).type == type_, name
    names = FRONTIER_SCHEMA.names
    # Each std block follows its means; the model column keeps its v1 name.
    means = [f"test_{m}" for m in HEADLINE_METRICS]
    assert names[names.index(means[0]):names.index(TEST_STDS[-1]) + 1] == [*means, "test_loss", *TEST_STDS]
    assert names.index("attack_n_nonmembers") + 1 == names.index("attack_auc_std")
    assert "backbone" in names and "mechanism" in names
    frame = frontier_frame([_with_cv(records[0]), *records[1:]], axes=AXES)
    numeric = {name: type_ for name, type_ in V2_COLUMNS.items() if type_ != pa.string()}
    for name, type_ in numeric.items():
        assert frame[name].dtype == ("Int64" if type_ == pa.int64() else "float64"), name
    assert frame["privacy_unit"].tolist()[0] == "record"


def _one_run(bound: float, m: int = 1000) -> dict:
    return {"epsilon_lower_bound": bound, "k_plus": 50, "k_minus": 50, "guesses": 100, "correct": 97, "m": m,
            "included": m // 2, "confidence": 0.95, "delta": 1e-5, "flags": []}


def test_version_4_canary_columns(records):
    audit = records[0]["summary"].audit
    audit["canaries"] = {"input": _one_run(0.2, m=100), "gradient": _one_run(0.9), "notes": {}}
    audit["flags"] = ["violation: made up for the test"]
    dpfedavg = records[1]["summary"].audit
    dpfedavg["canaries"] = {"clients": {**_one_run(0.0), "gaussian_estimate": {"epsilon": 6.5, "interval": [5.0, 8.0]}}}
    dpfedavg["flags"] = []
    for name, type_ in V4_COLUMNS.items():
        assert FRONTIER_SCHEMA.field(name).type == type_, name
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    t1, t2, t3 = frame.loc["t1"], frame.loc["t2"], frame.loc["t3"]
    assert (t1["canary_input_m"], t1["canary_input_included"], t1["canary_input_epsilon_lower_bound"]) == (100, 50, 0.2)
    assert t1["canary_white_box_kind"] == "gradient" and t1["canary_white_box_epsilon_lower_bound"] == 0.9
    white_box = [t1[f"canary_white_box_{f}"] for f in ("k_plus", "k_minus", "correct")]
    assert white_box == [50, 50, 97]
    assert t1["audit_flag_count"] == 1 and t1["audit_flags"].startswith("violation")
    assert t2["canary_white_box_kind"] == "clients" and pd.isna(t2["canary_input_m"])
    assert (t2["canary_gaussian_epsilon"], t2["canary_gaussian_epsilon_low"], t2["canary_gaussian_epsilon_high"]) == \
        (6.5, 5.0, 8.0)
    assert t2["audit_flag_count"] == 0 and pd.isna(t1["canary_gaussian_epsilon"])
    assert frame.loc[["t3", "t4"], list(V4_COLUMNS)].isna().all().all()  # no audit, and a failed trial: null
    assert pd.isna(t3["canary_white_box_kind"])


def test_version_7_fdp_bounds_and_ceilings(records):
    """Each canary audit's f-DP bound and ceilings; null in a report written before them, and in the f-DP ones
    under pure DP (δ = 0), where no Gaussian curve has a finite ε."""
    fdp = {"epsilon_lower_bound_fdp": 2.5, "mu_lower_bound_fdp": 0.7, "ceiling": 5.1, "ceiling_fdp": 8.8}
    records[0]["summary"].audit["canaries"] = {"input": {**_one_run(0.2, m=100), **fdp, "epsilon_lower_bound_fdp": None,
                                                         "ceiling_fdp": None},
                                               "gradient": {**_one_run(0.9), **fdp}, "notes": {}}
    records[1]["summary"].audit["canaries"] = {"clients": _one_run(0.0)}  # written before schema version 7
    assert SCHEMA_VERSION >= 7
    for name, type_ in V7_COLUMNS.items():
        assert FRONTIER_SCHEMA.field(name).type == type_, name
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    t1, t2 = frame.loc["t1"], frame.loc["t2"]
    assert [t1[f"canary_white_box_{f}"] for f in ("epsilon_lower_bound_fdp", "ceiling", "ceiling_fdp")] == \
        [2.5, 5.1, 8.8]
    assert t1["canary_input_ceiling"] == 5.1 and pd.isna(t1["canary_input_epsilon_lower_bound_fdp"])
    assert pd.isna(t1["canary_input_ceiling_fdp"])
    assert t2["canary_white_box_epsilon_lower_bound"] == 0.0 and t2[[f"canary_white_box_{f}" for f in (
        "epsilon_lower_bound_fdp", "ceiling", "ceiling_fdp")]].isna().all()


def test_version_8_step_view(records):
    """The step-level view's two audits, the sample-known one with its own ε; null where a run had no step view."""
    records[0]["summary"].audit["canaries"] = {
        "gradient": _one_run(0.9), "gradient_step": {**_one_run(1.4), "epsilon_lower_bound_fdp": 2.0},
        "gradient_step_sampled": {**_one_run(3.1), "published_sample_epsilon": 18.5}, "notes": {}}
    assert SCHEMA_VERSION >= 8
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    t1, t2 = frame.loc["t1"], frame.loc["t2"]
    assert (t1["canary_white_box_epsilon_lower_bound"], t1["canary_step_epsilon_lower_bound"],
            t1["canary_step_epsilon_lower_bound_fdp"], t1["canary_step_sampled_epsilon_lower_bound"],
            t1["canary_step_sampled_epsilon"]) == (0.9, 1.4, 2.0, 3.1, 18.5)
    assert t1["canary_step_m"] == 1000 and FRONTIER_SCHEMA.field("canary_step_m").type == pa.int64()
    assert pd.isna(t2["canary_step_epsilon_lower_bound"]) and pd.isna(t2["canary_step_sampled_epsilon"])


def test_version_8_audit_p_value(records):
    """A trial's canary audits as one p-value, the Bonferroni minimum over them; null where one audit has none (an
    infinite ε), in a report written before p-values, and without an audit."""
    records[0]["summary"].audit["canaries"] = {"input": {**_one_run(0.2), "p_value": 0.3},
                                               "gradient": {**_one_run(0.9), "p_value": 0.01}, "notes": {}}
    records[1]["summary"].audit["canaries"] = {"clients": _one_run(0.0)}  # written before schema version 8
    assert SCHEMA_VERSION >= 8 and FRONTIER_SCHEMA.field("audit_p_value").type == pa.float64()
    names = FRONTIER_SCHEMA.names
    assert names.index("audit_p_value") == names.index("audit_flag_count") + 1
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    assert frame.loc["t1", "audit_p_value"] == pytest.approx(0.02)
    assert frame.loc[["t2", "t3", "t4"], "audit_p_value"].isna().all()


def test_old_summaries_give_nulls_not_errors(records):
    """Summaries from before CV, consent filtering and DP units: their v2 columns are null, not guessed."""
    del records[1]["summary"].final_test["precision"]
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    absent = [c for c in V2_COLUMNS if c not in ("test_precision", "test_recall")]
    assert frame[absent].isna().all().all()
    assert frame.loc["t1", "test_precision"] == 0.5 and frame.loc["t1", "test_recall"] == 0.5
    assert pd.isna(frame.loc["t2", "test_precision"]) and pd.isna(frame.loc["t4", "test_recall"])


def test_cross_validated_summary_fills_the_std_columns(records):
    row = frontier_frame([_with_cv(records[0], folds=5)], axes=AXES).iloc[0]
    assert row["cv_folds"] == 5 and row["records_without_consent"] == 7 and row["privacy_unit"] == "record"
    assert [row[c] for c in TEST_STDS] == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert row["test_accuracy"] == pytest.approx(0.65)  # final_test holds the mean over folds
    assert row["attack_auc_std"] == 0.02 and row["attack_advantage_std"] == 0.03


def test_cv_folds_falls_back_to_the_config(records):
    record = _with_cv(records[0], folds=4)
    record["summary"] = dataclasses.replace(record["summary"], cv=None)
    assert frontier_frame([record], axes=AXES).iloc[0]["cv_folds"] == 4


def test_rounds_carry_their_fold_under_cross_validation(records, tmp_path):
    rounds = sweep_rounds_frame([_with_cv(records[0], folds=3), records[2]])
    assert list(rounds.columns[:7]) == ["trial_id", *PARAMS, "fold", "round", "round_seconds"]
    assert rounds["fold"].dtype == "Int64"
    assert rounds["fold"].tolist()[:6] == [0, 0, 1, 1, 2, 2] and rounds["fold"].isna().tolist()[6:] == [True] * 2
    paths = write_frontier(tmp_path, [_with_cv(records[0], folds=3), records[2]], axes=AXES, sweep_name="demo")
    assert pq.read_schema(paths["trial_rounds"]).field("fold").type == pa.int64()
    assert pd.read_parquet(paths["trial_rounds"])["fold"].dtype == "Int64"


def test_sweep_rounds_frame(records):
    rounds = sweep_rounds_frame(records)
    assert len(rounds) == 6  # 3 completed trials x 2 rounds; the failed trial has none
    assert list(rounds.columns[:6]) == ["trial_id", *PARAMS, "round", "round_seconds"]
    assert "test_balanced_accuracy" in rounds and "val_loss" in rounds and "test_confusion_matrix" not in rounds
    assert rounds["round"].tolist() == [1, 2] * 3
    assert "fold" not in rounds  # no round carries a fold without cross-validation


def test_write_frontier_writes_six_files(records, tmp_path):
    paths = write_frontier(tmp_path, records, axes=AXES, sweep_name="demo")
    assert set(paths) == {"frontier", "trial_rounds", "plot", "learning_curves", "tables", "report"}
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES  # no temporary files left
    back = pd.read_parquet(paths["frontier"])
    assert len(back) == 4 and back["trial_id"].tolist() == ["t1", "t2", "t3", "t4"]
    assert back["rounds"].dtype == "Int64" and back["pareto_overall"].tolist() == [True, False, True, False]
    table = pq.read_table(paths["frontier"])
    assert table.schema.field("epsilon_spent").type == FRONTIER_SCHEMA.field("epsilon_spent").type
    metadata = table.schema.metadata
    assert metadata[b"fedray.schema_version"] == str(SCHEMA_VERSION).encode() and metadata[b"fedray.sweep"] == b"demo"
    assert metadata[b"fedray.utility"] == b"val_balanced_accuracy"
    rounds_metadata = pq.read_table(paths["trial_rounds"]).schema.metadata
    assert rounds_metadata[b"fedray.schema_version"] == str(SCHEMA_VERSION).encode()
    for name, type_ in V2_COLUMNS.items():
        assert table.schema.field(name).type == type_, name
    assert len(pd.read_parquet(paths["trial_rounds"])) == 6
    for plot in ("plot", "learning_curves"):
        assert paths[plot].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Accuracy vs ε" in paths["tables"].read_text(encoding="utf-8")
    mtimes = {name: path.stat().st_mtime_ns for name, path in paths.items()}
    assert mtimes["report"] == max(mtimes.values())
    report = paths["report"].read_text(encoding="utf-8")
    assert "[tables.md](tables.md)" in report
    assert TUNING_NOTE in report and "Papernot & Steinke 2022" in report
    assert "## Best configuration per target ε" in report and "## Pareto-optimal trials" in report
    assert "3 completed, 1 failed" in report and "RayActorError" in report
    best_table = report.split("## Best configuration per target ε")[1].split("##")[0]
    assert [line.split(" | ")[1] for line in best_table.splitlines() if line.startswith("| 1 ") or
            line.startswith("| 8 ") or line.startswith("| ∞ ")] == ["t1", "t2", "t3"]
    assert "| precision | recall |" in best_table


def test_failed_tables_leave_no_report(records, tmp_path, monkeypatch):
    """report.md is written last: if tables.md cannot be written, there is no report claiming a whole frontier."""
    def broken(*args, **kwargs):
        raise RuntimeError("tables failed")
    monkeypatch.setattr(frontier_module, "render_tables", broken)
    with pytest.raises(RuntimeError, match="tables failed"):
        write_frontier(tmp_path, records, axes=AXES, sweep_name="demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frontier.parquet", "frontier.png", "learning_curves.png",
                                                          "trial_rounds.parquet"]


@pytest.mark.parametrize("keep", [["t3"], ["t4"], []], ids=["only-non-private", "only-failed", "empty"])
def test_write_frontier_degenerate_sweeps(records, tmp_path, keep):
    subset = [r for r in records if r["trial_id"] in keep]
    paths = write_frontier(tmp_path, subset, axes=AXES, sweep_name="demo")
    assert len(pd.read_parquet(paths["frontier"])) == len(subset)
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG" and paths["learning_curves"].read_bytes()[:4] == b"\x89PNG"
    assert paths["tables"].read_text(encoding="utf-8").startswith("# Paper tables")
    assert TUNING_NOTE in paths["report"].read_text(encoding="utf-8")
