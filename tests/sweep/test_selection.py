"""The ε of the sweep's choice (fedray.sweep.selection): grid composition, private selection, settings. No Ray."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import dp_accounting
import numpy as np
import pandas as pd
import pytest

from test_frontier import _record, _with_cv, ledger_rdp

import fedray.sweep.runner as runner
import fedray.sweep.selection as selection_module
from fedray.errors import FedrayError
from fedray.privacy.accounting import RDP_ORDERS
from fedray.privacy.mechanisms import NonPrivate
from fedray.privacy.mechanisms.dpsgd import DpSgd, HospitalSchedule
from fedray.privacy.mechanisms.laplace_input import LaplaceInput
from fedray.sweep.frontier import frontier_frame, write_frontier
from fedray.sweep.runner import check_selection_settings, private_selection, selection_scope
from fedray.sweep.selection import (PrivateSelection, TrialPrivacy, curve_from_json, curve_json, draw_trial_count,
                                    grid_selection, ledger_curve, max_curve, plan_curve, random_points,
                                    repeat_and_select_epsilon)
from fedray.sweep.tables import paper_tables

AXES = ["backbone", "lr", "epsilon"]
DELTA = 1e-5
SHAPES = [("poisson", 4.0, 1.0, math.inf), ("negative_binomial", 4.0, 1.0, 1.0), ("negative_binomial", 3.0, 0.0, 0.0),
          ("negative_binomial", 5.0, 0.5, 0.5)]


def _accountant_epsilon(event, delta: float = DELTA) -> float:
    """Independently of fedray.sweep.selection: dp-accounting's RDP accountant on ``event``."""
    accountant = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def _sgd(sigma: float, q: float, steps: int):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def _curve(event) -> tuple:
    accountant = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS)
    accountant.compose(event)
    return tuple(float(v) for v in accountant._rdp)


def _dpsgd_plan(*sigmas: float, q: float = 0.1, steps: int = 30) -> DpSgd:
    """A resolved DP-SGD plan, one hospital per noise multiplier (what prepare_experiment's plan is)."""
    return DpSgd(mechanism="dpsgd", epsilon=1.0, delta=DELTA, reproducible_noise=False, secure_aggregation=False,
                 num_hospitals=len(sigmas), hospitals=tuple(HospitalSchedule(count=int(round(8 / q)), sample_rate=q,
                                                                             planned_steps=steps, noise_multiplier=z)
                                                            for z in sigmas))


def _laplace_plan(epsilon: float = 1.0) -> LaplaceInput:
    return LaplaceInput(mechanism="laplace_input", epsilon=epsilon, delta=0.0, reproducible_noise=False,
                        secure_aggregation=False, num_hospitals=2, accountant="pure", num_features=3)


def _private_records() -> list[dict]:
    """Three DP-SGD trials at target ε = 1 over a learning-rate axis; t-b is the best on validation."""
    return [_record("t-a", lr=0.01, epsilon=1.0, balanced=0.60), _record("t-b", lr=0.05, epsilon=1.0, balanced=0.70),
            _record("t-c", lr=0.1, epsilon=1.0, balanced=0.65)]


def _spec(records, distribution="poisson", mean=4.0, shape=1.0, *extra) -> PrivateSelection:
    # The plans of every configuration of the space: here the curves the trials' ledgers report (and ``extra``).
    planned = max_curve([*(ledger_curve(r["summary"].privacy) for r in records), *extra])
    return PrivateSelection(distribution=distribution, mean=mean, shape=shape, curve=planned, delta=DELTA)


