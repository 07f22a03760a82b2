"""Pure aggregation maths for federated averaging (no Ray, no torch).

FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data", Algorithm 1) sets the new global model to a
weighted mean of the K client models::

    w = Σ_k a_k w_k / Σ_k a_k

with a_k = n_k, the number of training samples of client k ("samples"
weighting, the paper's choice), or a_k = 1 ("uniform" weighting, the seed
study's equal-shard setting, where both coincide).

Parameters travel as ``dict[str, np.ndarray]`` (a model's state dict). Integer
buffers such as BatchNorm's ``num_batches_tracked`` are averaged in float64 and
rounded back to their dtype, so the result keeps the clients' dtypes.

>>> import numpy as np
>>> a = {"w": np.array([0.0, 2.0])}
>>> b = {"w": np.array([4.0, 6.0])}
>>> weighted_average([(a, 1), (b, 3)])["w"]
array([3., 5.])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Params = dict[str, np.ndarray]

WEIGHTINGS = ("samples", "uniform")


def check_weighting(weighting: str) -> str:
    """``weighting`` itself if it is one of :data:`WEIGHTINGS`, else ValueError."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; expected one of {WEIGHTINGS}")
    return weighting


def client_weights(num_samples: Sequence[int], *, weighting: str) -> np.ndarray:
    """Normalised aggregation weights a_k / Σ a_k for the given weighting."""
    check_weighting(weighting)
    counts = np.asarray(num_samples, dtype=np.float64)
    if weighting == "uniform":
        counts = np.ones_like(counts)
    if counts.size == 0 or counts.sum() <= 0:
        raise ValueError("cannot aggregate: no client reported any samples")
    return counts / counts.sum()


def weighted_average(
    results: Sequence[tuple[Mapping[str, np.ndarray], int]], *, weighting: str = "samples"
) -> Params:
    """Return Σ_k a_k w_k / Σ_k a_k over ``results = [(params_k, n_k), ...]``.

    Every client must report the same parameter names and shapes.
    """
    weights = client_weights([n for _, n in results], weighting=weighting)
    names = list(results[0][0])
    averaged: Params = {}
    for name in names:
        stacked = np.stack([np.asarray(params[name], dtype=np.float64) for params, _ in results])
        mean = np.tensordot(weights, stacked, axes=1)
        dtype = np.asarray(results[0][0][name]).dtype
        averaged[name] = np.rint(mean).astype(dtype) if np.issubdtype(dtype, np.integer) else mean.astype(dtype)
    return averaged
