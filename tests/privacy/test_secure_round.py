"""Secure aggregation inside fedray's rounds: sums equal plain sums up to fixed-point rounding; the driver sees sums."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment, run_in_process
from fedray.privacy.secure_round import SecureRound
from fedray.privacy.client_level import clip_update
from fedray.privacy.secure_aggregation import ClientMasker, SecureAggregationSession
from fedray.strategies.aggregate import weighted_average

GLOBAL = {"conv.weight": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32),
          "bn.num_batches_tracked": np.array(9, np.int64)}


def _clients(count: int) -> list[tuple[dict, int]]:
    rng = np.random.default_rng(0)
    return [({"conv.weight": rng.normal(size=(4, 3)).astype(np.float32),
              "bias": rng.normal(size=3).astype(np.float32),
              "bn.num_batches_tracked": np.array(11, np.int64)}, int(rng.integers(5, 50))) for _ in range(count)]


def _masked_round(secure: SecureRound, clients, *, seed: int = 0, global_params: dict = GLOBAL) -> dict:
    ids = tuple(range(len(clients)))
    session = SecureAggregationSession(participants=ids, round_idx=3, attempt=0,
                                       vector_length=secure.vector_length, value_bound=secure.value_bound)
    maskers = [ClientMasker(session, k) for k in ids]
    keys = {k: m.public_key for k, m in zip(ids, maskers)}
    masked = {}
    for k, (masker, (params, n)) in enumerate(zip(maskers, clients)):
        masker.agree(keys)
        masked[k] = masker.mask(secure.payload(global_params, params, n, rng=np.random.default_rng([seed, k])))
    return secure.apply(global_params, session.unmask_sum(masked), participants=len(ids))


@pytest.mark.parametrize("weighting", ["samples", "uniform"])
def test_masked_fedavg_equals_fedavg_up_to_rounding_and_keeps_integer_buffers(weighting):
    clients = _clients(5)
    secure = SecureRound.for_fedavg(GLOBAL, weighted=weighting == "samples", max_abs=10.0, max_samples=50)
    got = _masked_round(secure, clients)
    expected = weighted_average(clients, weighting=weighting)
    for name in ("conv.weight", "bias"):
        np.testing.assert_allclose(got[name], expected[name], atol=1e-6)
    assert got["bn.num_batches_tracked"] == 9 and got["conv.weight"].dtype == np.float32


def test_masked_dp_fedavg_sum_equals_the_plain_noised_sum_and_carries_the_full_noise():
    clients = _clients(5)
    secure = SecureRound.for_dp_fedavg(GLOBAL, clip_norm=0.5, noise_multiplier=2.0, num_clients=5)
    got = _masked_round(secure, clients, seed=7)
    plain = sum(secure.payload(GLOBAL, p, n, rng=np.random.default_rng([7, k])) for k, (p, n) in enumerate(clients))
    np.testing.assert_allclose(got["conv.weight"].ravel(), (plain / 5)[:12], atol=1e-6)
    clipped = sum(np.concatenate([clip_update({k: p[k] - GLOBAL[k] for k in ("conv.weight", "bias")},
                                              clip_norm=0.5)[0][k].ravel() for k in ("conv.weight", "bias")])
                  for p, _ in clients)
    noise = plain - clipped  # the sum of five shares N(0, z²S²/5): std z·S = 1.0
    assert 0.3 < noise.std() < 2.0


def test_a_secure_run_equals_the_plain_run_up_to_rounding_and_a_killed_hospital_changes_nothing(tiny_run,
                                                                                               tmp_path):
    base = [*TINY, "audit.enabled=false"]
    plain = tiny_run  # the session's run of TINY (conftest), which is ``base``: TINY turns the audit off
    secure = run_experiment(compose_typed([*base, "fl.secure_aggregation=true"], tmp_path))
    killed = run_experiment(compose_typed([*base, "fl.secure_aggregation=true"], tmp_path), kill_hospital=(1, 2))
    for name, value in plain.final_params[0].items():
        np.testing.assert_allclose(secure.final_params[0][name], value, atol=1e-6)
        np.testing.assert_array_equal(killed.final_params[0][name], secure.final_params[0][name])
    assert killed.summary.hospital_restarts >= 1
    for record in secure.rounds:  # nothing per hospital reaches the driver
        assert record["clients"] == [] and record["hospital_val"] == []
    assert secure.summary.privacy["aggregation"].startswith("secure")


def test_distributed_dp_fedavg_needs_no_trusted_driver(ray_session, tmp_path):
    result = run_experiment(compose_typed([*TINY, "audit.enabled=false", "privacy=dpfedavg", "privacy.epsilon=5",
                                           "fl.secure_aggregation=true"], tmp_path))
    ledger = result.summary.privacy
    assert ledger["unit"] == "hospital" and 0 < ledger["epsilon"] <= 5
    assert ledger["trust"].startswith("nobody: distributed DP")


@pytest.mark.parametrize("overrides", [[*TINY, "mode=local"], [*TINY, "fl.num_hospitals=1"],
                                       ["data=breast_cancer", "model=random_forest"]])
def test_secure_aggregation_is_refused_where_there_is_no_sum(tmp_path, overrides):
    with pytest.raises(FedrayError, match="fl.secure_aggregation=true"):
        prepare_experiment(compose_typed([*overrides, "fl.secure_aggregation=true"], tmp_path))


def _cohorts(cfg) -> list[list[int]]:
    """The driver's reproducible draws of a run's cohorts, as it draws them."""
    from fedray.privacy.randomness import DRIVER, NoiseSource, Purpose
    from fedray.strategies.sampling import sample_clients

    noise = NoiseSource.reproducible(cfg.seed, DRIVER)
    return [sample_clients(cfg.fl.num_hospitals, cfg.fl.clients_per_round,
                           noise.numpy_generator(r, Purpose.CLIENT_SAMPLING)) for r in range(1, cfg.fl.rounds + 1)]


@pytest.mark.parametrize("cohort", [1, 2, 3, 4])
def test_a_sampled_cohorts_noise_shares_sum_to_the_whole_noise_whoever_was_drawn(cohort):
    wide = {"w": np.zeros(20_000, np.float32)}
    expected = SecureRound.for_dp_fedavg(wide, clip_norm=0.5, noise_multiplier=2.0, num_clients=4, sampled=True)
    secure = expected.for_cohort(cohort)
    assert secure.num_clients == 4 and secure.honest_shares == cohort and secure.min_cohort == 1
    assert secure.top_up_std(cohort) == 0.0  # without colluders the shares carry it all
    noise = sum(secure.payload(wide, wide, 0, rng=np.random.default_rng([1, k])) for k in range(cohort))
    assert noise.std() == pytest.approx(2.0 * 0.5, rel=0.03)  # z·S, the central mechanism's noise
    assert SecureRound.for_fedavg(wide, weighted=False, max_abs=1.0, max_samples=1).min_cohort == 2


@pytest.mark.parametrize("colluders", [1, 2])
@pytest.mark.parametrize("cohort", [1, 2, 3, 4, 6])
def test_with_colluders_the_honest_shares_carry_z_h_and_the_topped_up_sum_carries_z_for_every_cohort(cohort,
                                                                                                   colluders):
    """Whoever was drawn: any cohort - t of the shares (or one, the hospital's own, when the cohort is no larger than
    t) carry z_h·S, and the released sum, shares plus the driver's top-up, carries z·S with z = z_h sqrt(t+1)."""
    wide, z_h, clip = {"w": np.zeros(40_000, np.float32)}, 2.0, 0.5
    secure = SecureRound.for_dp_fedavg(wide, clip_norm=clip, noise_multiplier=z_h, num_clients=6,
                                       colluders=colluders, sampled=True).for_cohort(cohort)
    assert secure.released_noise_multiplier == pytest.approx(z_h * np.sqrt(colluders + 1))
    shares = [secure.payload(wide, wide, 0, rng=np.random.default_rng([2, k])) for k in range(cohort)]
    honest = sum(shares[:max(cohort - colluders, 1)])
    assert honest.std() == pytest.approx(z_h * clip, rel=0.03)
    released = secure.top_up(sum(shares), cohort, np.random.default_rng(9))
    assert released.std() == pytest.approx(secure.released_noise_multiplier * clip, rel=0.03)
    unsampled = SecureRound.for_dp_fedavg(wide, clip_norm=clip, noise_multiplier=z_h, num_clients=6,
                                          colluders=colluders)
    assert unsampled.honest_shares == 6 - colluders and unsampled.top_up_std(6) == 0.0


