"""FedAvgM, FedAdagrad, FedAdam, FedYogi against numbers worked out by hand (Reddi et al. 2021, Algorithm 2).

Complements tests/strategies/test_fedopt.py (one scalar, identical clients): here two
coordinates whose Yogi signs differ, unequal client weights, integer buffers,
float32 parameters and the optimizer state a checkpoint carries.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedray.strategies.base import ClientResult
from fedray.strategies.fedavg import FedAvg
from fedray.strategies.server_optimizers import FedAdagrad, FedAdam, FedAvgM, FedYogi

# v_0 = τ² = 0.25; β1 = 0.5 and β2 = 0.75 keep the hand arithmetic short.
ADAPTIVE = dict(weighting="samples", server_lr=0.1, beta1=0.5, beta2=0.75, tau=0.5)
# Two rounds of pseudo-gradients. Coordinate 0: Δ² > v in round 1 (Yogi's v grows), Δ² < v in round 2 (it
# shrinks); coordinate 1: Δ² < v throughout.
DELTAS = [np.array([2.0, 0.2]), np.array([0.5, 0.2])]
# m_1 = 0.5·Δ_1 = [1, 0.1]; m_2 = 0.5·m_1 + 0.5·Δ_2 = [0.75, 0.15]; w_t = w_{t-1} + 0.1·m_t / (√v_t + 0.5).
FIRST_MOMENT = [0.75, 0.15]


def _optimizers():
    return {"adam": FedAdam(**ADAPTIVE), "yogi": FedYogi(**ADAPTIVE), "adagrad": FedAdagrad(**ADAPTIVE),
            "avgm": FedAvgM(weighting="samples", server_lr=0.5, server_momentum=0.9)}


@pytest.mark.parametrize("name, second_moment, weights", [
    # v_1 = 0.75·0.25 + 0.25·Δ_1² = [1.1875, 0.1975]; v_2 = 0.75·v_1 + 0.25·Δ_2² = [0.953125, 0.158125].
    ("adam", [[1.1875, 0.1975], [0.953125, 0.158125]],
     [[0.062903971828, 0.010588624597], [0.113707300840, 0.027298935942]]),
    # v_1 = 0.25 - 0.25·Δ_1²·sign(0.25 - Δ_1²) = [0.25 + 1, 0.25 - 0.01] = [1.25, 0.24];
    # v_2 = [1.25 - 0.0625, 0.24 - 0.01] = [1.1875, 0.23] (both signs positive now). √1.25 + 0.5 is the golden
    # ratio φ, so w_1[0] = 0.1/φ.
    ("yogi", [[1.25, 0.24], [1.1875, 0.23]],
     [[0.061803398875, 0.010102051443], [0.108981377746, 0.025414687195]]),
    # v_1 = 0.25 + Δ_1² = [4.25, 0.29]; v_2 = v_1 + Δ_2² = [4.5, 0.33].
    ("adagrad", [[4.25, 0.29], [4.5, 0.33]],
     [[0.039038820320, 0.009629120178], [0.067650355795, 0.023589669801]]),
])
def test_adaptive_optimizers_keep_their_moments_across_two_rounds(name, second_moment, weights):
    optimizer = _optimizers()[name]
    params = {"w": np.zeros(2)}
    for delta, want_v, want_w in zip(DELTAS, second_moment, weights):
        params = optimizer.apply_update(params, {"w": delta})
        np.testing.assert_allclose(optimizer.state_dict()["v"]["w"], want_v, rtol=1e-12)
        np.testing.assert_allclose(params["w"], want_w, rtol=1e-10)
    np.testing.assert_allclose(optimizer.state_dict()["m"]["w"], FIRST_MOMENT, rtol=1e-12)


def test_server_momentum_accumulates_the_pseudo_gradient():
    # u_1 = Δ_1 = [2, 0.2], w_1 = 0.5·u_1 = [1, 0.1]; u_2 = 0.9·u_1 + Δ_2 = [2.3, 0.38], w_2 = w_1 + 0.5·u_2.
    optimizer = _optimizers()["avgm"]
    params = {"w": np.zeros(2)}
    for delta, want in zip(DELTAS, [[1.0, 0.1], [2.15, 0.29]]):
        params = optimizer.apply_update(params, {"w": delta})
        np.testing.assert_allclose(params["w"], want, rtol=1e-12)
    np.testing.assert_allclose(optimizer.state_dict()["velocity"]["w"], [2.3, 0.38], rtol=1e-12)


def _two_clients(global_counter: int = 3) -> tuple[dict, list[ClientResult]]:
    """Client 0 (1 sample): w = [1, 2], counter 10; client 1 (3 samples): w = [4, 8], counter 21."""
    global_params = {"w": np.zeros(2, dtype=np.float32), "num_batches_tracked": np.array(global_counter)}
    results = [ClientResult(hospital=0, params={"w": np.array([1.0, 2.0], dtype=np.float32),
                                                "num_batches_tracked": np.array(10)}, num_samples=1),
               ClientResult(hospital=1, params={"w": np.array([4.0, 8.0], dtype=np.float32),
                                                "num_batches_tracked": np.array(21)}, num_samples=3)]
    return global_params, results


@pytest.mark.parametrize("weighting, first, second", [
    # Mean (1·[1, 2] + 3·[4, 8])/4 = [3.25, 6.5] = Δ_1, w_1 = 0.5·Δ_1; Δ_2 = mean - w_1 = w_1,
    # u_2 = 0.9·Δ_1 + Δ_2 = [4.55, 9.1], w_2 = w_1 + 0.5·u_2.
    ("samples", [1.625, 3.25], [3.9, 7.8]),
    # Mean ([1, 2] + [4, 8])/2 = [2.5, 5]; the same arithmetic.
    ("uniform", [1.25, 2.5], [3.0, 6.0]),
])
def test_the_pseudo_gradient_is_weighted_like_fedavg(weighting, first, second):
    optimizer = FedAvgM(weighting=weighting, server_lr=0.5, server_momentum=0.9)
    params, results = _two_clients()
    for server_round, want in enumerate([first, second], start=1):
        params = optimizer.aggregate(server_round, params, results)
        np.testing.assert_allclose(params["w"], want, rtol=1e-6)


@pytest.mark.parametrize("name", ["adam", "yogi", "adagrad", "avgm"])
def test_integer_buffers_take_fedavg_average_and_floats_keep_their_dtype(name):
    optimizer = _optimizers()[name]
    global_params, results = _two_clients(global_counter=3)
    new = optimizer.aggregate(1, global_params, results)
    assert new["num_batches_tracked"] == 18  # round(0.25·10 + 0.75·21 = 18.25), not a step from 3
    assert new["num_batches_tracked"].dtype == global_params["num_batches_tracked"].dtype
    assert new["w"].dtype == np.float32
    assert all("num_batches_tracked" not in slot for slot in optimizer.state_dict().values())


def test_momentum_free_unit_rate_fedavgm_is_fedavg():
    global_params, results = _two_clients()
    plain = FedAvg(weighting="samples").aggregate(1, global_params, results)
    stepped = FedAvgM(weighting="samples", server_lr=1.0, server_momentum=0.0).aggregate(1, global_params, results)
    np.testing.assert_array_equal(stepped["w"], plain["w"])
    np.testing.assert_array_equal(stepped["num_batches_tracked"], plain["num_batches_tracked"])


def test_apply_update_steps_only_the_tensors_it_is_given():
    # DP-FedAvg hands over a mean update of the floating tensors; the rest of the model is left as it was.
    optimizer = FedAdam(**ADAPTIVE)
    global_params = {"w": np.zeros(2), "num_batches_tracked": np.array(3)}
    new = optimizer.apply_update(global_params, {"w": DELTAS[0]})
    np.testing.assert_allclose(new["w"], [0.062903971828, 0.010588624597], rtol=1e-10)
    assert new["num_batches_tracked"] == 3
    np.testing.assert_array_equal(global_params["w"], [0.0, 0.0])  # the caller's arrays are not written to


@pytest.mark.parametrize("name", ["adam", "yogi", "adagrad", "avgm"])
def test_state_dict_is_numpy_and_a_restored_optimizer_takes_the_same_step(name):
    original, restored, fresh = _optimizers()[name], _optimizers()[name], _optimizers()[name]
    params = original.apply_update({"w": np.zeros(2)}, {"w": DELTAS[0]})
    state = original.state_dict()
    assert state and all(isinstance(value, np.ndarray) for slot in state.values() for value in slot.values())
    restored.load_state_dict(state)
    want = original.apply_update(params, {"w": DELTAS[1]})["w"]
    np.testing.assert_array_equal(restored.apply_update(params, {"w": DELTAS[1]})["w"], want)
    assert not np.allclose(fresh.apply_update(params, {"w": DELTAS[1]})["w"], want)  # the state matters


def test_state_dict_is_a_copy():
    optimizer = FedYogi(**ADAPTIVE)
    optimizer.apply_update({"w": np.zeros(2)}, {"w": DELTAS[0]})
    snapshot = optimizer.state_dict()
    snapshot["v"]["w"][:] = 99.0
    optimizer.apply_update({"w": np.zeros(2)}, {"w": DELTAS[1]})
    np.testing.assert_allclose(optimizer.state_dict()["v"]["w"], [1.1875, 0.23], rtol=1e-12)