@pytest.mark.parametrize("distribution, mean, shape, accountant_shape", SHAPES)
def test_one_dpsgd_schedule_equals_repeat_and_select_dp_event(distribution, mean, shape, accountant_shape):
    """A plan with one DP-SGD schedule: the selection ε of its curve is RdpAccountant's on
    RepeatAndSelectDpEvent(SelfComposed(PoissonSampled(q, Gaussian(σ)), T), mean, shape), computed here alone."""
    plan = _dpsgd_plan(1.1, q=0.05, steps=200)
    expected = _accountant_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(_sgd(1.1, 0.05, 200), mean,
                                                                                 accountant_shape))
    spec = PrivateSelection(distribution=distribution, mean=mean, shape=shape, curve=plan_curve(plan), delta=DELTA)
    assert spec.selection([], trials=0, guarantee=None).epsilon == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("distribution, mean, shape, accountant_shape", SHAPES)
def test_private_selection_reports_repeat_and_select_epsilon(distribution, mean, shape, accountant_shape):
    records = _private_records()
    frame = frontier_frame(records, axes=AXES, private=_spec(records, distribution, mean, shape)).set_index("trial_id")
    # Each record lies in one hospital (sigma 1.3 or 1.2, q = 0.1, 30 steps): the worse of the two selections.
    expected = max(_accountant_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(_sgd(sigma, 0.1, 30), mean,
                                                                                     accountant_shape))
                   for sigma in (1.3, 1.2))
    chosen = frame.loc["t-b"]
    assert frame["selected"].to_dict() == {"t-a": False, "t-b": True, "t-c": False}
    assert chosen["selection_epsilon"] == pytest.approx(expected, rel=1e-12)
    assert chosen["selection_delta"] == DELTA and chosen["selection_trials"] == 3
    assert chosen["selection_rule"].startswith(f"Papernot-Steinke {distribution}(mean={mean:g}")
    assert chosen["selection_epsilon"] > chosen["epsilon_spent"]  # tuning costs privacy
    assert frame.loc[["t-a", "t-c"], "selection_epsilon"].isna().all()


def test_private_selection_covers_configurations_that_were_not_drawn():
    """A configuration of the space with a worse curve counts even when no trial drew it."""
    records = _private_records()
    drawn = frontier_frame(records, axes=AXES, private=_spec(records)).set_index("trial_id").loc["t-b"]
    covered = _spec(records, "poisson", 4.0, 1.0, _curve(_sgd(0.9, 0.1, 30)))
    space = frontier_frame(records, axes=AXES, private=covered).set_index("trial_id").loc["t-b", "selection_epsilon"]
    expected = _accountant_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(_sgd(0.9, 0.1, 30), 4.0, math.inf))
    assert space == pytest.approx(expected, rel=1e-12) and space > drawn["selection_epsilon"]


def test_private_selection_without_a_dominating_curve_takes_the_per_order_maximum():
    wide, long = _sgd(0.8, 0.5, 10), _sgd(2.0, 0.01, 5000)
    curves = np.array([_curve(wide), _curve(long)])
    assert not (curves[0] >= curves[1]).all() and not (curves[1] >= curves[0]).all()  # neither dominates
    both = repeat_and_select_epsilon(max_curve(curves), mean=5, shape=math.inf, delta=DELTA)
    alone = [_accountant_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(e, 5.0, math.inf)) for e in (wide, long)]
    assert both >= max(alone) - 1e-9


def test_a_trial_without_a_curve_leaves_the_private_selection_unknown():
    records = _private_records()
    spec = _spec(records)
    records[0]["summary"].privacy.pop("rdp")
    chosen = frontier_frame(records, axes=AXES, private=spec).set_index("trial_id").loc["t-b"]
    assert pd.isna(chosen["selection_epsilon"]) and "no RDP curve" in chosen["selection_rule"]


