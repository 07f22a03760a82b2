"""Tree ensembles as params, (DP) tree trainers and the federated forest, on tiny synthetic data."""

import math
import sys

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from fedray.config.schema import DecisionTreeModel, RandomForestModel
from fedray.privacy.randomness import NoiseSource, hospital as party
from fedray.models.trees import forest_to_params, merge_ensembles, predict_proba_from_params
from fedray.strategies.base import ClientResult
from fedray.strategies.ensemble import TreeEnsemble
from fedray.training.trees import TreeEvaluator, TreeTrainer


class Scale:
    """An input map from raw features in [0, 10] into [0, 1]."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x / 10.0


def make_data(n: int, *, num_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows in [0, 10]^3 whose class is the bin of the first feature (separable)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, size=(n, 3)).astype(np.float32)
    y = np.minimum((x[:, 0] / 10 * num_classes).astype(np.int64), num_classes - 1)
    return x, y


def trainer(x, y, *, epsilon=math.inf, name="random_forest", num_classes=3, hospital=0, key=1234, **model):
    """A hospital's tree trainer; ``key`` is its secret release key (the same key re-creates the same release)."""
    fields = {"max_depth": 5, **({"n_estimators": 10} if name == "random_forest" else {}), **model}
    schema = RandomForestModel if name == "random_forest" else DecisionTreeModel
    return TreeTrainer(model_cfg=schema(name=name, **fields), inputs=x, labels=y, num_classes=num_classes,
                       input_map=Scale(), epsilon=epsilon, seed=7, hospital=hospital,
                       noise=NoiseSource.secret(party(hospital), release_key=key + hospital))


def test_params_agree_with_sklearn_predict_proba():
    x, y = make_data(300)
    noisy = np.where(np.random.default_rng(1).random(300) < 0.2, (y + 1) % 3, y)
    test, _ = make_data(200, seed=2)
    for clf in (DecisionTreeClassifier(max_depth=6, random_state=0),
                RandomForestClassifier(n_estimators=7, max_depth=4, random_state=0)):
        clf.fit(x, noisy)
        params = forest_to_params(getattr(clf, "estimators_", [clf]), weight=1.0, num_classes=3,
                                  classes_seen=clf.classes_)
        np.testing.assert_allclose(predict_proba_from_params(params, test, 3), clf.predict_proba(test), atol=1e-12)


def test_empty_params_predict_uniform():
    np.testing.assert_allclose(predict_proba_from_params({}, np.zeros((4, 2)), 5), np.full((4, 5), 0.2))
    np.testing.assert_allclose(TreeEvaluator(num_classes=4, input_map=Scale()).predict_proba(torch.zeros(2, 3)),
                               np.full((2, 4), 0.25))


def test_merge_renumbers_and_weights_parts():
    x, y = make_data(200)
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(x, y)
    tree = DecisionTreeClassifier(max_depth=2).fit(x, y)
    a = forest_to_params(forest.estimators_, weight=1.0, num_classes=3, classes_seen=forest.classes_)
    b = forest_to_params([tree], weight=5.0, num_classes=3, classes_seen=tree.classes_)
    merged = merge_ensembles([(a, 1.0), (b, 3.0)])
    weights = [merged[f"tree{i:04d}.weight"].item() for i in range(3)]
    np.testing.assert_allclose(weights, [0.125, 0.125, 0.75])
    assert len(merged) == 3 * 6
    np.testing.assert_array_equal(merged["tree0002.threshold"], b["tree0000.threshold"])
    expected = 0.25 * predict_proba_from_params(a, x, 3) + 0.75 * predict_proba_from_params(b, x, 3)
    np.testing.assert_allclose(predict_proba_from_params(merged, x, 3), expected)
    assert merge_ensembles([({}, 1.0), ({}, 2.0)]) == {}


def test_classes_missing_at_a_hospital_map_to_global_columns():
    x, y = make_data(300, num_classes=2)
    y = 2 * y  # this hospital saw classes 0 and 2 of 4
    for clf in (DecisionTreeClassifier(max_depth=3), RandomForestClassifier(n_estimators=3, max_depth=3)):
        clf.fit(x, y)
        params = forest_to_params(getattr(clf, "estimators_", [clf]), weight=1.0, num_classes=4,
                                  classes_seen=clf.classes_)
        probs = predict_proba_from_params(params, x, 4)
        np.testing.assert_allclose(probs[:, [1, 3]], 0.0)
        np.testing.assert_allclose(probs[:, [0, 2]], clf.predict_proba(x))
    private, _ = trainer(x, y, epsilon=1.0, num_classes=4).fit({}, epochs=1, round_idx=0)
    assert private["tree0000.value"].shape[1] == 4


