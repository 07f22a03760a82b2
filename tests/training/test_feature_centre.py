"""train.feature_norm=centre: the head reads its frozen features minus the hospitals' mean, which each hospital
releases under the Gaussian mechanism and the ledger composes with training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_in_process
from fedray.privacy.mechanisms.dpsgd import calibrate_sigma
from fedray.privacy.preprocessing import feature_centre, private_feature_sums
from fedray.training import build_training_model, frozen_split

LITE0_HEAD = [*TINY, "model=efficientnet_lite0", "model.pretrained=true", "model.finetune=head", "data.image_size=32",
              "audit.enabled=false", "train.feature_norm=centre"]


def test_the_release_clips_each_record_to_the_radius_and_adds_noise_of_its_sensitivity():
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(40, 2000))) * np.linspace(0.1, 3, 40)[:, None]  # norms from 4 to 120
    exact = private_feature_sums(features, radius=30.0, noise_multiplier=None, rng=None)
    clipped = features * np.minimum(1, 30 / np.linalg.norm(features, axis=1))[:, None]
    np.testing.assert_allclose(exact["released"], clipped.sum(0))
    assert exact["count"] == 40 and exact["mechanism"] == "none" and "noise_multiplier" not in exact
    noised = private_feature_sums(features, radius=30.0, noise_multiplier=2.0, rng=np.random.default_rng(1))
    noise = np.asarray(noised["released"]) - np.asarray(exact["released"])
    assert noised["sensitivity"] == 30.0 and noised["count"] == 40  # zero-out: the count is public
    assert noise.std() == pytest.approx(2.0 * 30.0, rel=0.05)


def test_the_centre_is_the_sum_over_hospitals_divided_by_their_count():
    entries = [{"field": "feature_sums", "released": [2.0, 4.0], "count": 2},
               {"field": "feature_sums", "released": [6.0, 0.0], "count": 6}, {"field": "colour_moments"}]
    np.testing.assert_allclose(feature_centre(entries), [1.0, 0.5])
    assert feature_centre(entries[2:]) is None


def test_under_dp_each_hospital_releases_once_and_training_pays_for_it(tmp_path):
    """The released sums join the plan's preprocessing; σ is calibrated for what is left, the ledger composes both
    and the summary states each release without its values; the head reads g(x) minus the centre."""
    dp = [*LITE0_HEAD, "privacy=dpsgd", "privacy.epsilon=3", "fl.rounds=2"]
    prep = prepare_experiment(compose_typed(dp, tmp_path / "plan"))
    sums = [e for e in prep.privacy.preprocessing if e["field"] == "feature_sums"]
    assert [e["hospital"] for e in sums] == [0, 1, 2, 3, 4] and all(e["noise_multiplier"] == 8.0 for e in sums)
    schedule = prep.privacy.hospitals[0]
    alone = calibrate_sigma(epsilon=3.0, delta=prep.privacy.delta, sample_rate=schedule.sample_rate,
                            steps=schedule.planned_steps, accountant="rdp", statistics=())
    assert schedule.noise_multiplier > alone  # the release is charged to the same budget

    model = build_training_model(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=None)
    head = frozen_split(prep.cfg, model, torch.device("cpu")).head
    seen = []
    head.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    features = torch.randn(4, head.in_features)
    head(features)
    torch.testing.assert_close(seen[0], features - torch.as_tensor(feature_centre(sums), dtype=torch.float32))

    result = run_in_process(compose_typed([*dp, "cluster=inprocess"], tmp_path / "run"))
    ledger = result.summary.privacy
    assert 0 < ledger["epsilon"] <= 3.0 and ledger["hospitals"][0]["statistics_released"] == 1
    stated = [e for e in ledger["preprocessing"] if e["field"] == "feature_sums"]
    assert len(stated) == 5 and all("released" not in e for e in stated)


@pytest.mark.parametrize("overrides, says", [
    ([*TINY, "train.feature_norm=centre"], "model.finetune=head"),  # small_cnn trains its convolutions
    (["data=ehr_synthetic", "model=mlp", "train.feature_norm=centre"], "takes table rows"),
    ([*LITE0_HEAD, "privacy=dpfedavg", "privacy.epsilon=5"], "per-record preprocessing"),
])
def test_what_cannot_be_centred_is_refused_in_one_line(tmp_path, overrides, says):
    with pytest.raises(FedrayError, match=says) as refusal:
        prepare_experiment(compose_typed(overrides, tmp_path))
    assert "\n" not in str(refusal.value)


def test_a_sweep_checks_its_centred_trials_before_ray_starts(tmp_path):
    """The sweep validates every trial's model against the data once; the centred head needs the released sums."""
    from fedray.sweep.runner import _validate_trials

    trials = [compose_typed([*LITE0_HEAD, "privacy=dpsgd", f"privacy.epsilon={eps}"], tmp_path / str(eps))
              for eps in (1.0, 10.0)]
    assert _validate_trials(trials) == 3
