"""The federation's size as a sweep axis: the coupled ``federation`` axis (K hospitals / m per round), the
frontier's sampling columns, one choice per K in the report and tables, and one line per K in the figure (no Ray)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from test_frontier import _record

from fedray.config import compose_config, replace
from fedray.errors import FedrayError
from fedray.privacy.mechanisms import check_mechanism
from fedray.strategies.sampling import client_sampling_rate
from fedray.sweep.frontier import frontier_frame
from fedray.sweep.plots import INF_LABEL, frontier_figure, plottable
from fedray.sweep.report import federation_keys, render_report
from fedray.sweep.space import axis_paths, grid, trial_config, trial_overrides
from fedray.sweep.tables import paper_tables

SWEEP = ["+sweep=federation_size"]
AXES = ["federation", "epsilon"]
UTILITY = "val_auc"
FEDERATIONS = ((5, 5), (50, 50), (500, 50))
EPSILONS = (1.0, 10.0, math.inf)


@pytest.fixture(scope="module")
def sweep_cfg(tmp_path_factory):
    return compose_config(SWEEP, run_dir=tmp_path_factory.mktemp("run"))


def test_federation_axis_sets_hospitals_and_clients_per_round_together(sweep_cfg):
    paths = axis_paths(sweep_cfg.sweep, sweep_cfg)
    assert paths["federation"] == "fl.num_hospitals+fl.clients_per_round"
    assert trial_overrides(["fl.num_hospitals=7", "fl.rounds=2"], {"federation": "500/50"}, paths) == \
        ["fl.rounds=2", "fl.num_hospitals=500", "fl.clients_per_round=50"]  # the axis decides K
    cfg = trial_config(SWEEP, {"federation": "50/null", "epsilon": 1.0}, paths)
    assert (cfg.fl.num_hospitals, cfg.fl.clients_per_round) == (50, None)  # null: every hospital


def test_reference_sweep_keeps_the_patients_and_couples_m_to_k(sweep_cfg):
    """K × ε: each K with its own m (every hospital up to K = 50, a sample of 50 at q = 0.1 at K = 500), the same
    20,000 records."""
    space = sweep_cfg.sweep.space
    assert len(grid(space)) == len(FEDERATIONS) * len(EPSILONS) and space["epsilon"] == list(EPSILONS)
    paths = axis_paths(sweep_cfg.sweep, sweep_cfg)
    trials = [trial_config(SWEEP, {"federation": value, "epsilon": 1.0}, paths) for value in space["federation"]]
    assert [(cfg.fl.num_hospitals, cfg.fl.clients_per_round) for cfg in trials] == list(FEDERATIONS)
    assert [client_sampling_rate(k, m) for k, m in FEDERATIONS] == [1.0, 1.0, 0.1]
    assert {(cfg.data.num_records, cfg.fl.partition.scheme, cfg.privacy.name, cfg.model.name) for cfg in trials} == \
        {(20000, "iid", "dpfedavg", "mlp")}
    assert all(cfg.privacy.delta < 1 / cfg.fl.num_hospitals for cfg in trials)  # a valid δ at every K
    assert sweep_cfg.sweep.optimized_metric == UTILITY


def test_more_participants_than_hospitals_is_one_line_before_ray(sweep_cfg):
    paths = axis_paths(sweep_cfg.sweep, sweep_cfg)
    with pytest.raises(FedrayError, match="fl.clients_per_round=50 is more than the 5 hospitals"):
        check_mechanism(trial_config(SWEEP, {"federation": "5/50", "epsilon": 1.0}, paths))
    with pytest.raises(FedrayError, match="give one value per part of fl.num_hospitals\\+fl.clients_per_round"):
        trial_overrides([], {"federation": "500"}, paths)


def test_coupled_axis_parts_must_be_config_paths(sweep_cfg):
    sweep = replace(sweep_cfg.sweep, space={"pair": ["1/2"]}, axes={"pair": "fl.num_hospitals+fl.no_such_field"})
    with pytest.raises(FedrayError, match="sweep axis 'pair': no config path 'fl.no_such_field'"):
        axis_paths(sweep, sweep_cfg)


def test_num_hospitals_is_the_hospitals_axis(sweep_cfg):
    sweep = replace(sweep_cfg.sweep, space={"num_hospitals": [5, 50], "hospitals": [5]})
    assert set(axis_paths(sweep, sweep_cfg).values()) == {"fl.num_hospitals"}


def _federation_record(hospitals: int, per_round: int | None, epsilon: float, auc: float) -> dict:
    record = _record(f"K{hospitals}-e{epsilon}", lr=0.05, epsilon=epsilon, balanced=auc - 0.1)  # its AUC = auc
    record["config"]["fl"].update(num_hospitals=hospitals, clients_per_round=per_round)
    record["params"] = {"federation": f"{hospitals}/{per_round}", "epsilon": epsilon}
    record["summary"].privacy["mechanism"] = "dpfedavg"  # a non-private trial keeps its mechanism's name too
    if math.isfinite(epsilon):
        record["summary"].privacy["unit"] = "hospital"
    return record


def _records(federations=FEDERATIONS) -> list[dict]:
    # utility rises with K at a finite ε; the non-private runs are alike
    return [_federation_record(k, m, eps, 0.8 if math.isinf(eps) else 0.5 + 0.05 * i + 0.02 * math.log10(eps + 1))
            for i, (k, m) in enumerate(federations) for eps in EPSILONS]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return frontier_frame(_records(), axes=AXES, sweep_name="federation_size", utility=UTILITY)


def test_frontier_carries_k_m_and_q(frame):
    rows = frame.drop_duplicates("hospitals").set_index("hospitals")
    assert rows["clients_per_round"].tolist() == [5, 50, 50]
    assert rows["client_sampling_rate"].tolist() == [1.0, 1.0, 0.1]
    every = frontier_frame([_federation_record(8, None, 1.0, 0.6)], axes=AXES)
    assert (every.at[0, "clients_per_round"], every.at[0, "client_sampling_rate"]) == (8, 1.0)  # null: all K
    failed = {"trial_id": "x", "status": "failed", "error": "boom", "params": {}, "config": None, "summary": None,
              "rounds": None}
    gone = frontier_frame([failed], axes=AXES)
    assert pd.isna(gone.at[0, "clients_per_round"]) and pd.isna(gone.at[0, "client_sampling_rate"])


def test_one_choice_per_k_and_epsilon(frame):
    """K is the setting, not a choice: each (K, ε) keeps its trial, compared with no other K's."""
    assert federation_keys(frame) == ("hospitals",)
    chosen = frame[frame["selected"]]
    assert len(chosen) == len(FEDERATIONS) * len(EPSILONS)
    assert (chosen["selection_trials"] == 1).all()
    single = frontier_frame(_records(FEDERATIONS[:1]), axes=AXES, utility=UTILITY)
    assert federation_keys(single) == () and single["selected"].sum() == len(EPSILONS)