def test_grid_composition_basic_and_rdp():
    trial = _sgd(1.0, 0.05, 200)
    one = _accountant_epsilon(trial)
    ten = grid_selection([TrialPrivacy(one, DELTA, 1, _curve(trial), True)] * 10)
    # Ten runs of one mechanism: its 10-fold self-composition at δ = 10 δ, tighter than 10 ε.
    assert ten.epsilon == pytest.approx(_accountant_epsilon(dp_accounting.SelfComposedDpEvent(trial, 10),
                                                            10 * DELTA), rel=1e-12)
    assert ten.epsilon < 10 * one and ten.delta == pytest.approx(10 * DELTA) and ten.trials == 10
    assert ten.rule == "grid composition, RDP (one mechanism ×10)" and ten.guarantee is True
    basic = grid_selection([TrialPrivacy(1.0, 1e-5), TrialPrivacy(2.0, 1e-6), TrialPrivacy(0.5, 0.0)])
    assert (basic.epsilon, basic.delta, basic.trials, basic.rule) == \
        (3.5, pytest.approx(1.1e-5), 3, "grid composition, basic")
    assert grid_selection([TrialPrivacy(1.0, 1e-5)]).rule == "single trial: nothing compared"


def test_grid_composition_of_different_curves_sums_them_and_converts_once():
    """Two different mechanisms' trials (a DP-SGD schedule, a plain Gaussian release): their curves add up,
    converted once at Σδ, which is dp-accounting's composition of both events; a pure plan's curve is flat."""
    sgd, gaussian = _sgd(1.0, 0.05, 200), dp_accounting.GaussianDpEvent(3.0)
    eps = [_accountant_epsilon(e) for e in (sgd, gaussian)]
    both = grid_selection([TrialPrivacy(eps[0], DELTA, 1, _curve(sgd)), TrialPrivacy(eps[1], DELTA, 1,
                                                                                    _curve(gaussian))])
    expected = _accountant_epsilon(dp_accounting.ComposedDpEvent([sgd, gaussian]), 2 * DELTA)
    assert both.epsilon == pytest.approx(expected, rel=1e-12) and both.epsilon < sum(eps)
    assert both.rule == "grid composition, RDP" and both.delta == pytest.approx(2 * DELTA)
    pure = plan_curve(_laplace_plan(0.5))
    assert pure == pytest.approx([0.5] * len(RDP_ORDERS))  # ε-DP is (α, ε)-RDP at every order: valid, loose
    mixed = grid_selection([TrialPrivacy(eps[0], DELTA, 1, _curve(sgd)), TrialPrivacy(0.5, 0.0, 1, pure)])
    assert mixed.epsilon == pytest.approx(eps[0] + 0.5) and mixed.delta == DELTA  # the smaller of the two
    only_pure = grid_selection([TrialPrivacy(0.5, 0.0, 1, pure)] * 2)
    assert (only_pure.epsilon, only_pure.rule) == (1.0, "grid composition, basic")  # δ = 0: basic, exact


def test_grid_composition_edge_cases():
    public = grid_selection([TrialPrivacy(1.0, 1e-5), TrialPrivacy(math.inf, None)])
    assert public.epsilon == math.inf and public.delta is None and "non-private" in public.rule
    missing = grid_selection([TrialPrivacy(1.0, 1e-5), TrialPrivacy(None, 1e-5)])
    assert missing.epsilon is None and "missing" in missing.rule
    folds = grid_selection([TrialPrivacy(1.0, 1e-5, folds=5, rdp=ledger_rdp()), TrialPrivacy(1.0, 1e-5)])
    assert (folds.epsilon, folds.delta) == (5.0, pytest.approx(5e-5))  # each record trains 4 of the 5 fold models
    adaptive = grid_selection([TrialPrivacy(1.0, 1e-5), TrialPrivacy(1.0, 1e-5)], adaptive=True)
    assert adaptive.rule.startswith("adaptive-search composition")
    unguaranteed = grid_selection([TrialPrivacy(1.0, 1e-5, guarantee=True), TrialPrivacy(1.0, 1e-5, guarantee=False)])
    assert unguaranteed.guarantee is False


