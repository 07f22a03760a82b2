"""Poisson client sampling: sorted distinct ids, each hospital drawn at rate q = m/K, everyone at q = 1."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.strategies.sampling import client_sampling_rate, sample_clients


@pytest.mark.parametrize("clients_per_round, rate", [(None, 1.0), (5, 1.0), (2, 0.4), (1, 0.2)])
def test_the_rate_is_clients_per_round_over_hospitals(clients_per_round, rate):
    assert client_sampling_rate(5, clients_per_round) == rate


@pytest.mark.parametrize("num_clients, clients_per_round", [(5, 0), (5, 6), (5, -1), (0, None)])
def test_rates_outside_zero_one_are_refused(num_clients, clients_per_round):
    with pytest.raises(ValueError):
        client_sampling_rate(num_clients, clients_per_round)


@pytest.mark.parametrize("clients_per_round", [None, 5])
def test_everyone_takes_part_at_rate_one_and_no_randomness_is_used(clients_per_round):
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    assert sample_clients(5, clients_per_round, rng) == [0, 1, 2, 3, 4]
    assert rng.bit_generator.state == before


def test_draws_are_sorted_distinct_valid_ids():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        drawn = sample_clients(7, 3, rng)
        assert drawn == sorted(set(drawn))
        assert all(isinstance(k, int) and 0 <= k < 7 for k in drawn)


def test_each_hospital_is_drawn_at_rate_q_and_the_round_size_varies():
    rng = np.random.default_rng(2)
    rounds = 20_000
    drawn = [sample_clients(5, 2, rng) for _ in range(rounds)]
    counts = np.bincount(np.concatenate([d for d in drawn if d]), minlength=5)
    # Each frequency has std √(0.4·0.6/20000) ≈ 0.0035: 0.015 is over four of them.
    np.testing.assert_allclose(counts / rounds, 0.4, atol=0.015)
    sizes = np.array([len(d) for d in drawn])
    assert sizes.mean() == pytest.approx(2.0, abs=0.05)  # the expected count m
    # Poisson, not fixed-size: empty rounds occur with probability 0.6⁵ ≈ 0.078, all five with 0.4⁵ ≈ 0.010.
    assert np.mean(sizes == 0) == pytest.approx(0.6**5, abs=0.01)
    assert set(sizes) == {0, 1, 2, 3, 4, 5}


def test_the_same_generator_state_gives_the_same_draws():
    first = [sample_clients(5, 2, np.random.default_rng(seed)) for seed in range(50)]
    again = [sample_clients(5, 2, np.random.default_rng(seed)) for seed in range(50)]
    assert first == again and len({tuple(d) for d in first}) > 1


def test_the_draw_is_the_drivers_rule_so_reproducible_runs_keep_their_participants():
    # Driver.sample_participants draws uniforms u_k and keeps k with u_k < q: delegating must not change a run.
    for seed in range(50):
        uniforms = np.random.default_rng(seed).random(5)
        assert sample_clients(5, 2, np.random.default_rng(seed)) == [k for k in range(5) if uniforms[k] < 0.4]