def test_fit_is_one_shot_and_reports_the_accountants_epsilon():
    x, y = make_data(400)
    for name in ("decision_tree", "random_forest"):
        t = trainer(x, y, epsilon=2.5, name=name, **({"n_estimators": 4} if name == "random_forest" else {}))
        first, metrics = t.fit({}, epochs=1, round_idx=0)
        t.load({})
        second, again = t.fit(first, epochs=1, round_idx=1)
        assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
        assert metrics["dp_epsilon_spent"] == again["dp_epsilon_spent"] == 2.5
        # One tree per disjoint share of the rows, each charged once: ε in all (parallel composition).
        trees = 4 if name == "random_forest" else 1
        assert len(t.accountants) == trees and all(len(a.spent_budget) == 1 for a in t.accountants)
        assert t.privacy_state() == {"dp_epsilon_spent": 2.5}
        assert metrics["local_steps"] == 0.0 and 0.0 <= metrics["train_accuracy"] <= 1.0
        assert np.array_equal(t.export()["tree0000.value"], first["tree0000.value"])


def test_restarted_hospital_reproduces_its_release():
    x, y = make_data(400)
    before, _ = trainer(x, y, epsilon=1.0).fit({}, epochs=1, round_idx=0)
    restarted = trainer(x, y, epsilon=1.0)
    restarted.restore_privacy_state({"dp_epsilon_spent": 1.0})
    assert restarted.privacy_state() == {"dp_epsilon_spent": 1.0}
    after, metrics = restarted.fit({}, epochs=1, round_idx=3)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert metrics["dp_epsilon_spent"] == 1.0


def test_non_private_path_is_sklearn_and_needs_no_diffprivlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffprivlib", None)  # any import of it would now fail
    x, y = make_data(300)
    t = trainer(x, y, name="decision_tree", max_depth=3)
    params, metrics = t.fit({}, epochs=1, round_idx=0)
    assert t.accountants == [] and t.privacy_state() == {}
    assert not any(k.startswith("dp_") for k in metrics)
    reference = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x / 10.0, y)
    np.testing.assert_allclose(t.predict_proba(x), reference.predict_proba(x / 10.0))
    assert metrics["train_accuracy"] == reference.score(x / 10.0, y)


def test_tree_ensemble_averages_hospital_predictions():
    (xa, ya), (xb, yb) = make_data(60, seed=3), make_data(180, seed=4)
    results, probs = [], []
    test, _ = make_data(50, seed=5)
    for k, (x, y) in enumerate([(xa, ya), (xb, yb)]):
        t = trainer(x, y, epsilon=1.0, hospital=k, n_estimators=3)
        params, metrics = t.fit({}, epochs=1, round_idx=0)
        results.append(ClientResult(hospital=k, params=params, num_samples=t.num_samples, metrics=metrics))
        probs.append(t.predict_proba(torch.as_tensor(test)))
    evaluator = TreeEvaluator(num_classes=3, input_map=Scale())
    evaluator.load(TreeEnsemble().aggregate(1, {}, results))
    np.testing.assert_allclose(evaluator.predict_proba(test), 0.25 * probs[0] + 0.75 * probs[1])
    evaluator.load(TreeEnsemble(weighting="uniform").aggregate(1, {}, results))
    np.testing.assert_allclose(evaluator.predict_proba(test), 0.5 * probs[0] + 0.5 * probs[1])
    with pytest.raises(ValueError):
        TreeEnsemble(weighting="median")


def test_dp_forest_utility_follows_epsilon():
    """Soft accuracy (mean probability of the true class) is near 1/2 at ε = 0.01.

    Argmax accuracy is not: 50 trees voting amplify the leaves' small bias and
    the random leaf labels make it vary from about 0.45 to 0.75 across seeds.
    """
    x, y = make_data(4000, num_classes=2)
    test, truth = make_data(1000, num_classes=2, seed=9)
    accuracy, soft = {}, {}
    for epsilon in (10.0, 0.01):
        t = trainer(x, y, epsilon=epsilon, num_classes=2, n_estimators=50, max_depth=4)
        t.fit({}, epochs=1, round_idx=0)
        probs = t.predict_proba(test)
        accuracy[epsilon] = (probs.argmax(axis=1) == truth).mean()
        soft[epsilon] = probs[np.arange(len(truth)), truth].mean()
    assert accuracy[10.0] > 0.85 and soft[10.0] > 0.65
    assert abs(soft[0.01] - 0.5) < 0.08
    assert accuracy[0.01] < accuracy[10.0] - 0.15
