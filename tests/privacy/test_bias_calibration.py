"""train.bias_calibration_rounds: after the last round the hospitals release their summed predictions, the driver
moves the classifier's biases towards uniform predicted class shares, and the ledger charges every release."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment, run_in_process
from fedray.models import last_layer_bias
from fedray.privacy.bias_calibration import calibrated_bias, calibration_events, prediction_sum
from fedray.privacy.ledger import compose_epsilon
from fedray.training import build_evaluator

CALIBRATED = [*TINY, "audit.enabled=false", "cluster=inprocess"]


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_the_release_is_the_column_sum_and_one_record_moves_it_by_at_most_one():
    rng = np.random.default_rng(0)
    probabilities = _softmax(rng.normal(scale=3.0, size=(50, 9)))
    exact = prediction_sum(probabilities, noise_multiplier=None, rng=None)
    np.testing.assert_allclose(exact, probabilities.sum(axis=0))
    for i in range(50):  # zero-out: record i replaced by a null that contributes nothing
        without = prediction_sum(np.delete(probabilities, i, axis=0), noise_multiplier=None, rng=None)
        assert np.linalg.norm(exact - without) <= 1.0 + 1e-12
    draws = np.stack([prediction_sum(probabilities, noise_multiplier=8.0, rng=np.random.default_rng(seed))
                      for seed in range(400)])
    assert (draws - exact).std() == pytest.approx(8.0, rel=0.05) and abs((draws - exact).mean()) < 0.2
    with pytest.raises(ValueError, match="probabilities"):
        prediction_sum(rng.normal(size=(5, 3)), noise_multiplier=None, rng=None)


def test_one_step_makes_a_constant_model_predict_every_class_equally_often():
    """Where the scores are the bias alone, p = softmax(b) for every record: one step reaches the fixed point."""
    bias = np.array([2.0, -1.0, 0.5, -3.0], dtype=np.float32)
    sums = [4000 * _softmax(bias[None])[0], 6000 * _softmax(bias[None])[0]]  # every class above the floor
    calibrated = calibrated_bias(bias, sums, noise_multiplier=None)
    assert calibrated.dtype == np.float32
    np.testing.assert_allclose(_softmax(calibrated[None].astype(np.float64))[0], np.full(4, 0.25), atol=1e-6)


def test_a_class_noise_drove_below_zero_gets_a_finite_raise():
    calibrated = calibrated_bias(np.zeros(3), [np.array([100.0, 50.0, -20.0])], noise_multiplier=None)
    assert np.isfinite(calibrated).all() and calibrated[2] == calibrated.max()
    np.testing.assert_allclose(calibrated[2], -np.log(3 * 1.0 / 151.0))  # floored at one record without noise


def test_a_class_sum_within_two_noise_std_of_zero_counts_as_two_std():
    """Four hospitals at z = 5 put noise of std 10 in each class's sum: every sum below 20 is raised to 20."""
    sums = [np.array([50.0, 1.0, -3.0]), np.array([50.0, 2.0, 3.0]), np.array([50.0, 0.0, 1.0]), np.array([50.0, 0, 0])]
    calibrated = calibrated_bias(np.zeros(3), sums, noise_multiplier=5.0)
    floored = np.array([200.0, 20.0, 20.0])
    np.testing.assert_allclose(calibrated, -np.log(3 * floored / floored.sum()))


def test_the_events_are_one_gaussian_per_release():
    assert calibration_events(8.0, 0) == []
    composed = compose_epsilon(calibration_events(8.0, 3), delta=1e-5)
    assert composed == pytest.approx(compose_epsilon([dp_accounting.GaussianDpEvent(8.0 / np.sqrt(3))], delta=1e-5),
                                     rel=1e-6)


