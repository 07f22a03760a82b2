r"""Decision trees and forests at a hospital, with LocalTrainer's interface (numpy + scikit-learn).

A :class:`TreeTrainer` fits once and releases its ensemble as plain arrays
(:mod:`fedray.models.trees`); hospitals, the driver and the audit handle it
like any neural model. ε = ∞ fits scikit-learn's own tree or forest; a finite
ε fits diffprivlib's (Fletcher & Islam 2017, "Differentially Private Random
Decision Forests using Smooth Sensitivity", as implemented in
``diffprivlib/models/forest.py``).

What diffprivlib's DP tree does. The structure is drawn before the data are
read: at each node a feature is picked uniformly and a threshold uniformly
inside that node's box of the public ``bounds``, down to ``max_depth``. The data
only choose each leaf's label, by the PermuteAndFlip mechanism (McKenna &
Sheldon 2020) on the leaf's class counts u_c (sensitivity 1, monotonic):
classes are visited in random order and c is taken with probability
exp(ε (u_c - max u)). The leaves partition the records, so adding or
removing one record changes one leaf's counts by one: by parallel composition
the tree is ε-DP (add/remove-one adjacency; a record whose value changes can
move between two leaves, 2ε under replace-one). The leaf value is one-hot, so
a lone tree predicts 0/1 probabilities and its log loss is floored at 1e-7
as in :mod:`fedray.metrics`.

The DP forest splits the rows into T = ``n_estimators`` disjoint chunks of about
n/T rows each (after a secret shuffle: an in-order split would give each tree
one block of a label-sorted shard) and fits each tree on its chunk with the
*full* ε; by parallel composition the forest is ε-DP. More trees therefore
cost no budget but give each tree fewer records. fedray fits the T trees
itself (:meth:`TreeTrainer.fit_private_trees`) rather than through
diffprivlib's forest class, which would reseed each tree from 31 bits.

Assumptions that void the guarantee:

* ``bounds`` read from the data. fedray passes [0, 1]^D, public because the
  ``input_map`` maps every feature into [0, 1] from public ranges
  (:class:`fedray.data.feature_scaling.FeatureScaling`); ranges a loader took
  from the records (``Records.ranges_public = False``), or any map fitted on
  them, read the bounds from the data after all. The library clips values
  outside the bounds.
* Refitting. Every ``fit`` of the library spends ε again; this trainer fits
  once and keeps its release, and its accountant's budget is ε, so a second
  library fit would raise ``BudgetError``. A restarted hospital refits with
  the same release key and data, which reproduces the identical release.
* The private fit's randomness is the hospital's secret one-time release
  stream (:meth:`~fedray.privacy.randomness.NoiseSource.release_random_state`),
  never the config seed; a non-private fit is seeded from the config.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from fedray.config.schema import DecisionTreeModel, RandomForestModel
from fedray.metrics import PROB_FLOOR
from fedray.privacy.randomness import NoiseSource, Purpose
from fedray.models.trees import Params, forest_to_params, predict_proba_from_params
from fedray.training.local import as_device_tensor

MODELS = ("decision_tree", "random_forest")


def map_inputs(inputs: np.ndarray | torch.Tensor, input_map) -> np.ndarray:
    """Rows mapped into [0, 1]^D by ``input_map``, as float32 numpy (what the trees split on)."""
    mapped = input_map.apply(as_device_tensor(inputs, torch.device("cpu")).float())
    return mapped.detach().cpu().numpy().astype(np.float32, copy=False)


class TreeEvaluator:
    """Loads a tree ensemble and predicts class probabilities (the driver's role)."""

    def __init__(self, *, num_classes: int, input_map):
        self.num_classes = num_classes
        self.input_map = input_map
        self.params: Params = {}

    def load(self, params: Params) -> None:
        self.params = dict(params)

    def export(self) -> Params:
        return dict(self.params)

    def encode(self, inputs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """An evaluation set as :meth:`predict_proba` reads it (rows on the CPU)."""
        return as_device_tensor(inputs, torch.device("cpu"))

    def predict_proba(self, inputs: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities [N, C] of the loaded ensemble; uniform while it has no trees."""
        return predict_proba_from_params(self.params, map_inputs(inputs, self.input_map), self.num_classes)


class TreeTrainer(TreeEvaluator):
    """Fits one hospital's tree or forest once, privately when ``epsilon`` is finite."""

    gradient_hooks = ()  # no gradient to hook, and no round report (fedray.training.hooks)

    def __init__(self, *, model_cfg: DecisionTreeModel | RandomForestModel, inputs: np.ndarray | torch.Tensor, labels, num_classes: int,
                 input_map, epsilon: float, seed: int, hospital: int, noise: NoiseSource):
        super().__init__(num_classes=num_classes, input_map=input_map)
        if model_cfg.name not in MODELS:
            raise ValueError(f"unknown tree model {model_cfg.name!r}; expected one of {MODELS}")
        self.model_cfg = model_cfg
        self.inputs = inputs
        labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        self.labels = np.array(labels, dtype=np.int64)  # a copy: arrays from Ray's object store are read-only
        self.epsilon = float(epsilon)
        self.seed = seed
        self.hospital = hospital
        self.noise = noise
        self.accountants: list = []
        self.released: tuple[Params, dict[str, float]] | None = None
        self.restored_spent = 0.0

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def private(self) -> bool:
        return not math.isinf(self.epsilon)

    def fit(self, params: Params, *, epochs: int, round_idx: int) -> tuple[Params, dict[str, float]]:
        """This hospital's ensemble (weight 1), fitted on the first call; later calls return the same release.

        ``params``, ``epochs`` and ``round_idx`` are ignored: a tree is not
        trained from the global model, and fitting again would spend ε again.
        """
        start = time.perf_counter()
        if self.released is None:
            self.released = self.fit_once()
        own, metrics = self.released
        self.load(own)
        return dict(own), {**metrics, "fit_seconds": time.perf_counter() - start, **self.privacy_state()}

    def fit_once(self) -> tuple[Params, dict[str, float]]:
        x = map_inputs(self.inputs, self.input_map)
        trees = self.fit_private_trees(x) if self.private else None
        if trees is None:
            model = self.build(num_features=x.shape[1])
            model.fit(x, self.labels)
            trees, classes = getattr(model, "estimators_", [model]), model.classes_
        else:
            classes = np.arange(self.num_classes)
        own = forest_to_params(trees, weight=1.0, num_classes=self.num_classes, classes_seen=classes)
        probs = predict_proba_from_params(own, x, self.num_classes)
        picked = probs[np.arange(self.num_samples), self.labels]
        return own, {
            "train_loss": float(-np.log(np.clip(picked, PROB_FLOOR, 1.0)).mean()),
            "train_accuracy": float((probs.argmax(axis=1) == self.labels).mean()),
            "local_steps": 0.0,
        }

    def build(self, *, num_features: int):
        """An unfitted non-private estimator: scikit-learn's tree or forest, seeded from the config."""
        random_state = int(np.random.SeedSequence([self.seed, self.hospital, 0x7EE]).generate_state(1)[0])
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier

        if self.model_cfg.name == "random_forest":
            return RandomForestClassifier(n_estimators=self.model_cfg.n_estimators, max_depth=self.model_cfg.max_depth,
                                          random_state=random_state)
        return DecisionTreeClassifier(max_depth=self.model_cfg.max_depth, random_state=random_state)

    def fit_private_trees(self, x: np.ndarray) -> list:
        """diffprivlib ε-DP trees, each on its own disjoint share of the rows (parallel composition: ε in all).

        The forest is built here, not by ``diffprivlib.models.RandomForestClassifier``: that class reseeds
        every tree with a 31-bit integer, and a released tree would let anyone search those 2^31 seeds
        for the draws of its leaf-label mechanism. Tree t draws from the hospital's secret release
        stream ``(DP_TREE, t)`` instead, and the row shares from ``(DP_TREE, T)``.
        """
        # Imported here: the non-private path must work where diffprivlib does not import (scikit-learn >= 1.9).
        import diffprivlib.models
        from diffprivlib import BudgetAccountant

        count = self.model_cfg.n_estimators if self.model_cfg.name == "random_forest" else 1
        order = self.noise.release_generator(Purpose.DP_TREE, index=count).permutation(self.num_samples)
        self.accountants, trees = [], []
        for t, rows in enumerate(np.array_split(order, count)):
            accountant = BudgetAccountant(epsilon=self.epsilon, delta=0.0)
            tree = diffprivlib.models.DecisionTreeClassifier(
                epsilon=self.epsilon, bounds=(np.zeros(x.shape[1]), np.ones(x.shape[1])),
                classes=list(range(self.num_classes)), max_depth=self.model_cfg.max_depth,
                random_state=self.noise.release_random_state(Purpose.DP_TREE, index=t), accountant=accountant)
            tree.fit(x[rows], self.labels[rows])
            self.accountants.append(accountant)
            trees.append(tree)
        return trees

    # -- privacy state: the ε the libraries' accountants have charged (none without DP) --
    def privacy_state(self) -> dict:
        if not self.private:
            return {}
        # Disjoint rows: the record-level ε is the largest any one tree's accountant charged.
        spent = max((a.total()[0] for a in self.accountants), default=0.0)  # total() is (ε, δ)
        # After a restart the refit reproduces the recorded release, so the two are not composed.
        return {"dp_epsilon_spent": float(max(spent, self.restored_spent))}

    def restore_privacy_state(self, state: dict) -> None:
        """Record the ε a previous incarnation of this hospital already released with."""
        self.restored_spent = float(state.get("dp_epsilon_spent", 0.0))
