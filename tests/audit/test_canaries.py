"""Canary audits: where canaries go, whose randomness includes them, how they enter training, and what they certify."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY, compose_typed

from fedray.audit.auditor import audit_inputs
from fedray.audit.canaries import (CanaryClients, DiracCanaries, WhiteBoxScores, consenting_hospitals,
                                   deal_round_robin, dirac_canaries)
from fedray.audit.gradient_canaries import GradientCanaryInjector
from fedray.audit.plan import driver_attachments, hospital_attachments, plan_records
from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment
from fedray.privacy.opacus_wiring import make_dp_compatible, private_step, wrap_private
from fedray.privacy.randomness import NoiseSource, hospital

AUDITED = [*TINY, "audit.enabled=true", "audit.reference_models=0", "audit.canaries=600", "audit.input_canaries=20"]


def _ids(records) -> set[str]:
    return {str(i) for i in records.ids}


def _canary_ids(shards) -> set[str]:
    return {i for shard in shards for i in _ids(shard) if i.startswith("canary/")}


def test_inclusion_is_the_auditors_secret_not_the_seed(tmp_path):
    cfg = compose_typed(AUDITED, tmp_path)
    first, second = prepare_experiment(cfg), prepare_experiment(cfg)
    # The canaries themselves are public (from the seed); which ones were trained on is drawn afresh.
    assert torch.equal(first.audit.input.design.inputs, second.audit.input.design.inputs)
    assert first.audit.gradient.design.names == second.audit.gradient.design.names
    for kind in ("input", "gradient"):
        assert not np.array_equal(getattr(first.audit, kind).included, getattr(second.audit, kind).included)
    simulation = compose_typed([*AUDITED, "privacy.reproducible_noise=true"], tmp_path)
    again = [prepare_experiment(simulation).audit for _ in range(2)]
    assert np.array_equal(again[0].input.included, again[1].input.included)
    assert np.array_equal(again[0].gradient.included, again[1].gradient.included)


def test_canaries_reach_only_training_shards(tmp_path):
    prep = prepare_experiment(compose_typed(AUDITED, tmp_path))
    inserted = prep.audit.input
    trained = _canary_ids(prep.training_shards)
    assert trained == {f"canary/{j:06d}" for j in np.flatnonzero(inserted.included)}
    added = [int(np.sum(inserted.included & (inserted.hospitals == k))) for k in range(len(prep.dealt.train_shards))]
    assert [len(s) for s in prep.training_shards] == [len(s) + n for s, n in zip(prep.dealt.train_shards, added)]
    held = [prep.dealt.splits.val, prep.dealt.splits.test, *prep.dealt.val_shards, *prep.dealt.train_shards]
    assert not _canary_ids(held)  # no validation, test or member pool holds one
    pools = audit_inputs(prep, final_params=[{}], resources={}, validation_choices={})["pools"]
    canary_pixels = {bytes(x) for x in inserted.design.inputs.numpy()}
    assert not any(bytes(x) in canary_pixels for pool in pools.values() for x in pool["inputs"])
    # Observing steps, a hospital receives every canary dealt to it, in the dealing order, and which it inserts.
    gradient = prep.audit.gradient
    assert prep.audit.observe_steps
    for k in range(len(prep.dealt.train_shards)):
        (attached,) = hospital_attachments(prep.audit, k)
        dealt = np.flatnonzero(gradient.hospitals == k)
        assert attached.dealt.flat_index.tolist() == gradient.design.flat_index[dealt].tolist()
        assert attached.included.tolist() == gradient.included[dealt].tolist() and attached.observe_steps
    # The driver observes every canary's coordinate (round view) and every hospital's step reports, and is never
    # told which were included.
    round_view, step_view = driver_attachments(prep.audit)["observers"]
    assert len(round_view.canaries) == len(gradient.included) and not hasattr(round_view, "included")
    assert step_view.hospitals.tolist() == gradient.hospitals.tolist() and not hasattr(step_view, "included")
    # The driver's view alone: a hospital learns of the gradient canaries included at it, and of no other.
    rounds_only = dataclasses.replace(prep.audit, observe_steps=False)
    for k in range(len(prep.dealt.train_shards)):
        attached = hospital_attachments(rounds_only, k)
        assert sum(int(a.included.sum()) for a in attached) == sum(len(a.dealt) for a in attached) == \
            int(np.sum(gradient.included & (gradient.hospitals == k)))
    assert len(driver_attachments(rounds_only)["observers"]) == 1


def test_no_canary_goes_to_a_hospital_without_consented_records(tmp_path):
    assert consenting_hospitals([5, 0, 3]) == [0, 2]
    assert deal_round_robin(5, [0, 2]).tolist() == [0, 2, 0, 2, 0]
    cfg = compose_typed(AUDITED, tmp_path)
    dealt = prepare_experiment(cfg).dealt
    emptied = dataclasses.replace(dealt, train_shards=[dealt.train_shards[0].subset(np.array([], dtype=int)),
                                                       *dealt.train_shards[1:]])
    assert 0 not in plan_records(cfg, emptied).input.hospitals


def test_gradient_canary_enters_like_a_record():
    model = make_dp_compatible(nn.Sequential(nn.Linear(4, 3)))
    canaries = dirac_canaries([(n, p.numel()) for n, p in model.named_parameters()], 3, 2.0,
                              np.random.default_rng(0))
    expected = torch.zeros(15)
    offsets = {"0.weight": 0, "0.bias": 12}
    for name, i, sign in zip(canaries.names, canaries.flat_index, canaries.signs):
        expected[offsets[name] + i] = 2.0 * sign / 5
    injector = GradientCanaryInjector(model, canaries, np.ones(3, dtype=bool), sample_rate=1.0,
                                      noise=NoiseSource.reproducible(0, hospital(0)))
    injector.start_round(1)
    parts = wrap_private(model, torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=0.0,
                         max_grad_norm=1.0, sample_rate=0.5, expected_batch_size=5)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    # An empty Poisson batch: the update is the canaries alone, divided by the expected batch size qn = 5.
    private_step(parts, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), nn.functional.cross_entropy,
                 hooks=[injector])
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(before - after, expected)


def test_white_box_scores_read_each_hospitals_update():
    canaries = DiracCanaries(("w", "w", "w"), np.array([0, 1, 2]), np.array([1.0, -1.0, 1.0]), 1.0)
    scores = WhiteBoxScores(canaries, np.array([0, 1, 1]))
    start = {"w": np.zeros(3)}
    scores.observe_updates({0: start, 1: start}, {0: {"w": np.array([-0.5, 9.0, 9.0])},
                                                  1: {"w": np.array([9.0, 0.25, -1.0])}})
    assert scores.scores.tolist() == [0.5, 0.25, 1.0]  # each canary read from its own hospital's update only


def test_canary_clients_push_seeded_unit_directions_and_score_their_cosines():
    shapes = {"a.weight": (4, 5), "a.bias": (5,), "b": (2, 3)}
    clients = CanaryClients(names=sorted(shapes), shapes=shapes, seed=7, count=40, clip_norm=0.5)
    directions = np.stack([clients.direction(j) for j in range(clients.count)])
    assert directions.shape == (40, 31) and np.allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=0, atol=1e-12)
    again = CanaryClients(names=sorted(shapes), shapes=shapes, seed=7, count=40, clip_norm=0.5)
    assert np.array_equal(directions, np.stack([again.direction(j) for j in range(40)]))  # public: the seed's
    other = CanaryClients(names=sorted(shapes), shapes=shapes, seed=8, count=40, clip_norm=0.5)
    assert not np.allclose(directions[0], other.direction(0))
    update = clients.round_update(np.array([3, 11]))
    assert {n: v.shape for n, v in update.items()} == shapes
    flat = np.concatenate([update[n].reshape(-1) for n in sorted(shapes)])
    assert np.allclose(flat, 0.5 * (directions[3] + directions[11]), rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    delta = {n: rng.normal(size=shape) for n, shape in shapes.items()}
    flat = np.concatenate([delta[n].reshape(-1) for n in sorted(shapes)])
    cosines = clients.cosines(delta)
    assert cosines.dtype == np.float64
    assert np.allclose(cosines, directions @ flat / np.linalg.norm(flat), rtol=0, atol=1e-12)
    assert clients.cosines(clients.round_update(np.array([5])))[5] == pytest.approx(1.0)
    with pytest.raises(FedrayError, match="all zeros"):
        clients.cosines({n: np.zeros(shape) for n, shape in shapes.items()})


def test_a_non_private_run_is_caught_and_a_dp_run_stays_below_its_epsilon(ray_session, tmp_path):
    two = [*AUDITED, "fl.num_hospitals=2"]  # fewer actors to start: most of a tiny run's time
    public = run_experiment(compose_typed(two, tmp_path / "public"))
    audit = public.summary.audit
    white_box, step = audit["canaries"]["gradient"], audit["canaries"]["gradient_step"]
    assert white_box["epsilon_lower_bound"] > 1.0 and white_box["m"] == 600
    assert step["epsilon_lower_bound"] > 1.0 and step["m"] == 600  # every step seen: at least as sharp
    assert audit["canaries"]["gradient_step_sampled"]["published_sample_epsilon"] == math.inf
    assert audit["canaries"]["input"]["m"] == 20
    sizes = public.summary.data
    assert (sizes.val, sizes.test) == (len(public.dealt.splits.val), len(public.dealt.splits.test))
    assert not _canary_ids([public.dealt.splits.val, public.dealt.splits.test])
    private = run_experiment(compose_typed([*two, "privacy=dpsgd", "privacy.epsilon=2"], tmp_path / "dp"))
    ledger, audit = private.summary.privacy, private.summary.audit
    assert math.isfinite(ledger["epsilon"]) and audit["delta"] == ledger["delta"]
    assert audit["canaries"]["gradient"]["epsilon_lower_bound"] <= ledger["epsilon"]
    assert audit["canaries"]["gradient_step"]["epsilon_lower_bound"] <= ledger["epsilon"]
    sampled = audit["canaries"]["gradient_step_sampled"]
    assert sampled["epsilon_lower_bound"] <= sampled["published_sample_epsilon"] < math.inf
    assert not [flag for flag in audit["flags"] if flag.startswith("violation")]


@pytest.mark.parametrize("overrides, absent", [
    (["privacy=dpfedavg", "privacy.epsilon=5"], "gradient"),
    (["audit.canaries=0"], "gradient"),
])
def test_the_white_box_audit_matches_the_mechanism(tmp_path, overrides, absent):
    canaries = prepare_experiment(compose_typed([*AUDITED, *overrides], tmp_path)).audit
    assert getattr(canaries, absent) is None
    if "privacy=dpfedavg" in overrides:
        assert canaries.clients.design.count == 600 and canaries.client_sample_rate == 1.0
    else:
        assert canaries.notes["white_box"] == "audit.canaries=0"


@pytest.mark.parametrize("override", ["audit.canaries=5", "audit.input_canaries=-1", "audit.confidence=1.0"])
def test_a_bad_audit_setting_is_one_line_naming_the_key(override):
    from fedray.config import compose_config
    from fedray.errors import FedrayError

    with pytest.raises(FedrayError, match=override.split("=")[0]):
        compose_config([override])


def test_a_one_run_bound_above_the_accountant_is_flagged_as_a_violation():
    from fedray.audit.canaries import one_run_report

    included = np.random.default_rng(0).random(1000) < 0.5
    scores = included.astype(float)  # the attacker separates trained-on canaries perfectly
    leaky = one_run_report(scores, included, delta=1e-5, confidence=0.95, accountant_epsilon=0.5)
    assert leaky["epsilon_lower_bound"] > 0.5
    assert leaky["flags"] and leaky["flags"][0].startswith("violation: the one-run canary audit certifies")
    honest = one_run_report(scores, included, delta=1e-5, confidence=0.95, accountant_epsilon=100.0)
    assert honest["flags"] == [] and honest["included"] == int(included.sum())
    assert leaky["p_value"] < 0.05 <= honest["p_value"]  # the p-value flags with the bound
    non_private = one_run_report(scores, included, delta=1e-5, confidence=0.95, accountant_epsilon=math.inf)
    assert non_private["p_value"] is None and non_private["flags"] == []


def test_the_report_carries_the_fdp_bound_and_both_ceilings_and_flags_only_steinke():
    from fedray.audit.canaries import one_run_report
    from fedray.audit.canary_bounds import one_run_ceiling
    from fedray.audit.fdp_bounds import fdp_ceiling

    included = np.random.default_rng(1).permutation(1000) < 500
    scores = included.astype(float)  # every guess right: both bounds at their ceilings
    report = one_run_report(scores, included, delta=1e-5, confidence=0.95, accountant_epsilon=6.0)
    assert report["ceiling"] == pytest.approx(one_run_ceiling(1000, 1e-5)) == report["epsilon_lower_bound"]
    assert report["ceiling_fdp"] == pytest.approx(fdp_ceiling(1000, 1e-5)) == report["epsilon_lower_bound_fdp"]
    assert report["epsilon_lower_bound"] < 6.0 < report["epsilon_lower_bound_fdp"]
    assert report["flags"] == []  # an f-DP bound above ε refutes a Gaussian curve, not the accountant's (ε, δ)
    assert report["k_plus_fdp"] + report["k_minus_fdp"] == report["correct_fdp"] and report["mu_lower_bound_fdp"] > 1.5
    pure = one_run_report(scores, included, delta=0.0, confidence=0.95, accountant_epsilon=100.0)
    assert pure["epsilon_lower_bound_fdp"] is None and pure["ceiling_fdp"] is None
    assert pure["mu_lower_bound_fdp"] == report["mu_lower_bound_fdp"] and pure["ceiling"] > 0
