"""train.feature_subspace=k: the head's frozen features projected onto a public subspace (the pretrained ImageNet
classifier's leading right singular vectors) before the unit maps; the noise outside it never reaches a
prediction, and no release changes its sensitivity or its charge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_in_process
from fedray.models import pretrained_head_weight
from fedray.privacy.prototypes import class_sums, prototype_head
from fedray.training import build_training_model, frozen_split
from fedray.training.feature_norm import centred_unit_features
from fedray.training.feature_subspace import project, public_basis

LITE0_HEAD = [*TINY, "model=efficientnet_lite0", "model.pretrained=true", "model.finetune=head", "data.image_size=32",
              "audit.enabled=false"]
PROTOTYPES = [*LITE0_HEAD, "privacy=dp_prototypes", "train.feature_norm=centre_l2", "train.head_init=prototypes",
              "fl.secure_aggregation=true"]


def test_the_basis_is_the_pretrained_classifier_s_leading_right_singular_vectors(tmp_path):
    basis = public_basis(compose_typed([*LITE0_HEAD, "train.feature_norm=l2", "train.feature_subspace=16"], tmp_path))
    np.testing.assert_allclose(basis @ basis.T, np.eye(16), atol=1e-10)
    weight = pretrained_head_weight("efficientnet_lite0")
    energy = np.linalg.norm(weight @ basis.T) ** 2
    assert energy == pytest.approx(np.sum(np.linalg.svd(weight, compute_uv=False)[:16] ** 2))  # the most of W's
    assert public_basis(compose_typed([*LITE0_HEAD, "train.feature_norm=l2"], tmp_path)) is None  # 0: off


def test_mapped_features_are_unit_and_in_the_span_and_the_centre_s_noise_outside_it_is_dropped():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 6)))[0].T  # 6 orthonormal rows in 40 dimensions
    features, centre = rng.normal(size=(30, 40)), rng.normal(size=40) * 0.1
    mapped = centred_unit_features(features, centre, basis)
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0)  # the releases' sensitivity is unchanged
    np.testing.assert_allclose(project(mapped, basis), mapped, atol=1e-12)
    outside = rng.normal(size=40)
    outside -= project(outside, basis)
    np.testing.assert_allclose(centred_unit_features(features, centre + outside, basis), mapped, atol=1e-12)


def test_the_release_s_noise_outside_the_span_does_not_move_the_head():
    """The sums are projected first, so noise orthogonal to the span changes neither W nor b; the bias corrects for
    the k dimensions left, as a release made in k coordinates would."""
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(50, 8)))[0].T
    units = project(rng.normal(size=(80, 50)), basis)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    labels = rng.integers(0, 3, 80)
    sums = class_sums(units, labels, num_classes=3, count_weight=0.5)
    noise = rng.normal(0, 2.0, size=(3, 50))
    inside = project(noise, basis)
    noised = lambda n: sums + np.concatenate([n, np.zeros((3, 1))], axis=1)  # noqa: E731
    clean = prototype_head(noised(inside), count_weight=0.5, shrinkage=10.0, noise_std=2.0, basis=basis)
    with_outside = prototype_head(noised(noise), count_weight=0.5, shrinkage=10.0, noise_std=2.0, basis=basis)
    for ours, theirs in zip(with_outside, clean, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
    # in the basis' own coordinates, without a subspace, the same head: W = W_k P, b the same
    coordinates = np.concatenate([(sums[:, :-1] + inside) @ basis.T, sums[:, -1:]], axis=1)
    weight_k, bias_k = prototype_head(coordinates, count_weight=0.5, shrinkage=10.0, noise_std=2.0)
    np.testing.assert_allclose(clean[0], weight_k @ basis, atol=1e-12)
    np.testing.assert_allclose(clean[1], bias_k, atol=1e-12)


@pytest.mark.parametrize("overrides, says", [
    (["train.feature_norm=centre"], "has none: set train.feature_norm"),
    (["train.feature_norm=none"], "has none: set train.feature_norm"),
    (["train.feature_norm=l2", "model.pretrained=false"], "model.pretrained=false has none"),
    (["train.feature_norm=l2", "train.feature_subspace=5000"], "exceeds the rank"),
    (["train.feature_norm=l2", "model.finetune=all"], "not a head on frozen features"),
])
def test_a_subspace_the_map_or_model_cannot_take_is_refused_in_one_line(tmp_path, overrides, says):
    with pytest.raises(FedrayError, match=says):
        prepare_experiment(compose_typed([*LITE0_HEAD, "train.feature_subspace=64", *overrides], tmp_path))


def test_a_prototype_run_in_a_subspace_charges_the_same_releases_and_its_head_lies_in_the_span(tmp_path):
    common = [*PROTOTYPES, "privacy.epsilon=2", "privacy.reproducible_noise=true", "train.prototype_shrinkage=[30.0]"]
    full = prepare_experiment(compose_typed(common, tmp_path / "full"))
    sub = prepare_experiment(compose_typed([*common, "train.feature_subspace=32"], tmp_path / "sub"))
    events = lambda prep: [(e["statistic"], e["noise_multiplier"]) for e in prep.privacy.preprocessing  # noqa: E731
                           if e["hospital"] == 0]
    assert events(sub) == events(full)  # same sensitivities, same calibration: the subspace is free

    basis = public_basis(sub.cfg)
    model = build_training_model(sub.cfg, sub.privacy, num_classes=sub.num_classes, num_features=None)
    head = frozen_split(sub.cfg, model, torch.device("cpu")).head
    weight = head.weight.detach().double().numpy()
    np.testing.assert_allclose(project(weight, basis), weight, atol=1e-5)

    result = run_in_process(compose_typed([*common, "train.feature_subspace=32", "cluster=inprocess"],
                                          tmp_path / "run"))
    assert 1.98 <= result.summary.privacy["epsilon"] <= 2.0
    assert 0.0 <= result.summary.test.balanced_accuracy <= 1.0


def test_under_dp_sgd_the_l2_map_projects_before_it_scales(tmp_path):
    cfg = compose_typed([*LITE0_HEAD, "train.feature_norm=l2", "train.feature_subspace=8"], tmp_path)
    prep = prepare_experiment(cfg)
    model = build_training_model(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=None)
    head = frozen_split(prep.cfg, model, torch.device("cpu")).head
    seen = {}
    head.register_forward_pre_hook(lambda _m, args: seen.setdefault("input", args[0]))  # runs after the map's hook
    features = torch.randn(4, head.in_features)
    head(features)
    expected = project(features.double().numpy(), public_basis(prep.cfg))
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(seen["input"].double().numpy(), expected, atol=1e-5)