def test_frontier_reports_the_grid_composition_of_the_trials_compared():
    records = [*_private_records(), _record("t-8", lr=0.05, epsilon=8.0, balanced=0.5),
               _record("t-inf", lr=0.05, epsilon=math.inf, balanced=0.9)]
    frame = frontier_frame(records, axes=AXES).set_index("trial_id")
    assert frame.index[frame["selected"]].tolist() == ["t-b", "t-8", "t-inf"]
    chosen = frame.loc["t-b"]
    assert chosen["selection_trials"] == 3 and chosen["selection_scope"] == "target_epsilon"
    assert chosen["selection_epsilon"] == pytest.approx(3 * 0.98) and chosen["selection_delta"] == pytest.approx(3e-5)
    assert chosen["selection_rule"] == "grid composition, basic"  # the records' ε is below their curves' RDP
    assert frame.loc["t-8", "selection_rule"] == "single trial: nothing compared"
    # Adaptive search: every trial was chosen after seeing the others, the non-private one included.
    adaptive = frontier_frame(records, axes=AXES, scope="sweep").set_index("trial_id")
    assert adaptive.loc["t-b", "selection_trials"] == 5 and adaptive.loc["t-b", "selection_epsilon"] == math.inf


def test_tables_compose_curves_from_the_parquet_alone_and_old_parquets_fall_back_to_basic(tmp_path):
    """Ledgers whose ε is their own curve's: the RDP path wins, from dp_rdp alone; without the column (a version
    5 Parquet, its dp_event ignored) the same rows compose by basic composition."""
    records = [*_private_records(), _record("t-8", lr=0.05, epsilon=8.0, balanced=0.5)]
    one = _accountant_epsilon(dp_accounting.ComposedDpEvent([_sgd(z, 0.1, 30) for z in (1.2,)]))
    for record in records[:3]:
        record["summary"].privacy["epsilon"] = one
    frame = pd.read_parquet(write_frontier(tmp_path, records, axes=AXES, sweep_name="demo")["frontier"])
    expected = _accountant_epsilon(dp_accounting.SelfComposedDpEvent(_sgd(1.2, 0.1, 30), 3), 3 * DELTA)
    table = paper_tables(frame)["privacy_loss_vs_epsilon"].set_index("trial")
    assert table.loc["t-b", "selection rule"] == "grid composition, RDP (one mechanism ×3)"
    assert table.loc["t-b", "selection ε"] == f"{expected:.3g}" and expected < 3 * one
    old = frame.drop(columns=["dp_rdp"]).assign(dp_event=json.dumps([{"noise_multiplier": 1.2}]))
    table = paper_tables(old)["privacy_loss_vs_epsilon"].set_index("trial")
    assert table.loc["t-b", "selection rule"] == "grid composition, basic"
    assert table.loc["t-b", "selection ε"] == f"{3 * one:.3g}"


def test_tables_compose_per_row_from_the_parquet_and_keep_a_private_selection(tmp_path):
    records = _private_records()
    records[0]["summary"] = dataclasses.replace(records[0]["summary"], model="other")
    records[0]["config"]["model"]["name"] = "other"  # a second model: its own row, compared alone
    records.append(_record("t-inf", lr=0.05, epsilon=math.inf, balanced=0.5))
    path = write_frontier(tmp_path, records, axes=AXES, sweep_name="demo")["frontier"]
    table = paper_tables(pd.read_parquet(path))["privacy_loss_vs_epsilon"].set_index("trial")
    assert table.loc["t-b", "trials compared"] == "2" and table.loc["t-b", "selection ε"] == "1.96"
    assert table.loc["t-a", "trials compared"] == "1" and table.loc["t-a", "selection rule"].startswith("single")
    private = write_frontier(tmp_path / "private", _private_records(), axes=AXES, sweep_name="demo",
                             private=_spec(_private_records()))
    frame = pd.read_parquet(private["frontier"])
    row = paper_tables(frame)
    assert "utility_by_configuration" in row  # one ε: the by-configuration table only
    chosen = frame.set_index("trial_id").loc["t-b"]
    assert chosen["selection_rule"].startswith("Papernot-Steinke")
    report = private["report"].read_text(encoding="utf-8")
    assert "private selection (Papernot-Steinke poisson(mean=4))" in report and "only trial t-b" in report