def test_under_dp_sgd_training_pays_for_the_releases_and_the_ledger_counts_them(tmp_path):
    dp = [*CALIBRATED, "privacy=dpsgd", "privacy.epsilon=3"]
    plain = prepare_experiment(compose_typed(dp, tmp_path / "plain")).privacy
    plan = prepare_experiment(compose_typed([*dp, "train.bias_calibration_rounds=2"], tmp_path / "plan")).privacy
    assert plan.hospitals[0].noise_multiplier > plain.hospitals[0].noise_multiplier  # the same budget, shared
    release = next(r for r in plan.hospital_releases(0).releases if r.name == "bias calibration")
    assert release.fields == ("calibration_sum",) and release.kind == "accounted"

    result = run_in_process(compose_typed([*dp, "train.bias_calibration_rounds=2"], tmp_path / "run"))
    ledger = result.summary.privacy
    assert 2.9 < ledger["epsilon"] <= 3.0
    assert all(row["calibration_releases"] == 2 for row in ledger["hospitals"])
    assert "GaussianDpEvent(noise_multiplier=16.0), count=2" in ledger["events"]["hospital 0"][-1]


def test_without_dp_the_calibration_changes_only_the_bias_and_evens_the_predicted_shares(tmp_path):
    base = [*CALIBRATED, "fl.rounds=3", "train.lr=0.2"]
    trained = run_in_process(compose_typed(base, tmp_path / "trained"))
    calibrated = run_in_process(compose_typed([*base, "train.bias_calibration_rounds=6"], tmp_path / "calibrated"))
    cfg = compose_typed(base, tmp_path / "eval")
    prep = prepare_experiment(cfg)
    evaluator = build_evaluator(cfg, prep.privacy, num_classes=prep.num_classes, num_features=None,
                                input_map=trained.dealt.input_map, device=torch.device("cpu"))
    bias = last_layer_bias(evaluator.full_model)
    before, after = trained.final_params[0], calibrated.final_params[0]
    assert set(before) == set(after)
    for name in before:
        if name != bias:
            np.testing.assert_array_equal(before[name], after[name])
    images = np.concatenate([np.asarray(s.inputs) for s in trained.dealt.train_shards])

    def shares(params) -> np.ndarray:
        evaluator.load(params)
        return evaluator.predict_proba(images).mean(axis=0)
    uniform = np.full(prep.num_classes, 1 / prep.num_classes)
    assert np.abs(shares(after) - uniform).max() < 0.01
    assert np.abs(shares(after) - uniform).max() < np.abs(shares(before) - uniform).max()


@pytest.mark.parametrize("overrides, says", [
    ([*CALIBRATED, "privacy=dpfedavg", "privacy.epsilon=5"], "privacy=dpsgd, distributed_dpsgd"),
    ([*CALIBRATED, "mode=local"], "mode=federated"),
    (["data=ehr_synthetic", "model=decision_tree"], "mode=federated and a neural model"),
])
def test_what_cannot_be_calibrated_is_refused_in_one_line(tmp_path, overrides, says):
    with pytest.raises(FedrayError, match=says) as refusal:
        prepare_experiment(compose_typed([*overrides, "train.bias_calibration_rounds=1"], tmp_path))
    assert "\n" not in str(refusal.value)


def test_without_dp_under_secure_aggregation_the_driver_seeing_one_hospital_s_sums_is_declared_outside(tmp_path):
    cfg = compose_typed([*CALIBRATED, "fl.secure_aggregation=true", "train.bias_calibration_rounds=1"], tmp_path)
    release = prepare_experiment(cfg).privacy.hospital_releases(0).covering("calibration_sum")
    assert release is not None and release.kind == "outside" and "secure aggregation" in release.reason


def test_over_ray_the_calibrated_model_and_ledger_equal_the_in_process_run(ray_session, tmp_path):
    """Under reproducible noise the hospitals' noised sums are the same draws in either transport."""
    dp = [*TINY, "audit.enabled=false", "privacy=dpsgd", "privacy.epsilon=3", "privacy.reproducible_noise=true",
          "train.bias_calibration_rounds=2"]
    over_ray = run_experiment(compose_typed([*dp, "cluster=local"], tmp_path / "ray"))
    in_process = run_in_process(compose_typed([*dp, "cluster=inprocess"], tmp_path / "inprocess"))
    for name, value in in_process.final_params[0].items():
        np.testing.assert_array_equal(over_ray.final_params[0][name], value)
    assert [row["calibration_releases"] for row in over_ray.summary.privacy["hospitals"]] == [2] * 5
    assert over_ray.summary.privacy["epsilon"] == in_process.summary.privacy["epsilon"]
