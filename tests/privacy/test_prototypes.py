"""privacy=dp_prototypes: the hospitals' masked class sums of centred unit features, the nearest shrunk class mean
built from them, and a ledger that charges both masked releases and nothing else."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
import torch

from conftest import TINY, compose_typed

from fedray.audit.auditor import audit_inputs
from fedray.errors import FedrayError
from fedray.federation.experiment import prepare_experiment, run_experiment, run_in_process
from fedray.privacy.ledger import compose_epsilon
from fedray.privacy.mechanisms import check_mechanism
from fedray.privacy.prototypes import class_sums, prototype_head, sensitivity
from fedray.data.deal import union
from fedray.privacy.preprocessing import feature_centre
from fedray.privacy.randomness import AUDITOR, NoiseSource
from fedray.results.run_dir import check_outputs
from fedray.training import build_trainer, build_training_model, frozen_split
from fedray.training.feature_norm import centred_unit_features
from fedray.training.prototype_head import (choose_shrinkage, init_prototype_head, masked_release,
                                            released_prototypes)

PROTOTYPES = [*TINY, "model=efficientnet_lite0", "model.pretrained=true", "model.finetune=head", "data.image_size=32",
              "audit.enabled=false", "privacy=dp_prototypes", "train.feature_norm=centre_l2",
              "train.head_init=prototypes", "fl.secure_aggregation=true"]


def _units(rng, n, d):
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_one_record_moves_the_release_by_its_sensitivity_whatever_its_label():
    rng = np.random.default_rng(0)
    units, labels = _units(rng, 30, 8), rng.integers(0, 4, 30)
    exact = class_sums(units, labels, num_classes=4, count_weight=0.5)
    np.testing.assert_allclose(exact[:, -1] / 0.5, np.bincount(labels, minlength=4))
    np.testing.assert_allclose(exact[:, :-1].sum(axis=0), units.sum(axis=0))
    for i in range(30):  # zero-out: record i contributes nothing
        without = class_sums(np.delete(units, i, 0), np.delete(labels, i), num_classes=4, count_weight=0.5)
        assert np.linalg.norm(exact - without) == pytest.approx(sensitivity(0.5))
    with pytest.raises(FedrayError, match="unit-norm"):
        class_sums(3 * units, labels, num_classes=4, count_weight=0.5)


def test_without_noise_or_shrinkage_the_head_is_the_nearest_class_mean():
    rng = np.random.default_rng(1)
    units, labels = _units(rng, 200, 6), rng.integers(0, 3, 200)
    weight, bias = prototype_head(class_sums(units, labels, num_classes=3, count_weight=1.0), count_weight=1.0,
                                  shrinkage=0.0, noise_std=0.0)
    means = np.stack([units[labels == c].mean(axis=0) for c in range(3)])
    np.testing.assert_allclose(weight, means)
    queries = _units(rng, 50, 6)
    nearest = np.linalg.norm(queries[:, None] - means[None], axis=2).argmin(axis=1)
    np.testing.assert_array_equal((queries @ weight.T + bias).argmax(axis=1), nearest)


def test_the_bias_removes_the_noise_s_expected_inflation_of_a_mean_s_squared_norm():
    """E||S_c / (n_c + lambda)||^2 exceeds the noise-free value by d s^2 / (n_c + lambda)^2: the bias takes it out."""
    rng = np.random.default_rng(2)
    units, labels = _units(rng, 60, 400), np.repeat([0, 1], [50, 10])
    exact = class_sums(units, labels, num_classes=2, count_weight=1e6)  # a count the noise cannot move
    _, clean = prototype_head(exact, count_weight=1e6, shrinkage=5.0, noise_std=0.0)
    noisy = [prototype_head(exact + np.concatenate([rng.normal(0, 3.0, (2, 400)), np.zeros((2, 1))], axis=1),
                            count_weight=1e6, shrinkage=5.0, noise_std=3.0)[1] for _ in range(300)]
    np.testing.assert_allclose(np.mean(noisy, axis=0), clean, atol=0.02)


def test_the_masked_sum_carries_the_shares_of_every_hospital_and_only_it_holds_values(tmp_path):
    cfg = compose_typed([*PROTOTYPES, "privacy.reproducible_noise=true"], tmp_path)
    vectors = [np.zeros((3, 2000)) + k for k in range(5)]
    *declared, masked = masked_release(cfg, vectors, {"field": "x"}, noise_multiplier=4.0, bound=2.0, honest=4,
                                       stream=0)
    assert [e["hospital"] for e in declared] == [0, 1, 2, 3, 4] and all("released" not in e for e in declared)
    assert all(e["noise_multiplier"] == 4.0 and e["noise_share_std"] == 4.0 for e in declared)  # 2 * 4 / sqrt(4)
    noise = np.asarray(masked["released"]) - 10.0
    assert noise.std() == pytest.approx(8.0 * np.sqrt(5 / 4), rel=0.03)  # the honest four complete N(0, 8^2)
    assert masked["noise_std"] == pytest.approx(8.0 * np.sqrt(5 / 4))
    *_, exact = masked_release(cfg, vectors, {"field": "x"}, noise_multiplier=None, bound=2.0, honest=4, stream=0)
    np.testing.assert_allclose(exact["released"], 10.0) and exact["noise_std"] == 0.0


def test_the_run_is_the_untrained_prototype_head_and_its_ledger_charges_the_two_releases(tmp_path):
    dp = [*PROTOTYPES, "privacy.epsilon=2", "fl.rounds=3", "train.prototype_shrinkage=[100.0]"]
    prep = prepare_experiment(compose_typed(dp, tmp_path / "plan"))
    assert prep.cfg.fl.rounds == 1  # nothing to repeat
    stated = [e for e in prep.privacy.preprocessing if e["hospital"] == 0]
    assert [e["statistic"] for e in stated] == ["unit frozen-feature sum", "class prototype sums"]
    z_centre, z_prototypes = (e["noise_multiplier"] for e in stated)
    events = [dp_accounting.GaussianDpEvent(z_centre), dp_accounting.GaussianDpEvent(z_prototypes)]
    assert 1.98 <= compose_epsilon(events, delta=prep.privacy.delta) <= 2.0  # calibrated to the target

    model = build_training_model(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=None)
    head = frozen_split(prep.cfg, model, torch.device("cpu")).head
    released = released_prototypes(prep.privacy.preprocessing)
    weight, bias = prototype_head(np.asarray(released["released"]), count_weight=0.33, shrinkage=100.0,
                                  noise_std=released["noise_std"])
    torch.testing.assert_close(head.weight, torch.as_tensor(weight, dtype=torch.float32))
    torch.testing.assert_close(head.bias, torch.as_tensor(bias, dtype=torch.float32))

    result = run_in_process(compose_typed([*dp, "cluster=inprocess"], tmp_path / "run"))
    ledger = result.summary.privacy
    assert 1.98 <= ledger["epsilon"] <= 2.0 and ledger["events"]["hospital 0"] == [str(e) for e in events]
    assert ledger["max_noise_multiplier"] == z_prototypes  # the frontier's noise_multiplier column
    assert all("released" not in e for e in ledger["preprocessing"])  # the values stay in the run's state


def test_the_driver_keeps_the_shrinkage_validation_rates_best_from_the_one_release(tmp_path):
    """Each candidate head is built from the same released sums; the run ends with the one the driver's
    validation score rates highest, and spends the budget once."""
    prep = prepare_experiment(compose_typed([*PROTOTYPES, "privacy.epsilon=2", "privacy.reproducible_noise=true",
                                             "train.prototype_shrinkage=[0.0,30.0,1000.0]"], tmp_path / "plan"))
    layer = torch.nn.Linear(1280, prep.num_classes)
    rated = {0.0: 0.2, 30.0: 0.5, 1000.0: 0.4}
    chosen = choose_shrinkage(layer, prep.cfg, prep.privacy.preprocessing,
                              lambda: rated[_shrinkage_of(layer, prep)])
    assert chosen == 30.0 and _shrinkage_of(layer, prep) == 30.0  # left set at the best

    run = [*PROTOTYPES, "privacy.epsilon=2", "privacy.reproducible_noise=true", "cluster=inprocess",
           "train.prototype_shrinkage=[0.0,30.0,1000.0]"]
    result = run_in_process(compose_typed(run, tmp_path / "run"))
    head = {name: value for name, value in result.final_params[0].items()
            if name.endswith("bias") and np.shape(value) == (prep.num_classes,)}
    candidates = []
    for shrinkage in rated:
        init_prototype_head(layer, prep.cfg, prep.privacy.preprocessing, shrinkage=shrinkage)
        candidates.append(layer.bias.detach().numpy().copy())
    (bias,) = head.values()
    distances = [np.abs(np.asarray(bias) - c).max() for c in candidates]  # secure aggregation quantises
    assert sorted(distances)[0] < 1e-4 < sorted(distances)[1]
    assert 1.98 <= result.summary.privacy["epsilon"] <= 2.0
    kept = list(rated)[int(np.argmin(distances))]
    assert result.summary.validation_choices == {"train.prototype_shrinkage": [kept]}  # published with the run
    check_outputs(result.summary.to_dict(), result.rounds, models=True)  # as held-out post-processing


def test_the_auditor_s_reference_model_is_the_exact_head_of_its_own_records_never_the_released_one(tmp_path):
    """A reference model must never have seen the scored records. Under a mechanism that trains nothing it is the
    released head's rule on its own records without noise: on the members at epsilon = inf that is the run's
    head; under DP it is not the released head (built from the members), and it follows its own records."""
    def reference_head(prep, inputs, labels):
        trainer = build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes, num_features=None,
                                inputs=inputs, labels=labels, input_map=prep.dealt.input_map,
                                device=torch.device("cpu"), hospital=10_000, noise=NoiseSource.reproducible(0, AUDITOR),
                                apply_mechanism=False, rounds=1)
        params, _ = trainer.fit(trainer.export(), epochs=1, round_idx=0)
        return _head_params(params, prep)

    def released_head(prep):
        model = build_training_model(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=None)
        return _head_params({k: v.numpy() for k, v in model.state_dict().items()}, prep)

    for epsilon in (".inf", "2"):
        prep = prepare_experiment(compose_typed([*PROTOTYPES, f"privacy.epsilon={epsilon}",
                                                 "train.prototype_shrinkage=[30.0]"], tmp_path / epsilon))
        members = union(prep.dealt.train_shards)
        inputs, labels = np.asarray(members.inputs), np.asarray(members.labels)
        on_members, released = reference_head(prep, inputs, labels), released_head(prep)
        if epsilon == ".inf":
            for ours, theirs in zip(on_members, released, strict=True):
                np.testing.assert_allclose(ours, theirs, atol=1e-5)
        else:
            assert np.abs(on_members[1] - released[1]).max() > 1e-3
            half = len(labels) // 2
            assert np.abs(reference_head(prep, inputs[:half], labels[:half])[0] - on_members[0]).max() > 1e-3


def test_the_auditor_builds_its_reference_heads_at_the_shrinkage_the_driver_chose(tmp_path):
    """Among several candidates, the auditor's config keeps only the driver's choice (published in the summary),
    so a reference model's exact head uses that shrinkage, not the config's first candidate."""
    prep = prepare_experiment(compose_typed([*PROTOTYPES, "privacy.epsilon=2",
                                             "train.prototype_shrinkage=[0.0,30.0,1000.0]"], tmp_path))
    chosen = {"train.prototype_shrinkage": [1000.0]}
    audited = audit_inputs(prep, final_params=[{}], resources={}, validation_choices=chosen)
    assert list(audited["cfg"].train.prototype_shrinkage) == [1000.0]
    pool = prep.dealt.train_shards[0]
    trainer = build_trainer(cfg=audited["cfg"], plan=prep.privacy, num_classes=prep.num_classes, num_features=None,
                            inputs=np.asarray(pool.inputs), labels=np.asarray(pool.labels),
                            input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=10_000,
                            noise=NoiseSource.reproducible(0, AUDITOR), apply_mechanism=False, rounds=1)
    units = centred_unit_features(trainer.inputs[:, 0].double().numpy(), feature_centre(prep.privacy.preprocessing))
    sums = class_sums(units, np.asarray(pool.labels), num_classes=prep.num_classes, count_weight=0.33)
    head = _head_params(trainer.export(), prep)
    for shrinkage, matches in ((1000.0, True), (0.0, False)):
        expected = prototype_head(sums, count_weight=0.33, shrinkage=shrinkage, noise_std=0.0)
        assert np.allclose(head[0], expected[0], atol=1e-5) == matches


def test_a_reference_model_that_trains_from_prototypes_starts_from_its_own_records_exact_head(tmp_path):
    """A non-private run that trains from the prototype head (privacy=none): the reference model's start is the
    exact head of its own records, not the run's (the members'), so training on its pool never began from them."""
    cfg = compose_typed([*PROTOTYPES[:PROTOTYPES.index("privacy=dp_prototypes")],
                         *PROTOTYPES[PROTOTYPES.index("privacy=dp_prototypes") + 1:], "privacy=none",
                         "train.prototype_shrinkage=[30.0]"], tmp_path)
    prep = prepare_experiment(cfg)
    pool = prep.dealt.train_shards[0]
    trainer = build_trainer(cfg=prep.cfg, plan=prep.privacy, num_classes=prep.num_classes, num_features=None,
                            inputs=np.asarray(pool.inputs), labels=np.asarray(pool.labels),
                            input_map=prep.dealt.input_map, device=torch.device("cpu"), hospital=10_000,
                            noise=NoiseSource.reproducible(0, AUDITOR), apply_mechanism=False, rounds=1)
    start = _head_params(trainer.export(), prep)
    features = trainer.inputs[:, 0].double().numpy()
    units = centred_unit_features(features, feature_centre(prep.privacy.preprocessing))
    expected = prototype_head(class_sums(units, np.asarray(pool.labels), num_classes=prep.num_classes,
                                         count_weight=0.33), count_weight=0.33, shrinkage=30.0, noise_std=0.0)
    for ours, theirs in zip(start, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    model = build_training_model(prep.cfg, prep.privacy, num_classes=prep.num_classes, num_features=None)
    released = _head_params({k: v.numpy() for k, v in model.state_dict().items()}, prep)
    assert np.abs(start[1] - released[1]).max() > 1e-3  # the run's head is the five hospitals' exact one


def _head_params(params: dict, prep) -> tuple[np.ndarray, np.ndarray]:
    """The (weight, bias) of the one linear head among a state dict's tensors."""
    weight, = (np.asarray(v) for k, v in params.items() if k.endswith("weight") and np.shape(v)[0] ==
               prep.num_classes and np.ndim(v) == 2)
    bias, = (np.asarray(v) for k, v in params.items() if k.endswith("bias") and np.shape(v) == (prep.num_classes,))
    return weight, bias