def test_a_version_4_frontier_without_the_new_columns_still_renders(tmp_path):
    records = [*_private_records(), _record("t-8", lr=0.05, epsilon=8.0, balanced=0.5)]
    frame = pd.read_parquet(write_frontier(tmp_path, records, axes=AXES, sweep_name="demo")["frontier"])
    new = ["dp_guarantee", "dp_noise", "dp_rdp", "selected", "selection_scope", "selection_trials",
           "selection_epsilon", "selection_delta", "selection_rule", "selection_dp_guarantee"]
    table = paper_tables(frame.drop(columns=new))["privacy_loss_vs_epsilon"].set_index("trial")
    assert table.loc["t-b", "selection ε"] == "2.94"
    assert table.loc["t-b", "selection rule"] == "grid composition, basic"


def test_curves_from_ledgers_plans_and_cells():
    privacy = _record("t", lr=0.1, epsilon=1.0, balanced=0.5)["summary"].privacy
    assert ledger_curve(privacy) == ledger_rdp() == max_curve([_curve(_sgd(1.3, 0.1, 30)), _curve(_sgd(1.2, 0.1, 30))])
    assert ledger_curve(_with_cv(_record("t", lr=0.1, epsilon=1.0, balanced=0.5))["summary"].privacy) is None
    assert ledger_curve({**privacy, "rdp": [1.0, 2.0]}) is None and ledger_curve({**privacy, "rdp": None}) is None
    assert ledger_curve({"mechanism": "none", "epsilon": math.inf}) is None and ledger_curve(None) is None
    assert plan_curve(_dpsgd_plan(1.3, 1.2)) == pytest.approx(ledger_rdp(), rel=1e-12)  # max over hospitals
    non_private = NonPrivate(mechanism="dpsgd", epsilon=math.inf, delta=None, reproducible_noise=False,
                             secure_aggregation=False, num_hospitals=2)
    assert plan_curve(non_private) is None
    assert curve_from_json(curve_json(ledger_rdp())) == ledger_rdp() and curve_json(None) is None
    other_orders = json.dumps({"orders": [2.0] * len(RDP_ORDERS), "rdp": list(ledger_rdp())})
    for cell in (None, float("nan"), "", "{", "[1, 2]", other_orders):
        assert curve_from_json(cell) is None


def test_runner_bounds_a_private_selection_by_every_plan_of_the_space(monkeypatch):
    """Any mechanism whose plan claims DP: the bound is the per-order maximum of the plans' curves, at the largest
    δ; a plan without a claim, or a space of pure plans alone (δ = 0), is refused in one line."""
    def run(*plans):
        cfgs = [SimpleNamespace(key=i, model=SimpleNamespace(name="m"), privacy=SimpleNamespace(name=p.mechanism))
                for i, p in enumerate(plans)]
        monkeypatch.setattr(runner, "_plan_key", lambda cfg: cfg.key)
        monkeypatch.setattr(runner, "prepare_experiment", lambda cfg: SimpleNamespace(privacy=plans[cfg.key]))
        return private_selection(SimpleNamespace(selection="poisson", selection_mean=4.0, selection_shape=1.0), cfgs)

    sgd, pure = _dpsgd_plan(1.3, 1.2), _laplace_plan(0.5)
    spec = run(sgd, pure)
    assert spec.delta == DELTA and spec.curve == pytest.approx(max_curve([plan_curve(sgd), plan_curve(pure)]))
    assert spec.curve != pytest.approx(plan_curve(sgd))  # the pure plan's flat 0.5 dominates at low orders
    for plans, message in (((sgd, NonPrivate(mechanism="dpsgd", epsilon=math.inf, delta=None, reproducible_noise=False,
                                              secure_aggregation=False, num_hospitals=2)), "claims no DP"),
                           ((pure,), "δ > 0")):
        with pytest.raises(FedrayError, match=message) as err:
            run(*plans)
        assert "\n" not in str(err.value)