def test_a_sampled_masked_fedavg_equals_the_sampled_plain_one_up_to_rounding(tmp_path):
    """Pair keys among each round's cohort only: the same cohorts train and their masked sum is their FedAvg."""
    base = [*TINY, "audit.enabled=false", "fl.rounds=3", "fl.clients_per_round=3", "privacy.reproducible_noise=true",
            "cluster=inprocess"]
    plain = run_in_process(compose_typed(base, tmp_path / "plain"))
    cfg = compose_typed([*base, "fl.secure_aggregation=true"], tmp_path / "secure")
    assert all(len(c) >= 2 for c in _cohorts(cfg)) and any(len(c) < 5 for c in _cohorts(cfg))  # sampled, masked
    secure = run_in_process(cfg)
    for name, value in plain.final_params[0].items():
        np.testing.assert_allclose(secure.final_params[0][name], value, atol=1e-5)
    assert [sorted(c["hospital"] for c in r["clients"]) for r in plain.rounds] == _cohorts(cfg)
    assert all(r["clients"] == [] for r in secure.rounds)  # the masked rounds publish no cohort


def test_distributed_dp_fedavg_over_sampled_cohorts_states_its_epsilon_against_the_driver(tmp_path):
    """q = 1/5 over six rounds draws empty cohorts (the driver's noise alone), lone hospitals (their payload carries
    the whole noise) and masked pairs; readers get the amplified ε, the driver, who knows each cohort, more."""
    cfg = compose_typed([*TINY, "audit.enabled=false", "fl.rounds=6", "fl.clients_per_round=1", "privacy=dpfedavg",
                         "privacy.epsilon=5", "privacy.reproducible_noise=true", "fl.secure_aggregation=true",
                         "privacy.colluders=0", "cluster=inprocess"], tmp_path)
    assert {min(len(c), 2) for c in _cohorts(cfg)} == {0, 1, 2}
    result = run_in_process(cfg)
    ledger = result.summary.privacy
    assert ledger["epsilon"] <= 5 < ledger["epsilon_against_driver"]
    assert "epsilon_against_driver" in ledger["trust"]
    assert len(result.rounds) == 6 and all(r["clients"] == [] for r in result.rounds)
    assert all(np.isfinite(v).all() for v in result.final_params[0].values())