def test_report_and_tables_have_a_row_per_k(frame):
    report = render_report(frame, sweep_name="federation_size", utility=UTILITY)
    section = report.split("## Utility per number of hospitals")[1].split("## ")[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| hospitals K | per round m | q = m/K | target ε 1 | target ε 10 | target ε ∞ |")
    assert [line.split(" | ")[:3] for line in table[1:]] == [["| 5", "5", "1"], ["| 50", "50", "1"],
                                                               ["| 500", "50", "0.1"]]
    assert "0.8 (ε ∞)" in table[1]  # the test AUC reported, with the ε spent
    single = frontier_frame(_records(FEDERATIONS[:1]), axes=AXES, utility=UTILITY)
    assert "Utility per number of hospitals" not in render_report(single, sweep_name="s", utility=UTILITY)
    wide = paper_tables(frame, utility=UTILITY)["accuracy_vs_epsilon"]
    assert list(wide.columns[:3]) == ["model", "mechanism", "hospitals"] and wide["hospitals"].tolist() == \
        ["5", "50", "500"]


def test_figure_draws_one_line_per_k_with_the_non_private_run_at_the_right_edge(frame):
    utility_panel = frontier_figure(frame, utility=UTILITY, title="t").axes[0]
    chosen = [line for line in utility_panel.get_lines() if "trial chosen per target ε" in str(line.get_label())]
    labels = [line.get_label().split(" (")[0] for line in chosen]
    assert labels == [f"small_cnn, K = {k} hospitals" for k, _ in FEDERATIONS]  # ordered by K
    for (k, _), line in zip(FEDERATIONS, chosen):  # the private points, AUC from the test column
        expected = frame[(frame["hospitals"] == k) & frame["target_epsilon"].lt(math.inf)]["test_auc"]
        assert list(line.get_ydata()) == pytest.approx(expected.tolist())
    ticks = {label.get_text(): x for label, x in zip(utility_panel.get_xticklabels(), utility_panel.get_xticks())}
    assert ticks[INF_LABEL] == max(ticks.values())  # ε = ∞, each K's non-private reference, at the right edge
    assert utility_panel.get_xlabel().startswith("ε spent per hospital")
    shown = plottable(frontier_frame(_records(FEDERATIONS[:1]), axes=AXES), UTILITY)
    assert set(shown["series"]) == {"small_cnn"}  # one federation: no K in the name
