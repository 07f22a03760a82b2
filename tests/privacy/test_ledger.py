"""One ledger for every release: composition in dp-accounting, allowlists at the boundaries, one test per finding.

Pure: no Ray. The end-to-end checks of the same rules are in tests/privacy/test_mechanism_plugin.py and the
mechanisms' own run tests.
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest

from conftest import TINY, compose_typed, run_summary

from fedray.audit import inserted_record_slots
from fedray.audit.plan import AuditPlan, Inserted, slot_counts
from fedray.privacy.preprocessing import statistics_budget
from fedray.errors import FedrayError
from fedray.federation.proxy import checked_results
from fedray.privacy.secure_round import SecureRound
from fedray.privacy.accounting import RDP_ORDERS, default_delta
from fedray.privacy.ledger import Release, Releases, UndeclaredRelease, compose_epsilon, pure_dp_event, pure_epsilon
from fedray.privacy.mechanisms import PlanContext, plan_privacy
from fedray.results import DataSummary
from fedray.results.run_dir import check_outputs
from fedray.strategies import ClientResult

EHR = ["data=ehr_synthetic", "data.num_records=300", "model=mlp", "fl.rounds=2", "train.batch_size=8",
       "audit.enabled=false"]


def _plan(overrides, tmp_path, slots=(84,) * 5, **context):
    cfg = compose_typed(overrides, tmp_path)
    return cfg, plan_privacy(cfg, PlanContext(slot_counts=tuple(slots), num_features=8, num_classes=2, **context))


def _independent_rdp(events, delta):
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    acc.compose(dp_accounting.ComposedDpEvent(events))
    return acc.get_epsilon(delta)


# -- composition -------------------------------------------------------------------------------------
def test_the_ledger_is_dp_accountings_composition_of_the_declared_events_and_pld_agrees(tmp_path):
    _, plan = _plan([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path)
    states = [{"dp_steps": s.planned_steps} for s in plan.hospitals]
    ledger = plan.ledger(states)
    expected = max(_independent_rdp([dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        s.sample_rate, dp_accounting.GaussianDpEvent(s.noise_multiplier)), s.planned_steps)], ledger["delta"])
        for s in plan.hospitals)
    assert ledger["epsilon"] == pytest.approx(expected, rel=1e-9) and 1.99 <= ledger["epsilon"] <= 2.0
    assert ledger["epsilon_prv_cross_check"] == pytest.approx(ledger["epsilon"], rel=0.15)
    assert ledger["epsilon_prv_cross_check"] <= ledger["epsilon"] + 1e-6  # PLD is the tighter of the two
    assert ledger["neighbouring"] == "zero-out" and ledger["guarantee"] is True


def test_statistics_compose_with_training_in_one_accountant_tighter_than_adding_their_epsilons():
    stats, train = dp_accounting.GaussianDpEvent(3.0), dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.1)), 100)
    together = compose_epsilon([stats, train], delta=1e-5)
    assert together < compose_epsilon([stats], delta=1e-5) + compose_epsilon([train], delta=1e-5)
    assert compose_epsilon([], delta=1e-5) == 0.0
    assert compose_epsilon([dp_accounting.NonPrivateDpEvent()], delta=1e-5) == math.inf


def test_pure_events_add_up():
    rr = dp_accounting.RandomizedResponseDpEvent(noise_parameter=3 / (math.exp(1.0) + 2), num_buckets=3)
    assert pure_epsilon([rr]) == pytest.approx(1.0)
    assert pure_epsilon([dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(4.0), 4), pure_dp_event(0.5)]) \
        == pytest.approx(1.5)
    with pytest.raises(FedrayError, match="not a pure-DP event"):
        pure_epsilon([dp_accounting.GaussianDpEvent(1.0)])


# -- the boundaries ----------------------------------------------------------------------------------
def test_a_hospital_message_with_an_undeclared_field_is_refused(tmp_path):
    _, plan = _plan([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path)
    fine = ClientResult(hospital=1, params={}, num_samples=84, metrics={"local_steps": 10.0, "dp_steps": 10.0})
    assert checked_results(plan, [fine]) == [fine]
    leaky = ClientResult(hospital=1, params={}, num_samples=84, metrics={"train_loss": 0.3})
    with pytest.raises(UndeclaredRelease, match="'metrics.train_loss' is not covered"):
        checked_results(plan, [leaky])


def test_releases_match_wildcards_and_an_open_allowlist_claims_nothing():
    declared = Releases("x", (Release("m", ("summary.final_test*",), "post-processing", "held out"),))
    assert declared.covers("summary.final_test.auc") and not declared.covers("summary.data.train")
    assert Releases("x", (), claim=False).covers("anything")
    with pytest.raises(ValueError, match="carries no DpEvent"):
        Release("u", ("params",), "accounted", "no event")


# -- finding 1: DP-FedAvg with client sampling publishes the sample ---------------------------------
def test_sampled_dp_fedavg_may_publish_neither_participants_nor_counts(tmp_path):
    _, plan = _plan([*TINY, "privacy=dpfedavg", "privacy.epsilon=5", "fl.clients_per_round=2"], tmp_path)
    summary = {"status": "completed", "privacy": plan.ledger([{}] * 5)}
    check_outputs(summary, [{"round": 1, "clients": []}], models=False)
    for leak in ({"hospital": 3}, {"num_samples": 84}):
        with pytest.raises(UndeclaredRelease, match="rounds.clients"):
            check_outputs(summary, [{"round": 1, "clients": [leak]}], models=False)
    with pytest.raises(UndeclaredRelease, match="summary.data.hospital_train_sizes"):
        check_outputs({**summary, "data": {"hospital_train_sizes": [84] * 5}}, [], models=False)
    assert plan.declared_count(0, 84) is None  # never sent, not even to the driver


# -- finding 2: whitening under DP-FedAvg -----------------------------------------------------------
@pytest.mark.parametrize("method", ["zca", "pca"])
def test_private_whitening_under_dp_fedavg_is_refused(tmp_path, method):
    with pytest.raises(FedrayError, match=f"privacy=dpfedavg with data.whitening={method}"):
        _plan([*TINY, "privacy=dpfedavg", f"data.whitening={method}"], tmp_path)


# -- finding 3: data-derived ranges ----------------------------------------------------------------
@pytest.mark.parametrize("mechanism", ["dpsgd", "dpfedavg", "laplace_input"])
def test_ranges_read_from_the_data_are_refused_under_any_dp_claim(tmp_path, mechanism):
    with pytest.raises(FedrayError, match="feature ranges were read from the data"):
        _plan([*EHR, f"privacy={mechanism}", "privacy.epsilon=1"], tmp_path, ranges_public=False)
    _plan([*EHR, f"privacy={mechanism}", "privacy.epsilon=inf"], tmp_path, ranges_public=False)  # no claim


# -- finding 4: distributed DP's colluders ---------------------------------------------------------
def test_distributed_noise_is_provisioned_so_that_the_honest_shares_alone_carry_it(tmp_path):
    _, plan = _plan([*TINY, "privacy=dpfedavg", "privacy.epsilon=5", "fl.secure_aggregation=true",
                     "privacy.colluders=2"], tmp_path)
    secure = plan.secure_round({"w": np.zeros(20_000)}, weighted=False, max_abs=1.0, max_samples=1)
    shares = np.stack([secure.payload({"w": np.zeros(20_000)}, {"w": np.zeros(20_000)}, None,
                                      rng=np.random.default_rng(k)) for k in range(5)])
    honest_variance = shares[:3].sum(axis=0).var()  # the driver subtracts the 2 colluders' own shares
    z_s = plan.noise_multiplier * plan.clip_norm
    assert honest_variance == pytest.approx(z_s ** 2, rel=0.05)
    assert "colluding with up to 2 hospital(s)" in plan.ledger([{}] * 5)["trust"]
    with pytest.raises(FedrayError, match="privacy.colluders=5 with 5 hospitals"):
        _plan([*TINY, "privacy=dpfedavg", "fl.secure_aggregation=true", "privacy.colluders=5"], tmp_path)


def test_secure_round_defaults_to_every_share_honest():
    plain = SecureRound.for_dp_fedavg({"w": np.zeros(3)}, clip_norm=1.0, noise_multiplier=1.0, num_clients=4)
    assert plain.honest_shares == 4


# -- finding 5: the counts and the auditor's secret inclusion --------------------------------------
def test_the_plan_depends_on_canary_slots_not_on_which_canaries_the_auditor_included(tmp_path):
    from types import SimpleNamespace

    dealt = SimpleNamespace(train_shards=[np.zeros(84)] * 5)
    hospitals = np.arange(40) % 5
    plans = []
    for seed in (0, 1):
        included = np.random.default_rng(seed).random(40) < 0.5
        canaries = AuditPlan(input=Inserted(design=None, included=included, hospitals=hospitals))
        assert slot_counts(dealt, canaries) == [92] * 5
        plans.append(_plan([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path,
                           slots=slot_counts(dealt, canaries))[1])
    assert plans[0] == plans[1] and plans[0].declared_count(3, 85) == 92


# -- finding 9: δ counts the canary slots -----------------------------------------------------------
def test_the_statistics_delta_is_the_plans_delta_near_a_power_of_ten(tmp_path):
    cfg = compose_typed([*TINY, "privacy=dpsgd", "audit.enabled=true", "audit.input_canaries=40"], tmp_path)
    # 99,970 real records and 40 canary slots: counting only the records gave 1e-6, ten times the plan's δ.
    assert default_delta(99_970) == 1e-6
    _, delta = statistics_budget(cfg, total_records=99_970 + inserted_record_slots(cfg.audit))
    assert delta == plan_privacy(cfg, PlanContext(slot_counts=(20_002,) * 5)).delta == 1e-7


def test_the_frontier_writer_refuses_a_trial_whose_fields_its_ledger_does_not_declare(tmp_path):
    from fedray.sweep.frontier import write_frontier

    _, plan = _plan([*TINY, "privacy=dpfedavg", "privacy.epsilon=5", "fl.clients_per_round=2"], tmp_path)
    summary = run_summary(privacy=plan.ledger([{}] * 5), data=DataSummary(hospital_train_sizes=[84] * 5))
    with pytest.raises(UndeclaredRelease, match="summary.data.hospital_train_sizes"):
        write_frontier(tmp_path / "sweep", [{"summary": summary, "config": {}, "rounds": None}], axes=[],
                       sweep_name="leak")
    assert not (tmp_path / "sweep").exists()


# -- finding 8: un-noised statistics say they are outside the guarantee --------------------------------
def test_audit_and_cross_validation_statistics_are_labelled_outside_the_guarantee(tmp_path):
    from fedray.audit.auditor import OUTSIDE_GUARANTEE
    from fedray.results.crossval import combine_fold_summaries
    from fedray.sweep.report import render_report

    _, plan = _plan([*TINY, "privacy=dpsgd", "privacy.epsilon=2", "cv.folds=2"], tmp_path)
    ledger = plan.ledger([{"dp_steps": s.planned_steps} for s in plan.hospitals])
    assert {"audit", "cross-validation", "held-out metrics"} <= set(ledger["outside_guarantee"])
    assert "outside the guarantee" in OUTSIDE_GUARANTEE
    fold = run_summary(privacy=ledger, data=DataSummary(val=1, test=1))
    assert "outside the guarantee" in combine_fold_summaries([fold, fold]).cv["guarantee"]
    from fedray.sweep.frontier import frontier_frame

    assert "outside the guarantee" in render_report(frontier_frame([], axes=[], sweep_name="s"), sweep_name="s",
                                                    utility="test_balanced_accuracy")


def test_under_dp_a_hospitals_feature_cache_report_carries_no_record_count(tmp_path):
    from fedray.federation.proxy import checked_reports

    _, plan = _plan([*TINY, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path)
    timing = {"views": 2, "seconds": 1.5, "from_disk": False}
    assert checked_reports(plan, [timing, None]) == [timing, None]
    with pytest.raises(UndeclaredRelease, match="feature_cache.records"):  # it would count included canaries
        checked_reports(plan, [{**timing, "records": 90}])
