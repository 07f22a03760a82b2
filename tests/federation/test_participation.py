"""Client sampling (``fl.clients_per_round``): Poisson participation drawn by the driver, counted by the accountant."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment
from fedray.privacy.accounting import RDP_ORDERS

BASE = [*TINY, "audit.enabled=false", "fl.rounds=4"]


def test_sampled_rounds_train_only_the_drawn_hospitals_and_dp_fedavg_counts_the_amplification(ray_session, tmp_path):
    sampled = run_experiment(compose_typed([*BASE, "fl.clients_per_round=2", "privacy=dpfedavg", "privacy.epsilon=5"],
                                           tmp_path))
    everyone = prepare_experiment(compose_typed([*BASE, "privacy=dpfedavg", "privacy.epsilon=5"], tmp_path))
    ledger = sampled.summary.privacy
    assert ledger["clients_per_round"] == 2 and ledger["epsilon"] <= 5
    # The same ε at q = 2/5 needs less noise than with every hospital every round.
    assert ledger["max_noise_multiplier"] < everyone.privacy.noise_multiplier
    opacus = RDPAccountant()  # dp-accounting's ledger against Opacus' RDP: two code bases
    opacus.history = [(ledger["max_noise_multiplier"], 2 / 5, 4)]
    assert ledger["epsilon"] == pytest.approx(opacus.get_epsilon(delta=ledger["delta"], alphas=RDP_ORDERS), rel=1e-3)
    # Amplification rests on the sample being secret: nothing published names a round's participants.
    assert all(r["clients"] == [] for r in sampled.rounds)


def test_participation_is_secret_by_default_and_reproducible_on_request(ray_session, tmp_path):
    draws = [[len(r["clients"]) for r in run_experiment(compose_typed(
        [*BASE, "fl.rounds=6", "fl.clients_per_round=2", "privacy.reproducible_noise=true"], tmp_path)).rounds]
        for _ in range(2)]
    assert draws[0] == draws[1] and len(set(draws[0])) > 1  # the same draws, and not the same every round


@pytest.mark.parametrize("extra, message", [
    (["fl.clients_per_round=6"], "more than the 5 hospitals"),
    (["fl.clients_per_round=2", "mode=local"], "client sampling needs mode=federated"),
])
def test_sampling_combinations_without_a_guarantee_are_refused(tmp_path, extra, message):
    with pytest.raises(FedrayError, match=message):
        prepare_experiment(compose_typed([*BASE, *extra], tmp_path))