def test_trial_counts_are_drawn_from_os_entropy(monkeypatch):
    calls = []
    real = np.random.default_rng

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(selection_module.np.random, "default_rng", recording)
    draw_trial_count("poisson", 3.0, 1.0)
    random_points({"lr": [0.1, 0.2]}, 2)
    assert calls == [((), {}), ((), {})]  # no seed: the operating system's entropy, never the config


@pytest.mark.parametrize("distribution, shape", [("poisson", 1.0), ("negative_binomial", 0.0),
                                                 ("negative_binomial", 0.5), ("negative_binomial", 1.0),
                                                 ("negative_binomial", 3.0)])
def test_trial_count_distribution_has_the_mean_the_accountant_assumes(distribution, shape):
    rng = np.random.default_rng(0)
    draws = np.array([draw_trial_count(distribution, 4.0, shape, rng=rng) for _ in range(20000)])
    assert draws.mean() == pytest.approx(4.0, rel=0.03)
    if distribution == "negative_binomial":
        assert draws.min() >= 1  # truncated: at least one trial
    assert draw_trial_count("negative_binomial", 1.0, 1.0) == 1


def test_random_points_are_uniform_over_the_space():
    space = {"lr": [0.01, 0.1], "backbone": ["a", "b", "c"]}
    points = random_points(space, 6000, rng=np.random.default_rng(1))
    counts = pd.Series([(p["lr"], p["backbone"]) for p in points]).value_counts()
    assert len(counts) == 6 and counts.min() > 900 and counts.max() < 1100


def _tune(**changes):
    base = dict(search="random", selection="poisson", selection_mean=5.0, selection_shape=1.0, scheduler=None,
                num_samples=1)
    return SimpleNamespace(**{**base, **changes})


def _trial_cfg(name="dpsgd", epsilon=1.0, folds=1):
    return SimpleNamespace(privacy=SimpleNamespace(name=name, epsilon=epsilon), cv=SimpleNamespace(folds=folds))


@pytest.mark.parametrize("tune, trials, message", [
    (_tune(search="grid"), [_trial_cfg()], "set tune.search=random"),
    (_tune(scheduler="asha"), [_trial_cfg()], "set tune.scheduler=null"),
    (_tune(num_samples=4), [_trial_cfg()], "leave tune.num_samples=1"),
    (_tune(selection_mean=0.5), [_trial_cfg()], "tune.selection_mean=10"),
    (_tune(), [_trial_cfg(), _trial_cfg(epsilon=8.0)], "run one sweep per ε"),
    (_tune(), [_trial_cfg(epsilon=math.inf)], "non-private trial"),
    (_tune(), [_trial_cfg(), _trial_cfg(name="none", epsilon=1.0)], "privacy=none without a finite ε"),
    (_tune(), [_trial_cfg(folds=5)], "set cv.folds=1"),
])
def test_private_selection_refuses_what_would_void_it(tune, trials, message):
    with pytest.raises(FedrayError, match=message) as err:
        check_selection_settings(tune, trials)
    assert "\n" not in str(err.value)


def test_settings_accepted_and_scope():
    check_selection_settings(_tune(), [_trial_cfg(), _trial_cfg()])
    # Any mechanism whose plans claim DP: its curve is what the selection repeats, whatever its name.
    check_selection_settings(_tune(), [_trial_cfg(), _trial_cfg(name="dpfedavg"), _trial_cfg(name="laplace_input")])
    check_selection_settings(_tune(selection=None, search="grid"), [_trial_cfg(epsilon=8.0), _trial_cfg()])
    assert selection_scope(_tune(search="grid")) == "target_epsilon"
    assert selection_scope(_tune(search="random")) == "target_epsilon"
    assert selection_scope(_tune(search="optuna")) == "sweep" and selection_scope(_tune(scheduler="asha")) == "sweep"


