"""privacy=distributed_dpsgd: each round is one DP-SGD step over all hospitals' records; each hospital adds a share of
the noise, the masked mean completes it, and the ledger accounts every record at the whole σ."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_in_process
from fedray.privacy.mechanisms.dpsgd import calibrate_sigma
from fedray.privacy.randomness import NoiseSource, hospital
from fedray.training import build_evaluator, build_trainer

DISTRIBUTED = [*TINY, "privacy=distributed_dpsgd", "privacy.epsilon=2", "fl.secure_aggregation=true",
               "fl.local_epochs=1", "strategy.weighting=uniform", "audit.enabled=false",
               "privacy.reproducible_noise=true"]


def _trainer(prep, plan, k: int):
    shard = prep.dealt.train_shards[k]
    return build_trainer(cfg=prep.cfg, plan=plan, num_classes=prep.num_classes, num_features=prep.num_features,
                         inputs=shard.inputs, labels=shard.labels, input_map=prep.dealt.input_map,
                         device=torch.device("cpu"), hospital=k,
                         noise=NoiseSource.reproducible(prep.cfg.seed, hospital(k)))


def test_sigma_is_calibrated_for_one_step_a_round_and_each_share_is_a_k_minus_t_th_of_its_variance(tmp_path):
    prep = prepare_experiment(compose_typed(DISTRIBUTED, tmp_path))
    plan, rounds = prep.privacy, prep.cfg.fl.rounds
    sigma = max(calibrate_sigma(epsilon=2.0, delta=plan.delta, sample_rate=s.sample_rate, steps=rounds,
                                accountant="rdp", statistics=()) for s in plan.hospitals)
    assert all(s.planned_steps == rounds and s.noise_multiplier == sigma for s in plan.hospitals)
    assert plan.colluders == 1 and plan.noise_share == pytest.approx(sigma / math.sqrt(5 - 1))
    assert 0 < plan.ledger(plan.planned_states())["epsilon"] <= 2.0


def test_a_hospital_takes_one_step_noised_by_its_share_alone(tmp_path):
    """The step with the share's noise minus the same step without noise (same Poisson draw) is lr·share·C/B·z."""
    prep = prepare_experiment(compose_typed(DISTRIBUTED, tmp_path))
    plan = prep.privacy
    silent = dataclasses.replace(plan, hospitals=tuple(dataclasses.replace(s, noise_multiplier=0.0)
                                                       for s in plan.hospitals))
    noised, clean = _trainer(prep, plan, 0), _trainer(prep, silent, 0)
    start = noised.export()
    (got, metrics), (want, _) = noised.fit(start, epochs=1, round_idx=1), clean.fit(start, epochs=1, round_idx=1)
    assert metrics["local_steps"] == 1 and noised.privacy_state() == {"dp_steps": 1.0}
    lr = noised.optimizer.param_groups[0]["lr"]
    noise = np.concatenate([(got[n] - want[n]).ravel() for n, p in start.items() if np.issubdtype(p.dtype, np.floating)
                            and not np.array_equal(got[n], start[n])])
    expected_std = lr * plan.noise_share * plan.max_grad_norm / prep.cfg.train.batch_size
    assert noise.size > 1000 and noise.std() == pytest.approx(expected_std, rel=0.08)


def test_its_non_private_baseline_keeps_one_step_a_round_so_the_inf_point_trains_alike(tmp_path):
    """At epsilon = inf the hospitals take one unclipped, noiseless step of batch B a round (as under DP), not an
    epoch of them; privacy=none on the same config takes the epoch."""
    inf = [*DISTRIBUTED, "privacy.epsilon=.inf", "train.batch_size=4"]
    baseline = prepare_experiment(compose_typed(inf, tmp_path / "inf"))
    assert not baseline.privacy.claims_dp and baseline.privacy.epoch_steps == 1
    _, metrics = _trainer(baseline, baseline.privacy, 0).fit(_trainer(baseline, baseline.privacy, 0).export(),
                                                             epochs=1, round_idx=0)
    assert metrics["local_steps"] == 1
    plain = prepare_experiment(compose_typed([o for o in inf if not o.startswith("privacy.")] + ["privacy=none"],
                                             tmp_path / "none"))
    trainer = _trainer(plain, plain.privacy, 0)
    _, metrics = trainer.fit(trainer.export(), epochs=1, round_idx=0)
    assert metrics["local_steps"] == math.ceil(trainer.num_samples / 4) > 1
    result = run_in_process(compose_typed([*inf, "cluster=inprocess"], tmp_path / "run"))  # the hospitals' path
    assert math.isinf(result.summary.epsilon) and len(result.rounds) == baseline.cfg.fl.rounds


def test_the_first_global_model_is_the_uniform_mean_of_the_hospitals_noised_steps(tmp_path):
    """Through the masked round: the run's model after one round is (1/K) Σ_k w_k, each w_k one noised step of
    hospital k from the initial model, up to fixed-point rounding; the ledger states the shares and who is trusted."""
    cfg = compose_typed([*DISTRIBUTED, "fl.rounds=1", "cluster=inprocess"], tmp_path / "run")
    result = run_in_process(cfg)
    prep = prepare_experiment(cfg)
    torch.manual_seed(cfg.seed)  # as the driver's process, which builds the initial model
    start = build_evaluator(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=prep.num_features,
                            input_map=prep.dealt.input_map, device=torch.device("cpu")).export()
    trainers = [_trainer(prep, prep.privacy, k) for k in range(5)]
    steps = [t.fit(start, epochs=1, round_idx=1)[0] for t in trainers]
    for name, value in result.final_params[0].items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(value, np.mean([s[name] for s in steps], axis=0), atol=1e-5)
    ledger = result.summary.privacy
    assert ledger["mechanism"] == "distributed_dpsgd" and 0 < ledger["epsilon"] <= 2.0
    assert ledger["noise_share"] == pytest.approx(prep.privacy.noise_share) and ledger["colluders"] == 1
    assert "colluding" in ledger["trust"]
    assert all(r["clients"] == [] for r in result.rounds)  # masked rounds publish no hospital's row


@pytest.mark.parametrize("change, message", [
    ("fl.secure_aggregation=false", "set fl.secure_aggregation=true"),
    ("fl.local_epochs=2", "set fl.local_epochs=1"),
    ("fl.clients_per_round=3", "set fl.clients_per_round=null"),
    ("strategy.weighting=samples", "set strategy.weighting=uniform"),
    ("privacy.colluders=5", "set privacy.colluders below 5"),
    ("fl.train_together=2", "set fl.train_together=1"),
])
def test_what_would_break_the_shares_is_refused_in_one_line(tmp_path, change, message):
    with pytest.raises(FedrayError, match=message) as refusal:
        prepare_experiment(compose_typed([*DISTRIBUTED, change], tmp_path))
    assert "\n" not in str(refusal.value) and str(refusal.value).startswith("privacy=distributed_dpsgd: ")
