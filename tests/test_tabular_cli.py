"""The tabular track through the CLI: CV runs of each mechanism family, and its bad-input cases."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from test_cli import raises_before_ray, run_cli

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
EHR = ["data=ehr_synthetic", "data.num_records=300", "data.consent_rate=0.8", "fl.partition.scheme=iid",
       "fl.rounds=2", "fl.local_epochs=1", "train.batch_size=8",
       "audit.reference_models=0", "fl.actors=2"]  # two actors, as a 2-core laptop's default


def test_two_fold_cv_run_reports_mean_std_consent_and_the_ledger(ray_session, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_cli(monkeypatch, [*EHR, "model=logreg", "privacy=dpsgd", "privacy.epsilon=2", "cv.folds=2",
                          f"hydra.run.dir={run_dir}", *QUIET])
    out = capsys.readouterr().out
    assert "mean±std over 2 folds" in out and "without informed consent were left out" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cv"]["folds"] == 2 and len(summary["cv"]["per_fold"]) == 2
    assert set(summary["final_test_std"]) >= {"accuracy", "precision", "recall", "f1", "auc"}
    consented = 300 - summary["data"]["without_consent"]
    assert 0 < summary["data"]["without_consent"] < 300
    assert sum(sizes["test"] for sizes in summary["data"]["per_fold_sizes"]) == consented  # each tested once
    privacy = summary["privacy"]
    assert privacy["mechanism"] == "dpsgd" and float(privacy["epsilon"]) <= 2.0 and "cv_note" in privacy
    for fold in (0, 1):
        assert json.loads((run_dir / f"fold_{fold}" / "summary.json").read_text())["data"]["fold"] == [fold, 2]
    assert set(pd.read_parquet(run_dir / "rounds.parquet")["fold"]) == {0, 1}


@pytest.mark.parametrize("args, mechanism, rounds, unit", [
    (["model=random_forest", "privacy=dp_tree", "privacy.epsilon=1"], "dp_tree", 1, "record"),  # fitted once
    (["model=mlp", "privacy=laplace_input", "privacy.epsilon=5"], "laplace_input", 2, "record (local DP)"),
])
def test_pure_epsilon_mechanisms_run_and_report_their_ledger(ray_session, tmp_path, monkeypatch, args, mechanism,
                                                             rounds, unit):
    run_dir = tmp_path / "run"
    run_cli(monkeypatch, [*EHR, *args, f"hydra.run.dir={run_dir}", *QUIET])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == rounds
    privacy = summary["privacy"]
    assert privacy["mechanism"] == mechanism and privacy["delta"] == 0.0 and privacy["unit"] == unit
    assert max(h["epsilon"] for h in privacy["hospitals"]) == pytest.approx(privacy["target_epsilon"])
    assert summary["audit"]["strongest"]["n_members"] > 0


@pytest.mark.slow  # a whole Tune sweep of 2-fold CV trials (-m slow); tests/sweep/test_tables.py covers the tables
def test_ehr_sweep_writes_the_paper_tables_from_the_frontier(ray_session, tmp_path, monkeypatch):
    from fedray.sweep.tables import paper_tables

    out_dir = tmp_path / "sweep"
    # One trial at a time: the second reuses the first's trial actor and its driver and hospital actors
    # (tune.reuse_actors) instead of starting as many new processes beside it.
    run_cli(monkeypatch, ["+sweep=ehr_tradeoff", *EHR, "cv.folds=2", "sweep.space.method=[logreg/dpsgd]",
                          "sweep.space.epsilon=[1.0,.inf]", "tune.max_concurrent_trials=1", f"tune.out_dir={out_dir}",
                          *QUIET])
    frame = pd.read_parquet(out_dir / "frontier.parquet")
    assert list(frame["status"]) == ["completed", "completed"] and set(frame["cv_folds"]) == {2}
    assert frame["test_accuracy_std"].notna().all() and frame["records_without_consent"].gt(0).all()
    tables = paper_tables(frame)
    assert {"privacy_loss_vs_epsilon", "accuracy_vs_epsilon"} <= set(tables)
    text = (out_dir / "tables.md").read_text()
    assert "Privacy loss vs ε" in text and "Accuracy vs ε" in text and "∞ (non-private)" in text


def _table(path, *, positives: int):
    """40 rows, two features, ``positives`` of them in class 1."""
    path.write_text("age,bp,outcome\n" + "".join(f"{30 + i},{110 + i % 7},{int(i < positives)}\n" for i in range(40)))
    return path


@pytest.mark.parametrize("case, fragments", [
    ("no_label_column", ["no column 'diagnosis'", "age, bp, outcome", "data.label_column"]),
    ("consent_list_names_unknown_record", ["consent_list", "names 1 record", "nobody"]),
    ("more_folds_than_smallest_class", ["cv.folds=9 is larger than the smallest class", "has 4"]),
    ("pair_that_does_not_exist", ["random_forest cannot be trained with privacy=dpsgd", "pairs that exist"]),
    ("image_model_on_a_table", ["model small_cnn takes images"]),
])
def test_tabular_bad_input_one_line_no_traceback(tmp_path, case, fragments):
    table = _table(tmp_path / "records.csv", positives=20)
    consent = tmp_path / "consent.txt"
    consent.write_text("table/000001\nnobody\n")
    on_table = ["data=table", f"data.path={table}", "data.label_column=outcome", "model=logreg"]
    args = {
        "no_label_column": [*on_table, "data.label_column=diagnosis"],
        "consent_list_names_unknown_record": [*on_table, f"data.consent_list={consent}"],
        "more_folds_than_smallest_class": ["data=table", f"data.path={_table(tmp_path / 'skew.csv', positives=4)}",
                                           "data.label_column=outcome", "model=logreg", "cv.folds=9"],
        "pair_that_does_not_exist": ["data=breast_cancer", "model=random_forest", "privacy=dpsgd"],
        "image_model_on_a_table": ["data=breast_cancer", "model=small_cnn"],
    }[case]
    message = raises_before_ray(args, tmp_path)
    for fragment in fragments:
        assert fragment in message
    assert not list(tmp_path.rglob("summary.json"))
