"""Secure aggregation inside fedray's rounds: sums equal plain sums up to fixed-point rounding; the driver sees sums."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment
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


def _masked_round(secure: SecureRound, clients, *, seed: int = 0) -> dict:
    ids = tuple(range(len(clients)))
    session = SecureAggregationSession(participants=ids, round_idx=3, attempt=0,
                                       vector_length=secure.vector_length, value_bound=secure.value_bound)
    maskers = [ClientMasker(session, k) for k in ids]
    keys = {k: m.public_key for k, m in zip(ids, maskers)}
    masked = {}
    for k, (masker, (params, n)) in enumerate(zip(maskers, clients)):
        masker.agree(keys)
        masked[k] = masker.mask(secure.payload(GLOBAL, params, n, rng=np.random.default_rng([seed, k])))
    return secure.apply(GLOBAL, session.unmask_sum(masked), participants=len(ids))


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