def test_tune_config_fields():
    from fedray.config import compose_config

    tune = compose_config(["tune.search=random", "tune.selection=negative_binomial", "tune.selection_mean=3",
                           "tune.selection_shape=0"]).tune
    assert (tune.search, tune.selection, tune.selection_mean, tune.selection_shape) == \
        ("random", "negative_binomial", 3.0, 0.0)
    default = compose_config([]).tune
    assert default.selection is None and default.selection_mean == 10 and default.selection_shape == 1
    for bad in ("tune.selection=uniform", "tune.selection_mean=-1", "tune.selection_shape=-1"):
        with pytest.raises(FedrayError, match=bad.split("=")[0]):
            compose_config([bad])


@pytest.mark.slow  # a whole Tune sweep (-m slow); the selection's maths and tables are tested above, in process
def test_private_selection_sweep_end_to_end(ray_session, tmp_path, monkeypatch):
    """A tiny sweep under tune.selection=poisson: K (pinned to 2 here; drawn from OS entropy otherwise) random
    trials, one released, its ε equal to dp-accounting's RepeatAndSelectDpEvent on the trials' own ledgers."""
    import sys

    from conftest import TINY

    from fedray.__main__ import main

    drawn = []
    monkeypatch.setattr(runner, "draw_trial_count", lambda *args: drawn.append(args) or 2)
    out_dir = tmp_path / "sweep"
    # One trial at a time (a private selection's drawn points ignore tune.max_concurrent_trials, so each trial's
    # own bundle asks for 5 of the session's 8 CPUs): the second reuses the first's trial, driver and hospital actor
    # (tune.reuse_actors) instead of starting as many new processes beside it.
    monkeypatch.setattr(sys, "argv", [
        "fedray", "+sweep=privacy_tradeoff", *TINY, "fl.actors=1", "fl.rounds=1", "sweep.space.lr=[0.05,0.1]",
        "sweep.space.epsilon=[1.0]", "tune.search=random", "tune.selection=poisson", "tune.selection_mean=3",
        "tune.trial_cpus=5", f"tune.out_dir={out_dir}", f"hydra.run.dir={tmp_path}/h", "hydra/job_logging=none",
        "hydra/hydra_logging=none"])
    main()
    assert drawn == [("poisson", 3.0, 1.0)]
    frame = pd.read_parquet(out_dir / "frontier.parquet")
    assert len(frame) == 2 and set(frame["status"]) == {"completed"} and frame["selected"].sum() == 1
    chosen = frame[frame["selected"]].iloc[0]
    assert chosen["val_balanced_accuracy"] == frame["val_balanced_accuracy"].max()
    ledgers = [json.loads(p.read_text())["privacy"] for p in out_dir.glob("trials/*/summary.json")]
    expected = max(_accountant_epsilon(dp_accounting.dp_event.RepeatAndSelectDpEvent(
        _sgd(h["noise_multiplier"], h["sample_rate"], h["steps"]), 3.0, math.inf), delta=ledger["delta"])
        for ledger in ledgers for h in ledger["hospitals"])
    assert chosen["selection_epsilon"] == pytest.approx(expected, rel=1e-9)
    assert chosen["selection_rule"] == "Papernot-Steinke poisson(mean=3)" and chosen["selection_trials"] == 2
    assert chosen["selection_epsilon"] > chosen["epsilon_spent"] and chosen["dp_guarantee"] == True  # noqa: E712
    assert "only trial" in (out_dir / "report.md").read_text(encoding="utf-8")
    assert json.loads((out_dir / "sweep.json").read_text())["selection"]["distribution"] == "poisson"
