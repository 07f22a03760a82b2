r"""Tree ensembles as plain numpy arrays, so a forest travels like any other ``Params``.

A fitted scikit-learn (or diffprivlib) ``DecisionTreeClassifier`` is five
arrays over its nodes; an ensemble of T trees is stored flat, one group of
keys per tree (``i`` zero-padded to four digits)::

    tree{i:04d}.children_left   int64   [n_nodes]     -1 at a leaf
    tree{i:04d}.children_right  int64   [n_nodes]     -1 at a leaf
    tree{i:04d}.feature         int64   [n_nodes]     split feature (ignored at a leaf)
    tree{i:04d}.threshold       float64 [n_nodes]     go left iff x[feature] <= threshold
    tree{i:04d}.value           float64 [n_nodes, C]  class probabilities over all C classes
    tree{i:04d}.weight          float64 [1]           w_t >= 0

The ensemble predicts the weighted mean of its trees' leaf distributions::

    p(y | x) = Σ_t w_t p_t(y | x) / Σ_t w_t

where p_t(y | x) is row ``leaf_t(x)`` of tree t's ``value``. An ensemble with no
trees (the global model before the first round) predicts the uniform 1/C.

>>> import numpy as np
>>> from sklearn.tree import DecisionTreeClassifier
>>> X = np.array([[0.0], [1.0]]); clf = DecisionTreeClassifier().fit(X, [0, 1])
>>> params = forest_to_params([clf], weight=1.0, num_classes=3, classes_seen=clf.classes_)
>>> predict_proba_from_params(params, X, num_classes=3)
array([[1., 0., 0.],
       [0., 1., 0.]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Params = dict[str, np.ndarray]

FIELDS = ("children_left", "children_right", "feature", "threshold", "value", "weight")
LEAF = -1


def tree_key(index: int, field: str) -> str:
    return f"tree{index:04d}.{field}"


def split_trees(params: Params) -> list[dict[str, np.ndarray]]:
    """The trees of ``params`` in index order, each as ``{field: array}``."""
    trees: dict[str, dict[str, np.ndarray]] = {}
    for key, array in params.items():
        prefix, _, field = key.partition(".")
        trees.setdefault(prefix, {})[field] = np.asarray(array)
    return [trees[prefix] for prefix in sorted(trees)]


def forest_to_params(estimators: Sequence, *, weight: float, num_classes: int, classes_seen) -> Params:
    """Flatten fitted ``DecisionTreeClassifier``\\ s into one ensemble of total weight ``weight``.

    Column j of every estimator's ``tree_.value`` is the global class
    ``classes_seen[j]``: pass the forest's ``classes_`` (a scikit-learn forest
    fits its trees on class *indices*, so a tree's own ``classes_`` is 0..k-1)
    or, for a lone tree, its ``classes_``. Classes a hospital never saw get
    probability 0. Each leaf's value (counts or fractions, depending on the
    library) is normalised to sum to 1; the trees share ``weight`` equally.
    """
    columns = np.asarray(classes_seen, dtype=np.int64)
    if columns.size and (columns.min() < 0 or columns.max() >= num_classes):
        raise ValueError(f"classes_seen {columns.tolist()} outside 0..{num_classes - 1}")
    params: Params = {}
    for i, estimator in enumerate(estimators):
        tree = estimator.tree_
        raw = np.asarray(tree.value, dtype=np.float64)[:, 0, :]
        if raw.shape[1] != columns.size:
            raise ValueError(f"tree {i} has {raw.shape[1]} value columns but {columns.size} classes_seen")
        value = np.zeros((raw.shape[0], num_classes))
        value[:, columns] = raw
        totals = value.sum(axis=1, keepdims=True)
        # Internal nodes of a diffprivlib tree carry all-zero values; they are never read.
        value = np.divide(value, totals, out=np.zeros_like(value), where=totals > 0)
        params[tree_key(i, "children_left")] = np.asarray(tree.children_left, dtype=np.int64)
        params[tree_key(i, "children_right")] = np.asarray(tree.children_right, dtype=np.int64)
        params[tree_key(i, "feature")] = np.asarray(tree.feature, dtype=np.int64)
        params[tree_key(i, "threshold")] = np.asarray(tree.threshold, dtype=np.float64)
        params[tree_key(i, "value")] = value
        params[tree_key(i, "weight")] = np.array([weight / len(estimators)], dtype=np.float64)
    return params


def predict_proba_from_params(params: Params, X: np.ndarray, num_classes: int) -> np.ndarray:
    """Σ_t w_t p_t(y | x) / Σ_t w_t for every row of ``X`` ([N, D]); returns float64 [N, C].

    All trees are walked at once: their nodes are laid end to end, every
    (row, tree) pair holds a node index, and each step moves the pairs still
    at an internal node one level down, so the loop runs max-depth times.
    Rows are compared in float32, as scikit-learn does, so that a value equal
    to a threshold after rounding goes the same way.
    """
    X = np.asarray(X, dtype=np.float32)
    trees = split_trees(params)
    if not trees:
        return np.full((X.shape[0], num_classes), 1.0 / num_classes)
    sizes = np.array([t["children_left"].size for t in trees])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    left = np.concatenate([_shift(t["children_left"], o) for t, o in zip(trees, offsets)])
    right = np.concatenate([_shift(t["children_right"], o) for t, o in zip(trees, offsets)])
    feature = np.concatenate([t["feature"] for t in trees])
    threshold = np.concatenate([t["threshold"] for t in trees])
    value = np.concatenate([t["value"] for t in trees])
    if value.shape[1] != num_classes:
        raise ValueError(f"ensemble has {value.shape[1]} classes, expected {num_classes}")
    weights = np.concatenate([t["weight"].reshape(1) for t in trees]).astype(np.float64)
    weights = weights / weights.sum()

    node = np.tile(offsets, (X.shape[0], 1))
    active = left[node] != LEAF
    while active.any():
        r, t = np.nonzero(active)
        at = node[r, t]
        node[r, t] = np.where(X[r, feature[at]] <= threshold[at], left[at], right[at])
        active[r, t] = left[node[r, t]] != LEAF
    # Summed tree by tree: gathering all leaves at once would hold an [N, T, C] array.
    return sum(w * value[node[:, t]] for t, w in enumerate(weights))


def _shift(children: np.ndarray, offset: int) -> np.ndarray:
    """Child indices moved into the concatenated node array; leaves stay -1."""
    return np.where(children == LEAF, LEAF, children + offset)


def merge_ensembles(parts: Sequence[tuple[Params, float]]) -> Params:
    """One ensemble of every part's trees: p(y|x) = Σ_k a_k p_k(y|x) / Σ_k a_k.

    Part k's trees keep their relative weights, rescaled to sum to a_k / Σ a_k,
    and are renumbered after the trees of parts 0..k-1. Parts without trees are
    skipped; no trees at all gives the empty ensemble.
    """
    parts = [(split_trees(params), float(a)) for params, a in parts]
    parts = [(trees, a) for trees, a in parts if trees]
    total = sum(a for _, a in parts)
    if parts and total <= 0:
        raise ValueError("cannot merge ensembles: part weights sum to zero")
    merged: Params = {}
    index = 0
    for trees, a in parts:
        tree_total = sum(float(t["weight"].sum()) for t in trees)
        if tree_total <= 0:
            raise ValueError("cannot merge ensembles: a part's tree weights sum to zero")
        for tree in trees:
            for field in FIELDS[:-1]:
                merged[tree_key(index, field)] = tree[field]
            scaled = float(tree["weight"].sum()) / tree_total * a / total
            merged[tree_key(index, "weight")] = np.array([scaled])
            index += 1
    return merged