def _shrinkage_of(layer, prep) -> float:
    """Which candidate's head ``layer`` holds (its bias identifies it)."""
    for shrinkage in (0.0, 30.0, 1000.0):
        probe = torch.nn.Linear(layer.in_features, layer.out_features)
        init_prototype_head(probe, prep.cfg, prep.privacy.preprocessing, shrinkage=shrinkage)
        if torch.allclose(probe.bias, layer.bias):
            return shrinkage
    raise AssertionError("the layer holds no candidate head")


@pytest.mark.parametrize("overrides, says", [
    (["fl.secure_aggregation=false"], "fl.secure_aggregation=true"),
    (["train.head_init=default"], "train.head_init=prototypes"),
    (["train.feature_norm=centre"], "train.feature_norm=centre_l2"),
    (["privacy=dpsgd"], "privacy=dp_prototypes"),
    (["mode=centralized"], "mode=federated"),
    (["train.bias_calibration_rounds=1"], "trains nothing"),
])
def test_what_the_masked_releases_cannot_cover_is_refused_in_one_line(tmp_path, overrides, says):
    with pytest.raises(FedrayError, match=says) as refused:
        check_mechanism(compose_typed([*PROTOTYPES, *overrides], tmp_path))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("shrinkage", ["[-1.0]", "[]"])
