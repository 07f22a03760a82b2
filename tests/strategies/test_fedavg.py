"""FedAvg arithmetic against hand computations (numpy only, no Ray)."""

import numpy as np
import pytest

from fedray.errors import FedrayError
from fedray.config import compose_config
from fedray.privacy.randomness import DRIVER, NoiseSource
from fedray.strategies import ClientResult, FedAvg, build_strategy
from fedray.strategies.dp_fedavg import DPFedAvg
from fedray.strategies.aggregate import client_weights, weighted_average


def test_sample_weighted_mean_matches_hand_computation():
    a = {"w": np.array([[1.0, 2.0]], dtype=np.float32), "b": np.array([0.0], dtype=np.float32)}
    b = {"w": np.array([[3.0, 6.0]], dtype=np.float32), "b": np.array([4.0], dtype=np.float32)}
    out = weighted_average([(a, 10), (b, 30)], weighting="samples")
    # (10*1 + 30*3)/40 = 2.5 ; (10*2 + 30*6)/40 = 5 ; (0*10 + 4*30)/40 = 3
    np.testing.assert_allclose(out["w"], [[2.5, 5.0]])
    np.testing.assert_allclose(out["b"], [3.0])
    assert out["w"].dtype == np.float32


def test_uniform_mean_ignores_sample_counts():
    a, b, c = ({"w": np.array([v])} for v in (1.0, 2.0, 6.0))
    out = weighted_average([(a, 1), (b, 100), (c, 7)], weighting="uniform")
    np.testing.assert_allclose(out["w"], [3.0])


def test_integer_buffers_keep_dtype_and_round():
    a = {"num_batches_tracked": np.array(3, dtype=np.int64)}
    b = {"num_batches_tracked": np.array(4, dtype=np.int64)}
    out = weighted_average([(a, 1), (b, 3)])
    assert out["num_batches_tracked"].dtype == np.int64
    assert int(out["num_batches_tracked"]) == 4  # 3.75 rounds to 4


def test_weights_sum_to_one_and_reject_empty():
    np.testing.assert_allclose(client_weights([1, 1, 2], weighting="samples"), [0.25, 0.25, 0.5])
    with pytest.raises(ValueError):
        client_weights([0, 0], weighting="samples")
    with pytest.raises(ValueError):
        client_weights([1], weighting="median")


def test_identical_clients_are_a_fixed_point():
    params = {"w": np.random.default_rng(0).normal(size=(4, 3))}
    results = [ClientResult(hospital=k, params=params, num_samples=k + 1) for k in range(5)]
    out = FedAvg("samples").aggregate(1, params, results)
    np.testing.assert_allclose(out["w"], params["w"], rtol=1e-12)


def test_unknown_strategies_and_weightings_are_refused_by_the_config():
    assert isinstance(build_strategy(compose_config(["strategy.weighting=uniform"]).strategy), FedAvg)
    with pytest.raises(FedrayError, match="unknown strategy 'fedsgd'"):
        compose_config(["strategy=fedsgd"])
    with pytest.raises(FedrayError, match="strategy.weighting"):
        compose_config(["strategy.weighting=median"])


def test_dp_fedavg_without_noise_and_loose_clip_is_uniform_fedavg():
    rng = np.random.default_rng(0)
    global_params = {"w": rng.normal(size=(3, 2)), "steps": np.array(7, dtype=np.int64)}
    results = [ClientResult(hospital=k, params={"w": global_params["w"] + rng.normal(size=(3, 2)),
                                                "steps": np.array(9, dtype=np.int64)}, num_samples=k + 1)
               for k in range(4)]
    loose = _dp_fedavg(clip_norm=1e6, noise_multiplier=0.0, clients=4).aggregate(1, global_params, results)
    plain = FedAvg("uniform").aggregate(1, global_params, results)
    np.testing.assert_allclose(loose["w"], plain["w"])
    assert int(loose["steps"]) == 7  # integer buffers keep the global value


def test_dp_fedavg_bounds_each_hospitals_influence_by_the_clip_norm():
    global_params = {"w": np.zeros(4)}
    outlier = ClientResult(hospital=0, params={"w": np.full(4, 100.0)}, num_samples=1)
    quiet = [ClientResult(hospital=k, params={"w": np.zeros(4)}, num_samples=1) for k in (1, 2, 3)]
    out = _dp_fedavg(clip_norm=0.5, noise_multiplier=0.0, clients=4).aggregate(1, global_params, [outlier, *quiet])
    assert np.linalg.norm(out["w"]) == pytest.approx(0.5 / 4)
    noisy = _dp_fedavg(clip_norm=0.5, noise_multiplier=2.0, clients=4).aggregate(1, global_params, [outlier, *quiet])
    assert not np.allclose(noisy["w"], out["w"])


def _dp_fedavg(*, clip_norm: float, noise_multiplier: float, clients: int) -> DPFedAvg:
    return DPFedAvg(clip_norm=clip_norm, noise_multiplier=noise_multiplier, expected_clients=clients,
                    noise=NoiseSource.reproducible(0, DRIVER), server=FedAvg("uniform"))