def test_colluders_with_sampled_secure_cohorts_keep_the_readers_epsilon_and_state_the_drivers(tmp_path):
    """t = 1 colluder: z is calibrated for readers, the honest shares carry z/sqrt(2), and the driver's ε says so."""
    from fedray.privacy.mechanisms.dpfedavg import round_event

    base = [*TINY, "audit.enabled=false", "fl.rounds=4", "fl.clients_per_round=2", "privacy=dpfedavg",
            "privacy.epsilon=5", "privacy.reproducible_noise=true", "fl.secure_aggregation=true", "cluster=inprocess"]
    cfg = compose_typed([*base, "privacy.colluders=1"], tmp_path / "t1")
    result = run_in_process(cfg)
    ledger, plan = result.summary.privacy, prepare_experiment(cfg).privacy
    assert ledger["epsilon"] <= 5 and ledger["colluders"] == 1
    assert ledger["honest_noise_multiplier"] == pytest.approx(plan.noise_multiplier / np.sqrt(2))
    assert ledger["epsilon_against_driver"] == pytest.approx(
        plan.compose([round_event(plan.noise_multiplier / np.sqrt(2), 1.0, 4)]))
    assert "colluding with up to 1 hospital(s)" in ledger["trust"]
    assert all(r["clients"] == [] for r in result.rounds)
    assert all(np.isfinite(v).all() for v in result.final_params[0].values())
    alone = prepare_experiment(compose_typed([*base, "privacy.colluders=0"], tmp_path / "t0")).privacy
    assert alone.noise_multiplier == pytest.approx(plan.noise_multiplier)  # colluders cost the model no noise


def test_a_frozen_backbone_stays_out_of_the_mask_and_keeps_its_global_value():
    """Only what local training can change is masked (a cached head's backbone is not): its tensors, buffers
    included, keep the global value, and the trained tensors are FedAvg's mean."""
    import torch

    from fedray.models import frozen_state_names

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    for layer in (model[0], model[1]):
        layer.requires_grad_(False)
    frozen = frozen_state_names(model)
    assert frozen == {"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                      "1.num_batches_tracked"}
    global_params = {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}
    secure = SecureRound.for_fedavg({n: v for n, v in global_params.items() if n not in frozen}, weighted=False,
                                    max_abs=10.0, max_samples=1)
    assert secure.vector_length == 4 * 2 + 2
    rng = np.random.default_rng(0)
    clients = [({**global_params, "2.weight": rng.normal(size=(2, 4)).astype(np.float32)}, 1) for _ in range(3)]
    result = _masked_round(secure, clients, global_params=global_params)
    np.testing.assert_allclose(result["2.weight"], np.mean([c["2.weight"] for c, _ in clients], axis=0), atol=1e-6)
    for name in frozen:
        np.testing.assert_array_equal(result[name], global_params[name])


def test_a_masked_non_private_run_of_a_cached_head_reports_its_feature_cache_timing(tmp_path):
    """Under secure aggregation a hospital may still report its feature cache's timing (an operation, outside any
    claim): the first round's progress line reads it (it once failed on the filtered, empty report)."""
    result = run_in_process(compose_typed([*TINY, "model=efficientnet_lite0", "model.pretrained=true",
                                           "model.finetune=head", "data.image_size=32", "audit.enabled=false",
                                           "fl.rounds=1", "fl.secure_aggregation=true", "cluster=inprocess"],
                                          tmp_path))
    assert "frozen features" in result.rounds[0]["feature_cache"]