def test_a_shrinkage_that_is_no_candidate_is_refused_before_ray_starts(tmp_path, shrinkage):
    with pytest.raises(FedrayError, match="train.prototype_shrinkage"):
        prepare_experiment(compose_typed([*PROTOTYPES, f"train.prototype_shrinkage={shrinkage}"], tmp_path))


def test_a_centre_that_spends_the_budget_alone_is_refused_before_any_prototype_is_released(tmp_path):
    with pytest.raises(FedrayError, match="centre_noise_multiplier"):
        prepare_experiment(compose_typed([*PROTOTYPES, "privacy.epsilon=0.05", "train.centre_noise_multiplier=1"],
                                         tmp_path))


def test_over_ray_the_untrained_head_and_ledger_equal_the_in_process_run(ray_session, tmp_path):
    """The releases are made before Ray starts, and no hospital trains: the transport changes nothing."""
    dp = [*PROTOTYPES, "privacy.epsilon=2", "privacy.reproducible_noise=true"]
    over_ray = run_experiment(compose_typed([*dp, "cluster=local"], tmp_path / "ray"))
    in_process = run_in_process(compose_typed([*dp, "cluster=inprocess"], tmp_path / "inprocess"))
    for name, value in in_process.final_params[0].items():
        np.testing.assert_array_equal(over_ray.final_params[0][name], value)
    assert over_ray.summary.privacy["epsilon"] == in_process.summary.privacy["epsilon"] <= 2.0
