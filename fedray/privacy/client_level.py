r"""Client-level DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models", Alg. 1).

The privacy unit here is a whole client, i.e. a whole hospital with all of
its patients. In round :math:`t` each participating hospital :math:`k` sends
its model update :math:`\Delta_k = w_k - w_t` (a dict of arrays). The server

1. clips each update to global L2 norm :math:`S` (``clip_norm``):
   :math:`\bar\Delta_k = \Delta_k \min(1, S/\lVert\Delta_k\rVert_2)`, the norm taken over all tensors together;
2. adds Gaussian noise to the sum and divides by :math:`K`, the *expected*
   number of participants :math:`qN` (fixed in advance; :math:`N` with everyone):
   :math:`\tilde\Delta = \frac1K\big(\sum_k \bar\Delta_k + \mathcal N(0, z^2S^2 I)\big)`,
   i.e. the uniform mean plus :math:`\mathcal N(0, (zS/K)^2)` per coordinate.

Adding or removing one hospital moves the sum by at most :math:`S` in L2,
so each round is a Gaussian mechanism with noise multiplier :math:`z`; with
Poisson client sampling at rate :math:`q = K/N` over :math:`T` rounds
dp-accounting composes :math:`(\varepsilon, \delta)`
(:mod:`fedray.privacy.mechanisms.dpfedavg` declares the events).

Plainly: with 5 hospitals this protects the participation of a whole
hospital, not of a patient, and with all 5 taking part every round
(:math:`q = 1`) there is no amplification by sampling. For :math:`T = 20`
rounds, :math:`\varepsilon = 1` at :math:`\delta = 10^{-3}` needs
:math:`z \approx 13` (RDP; 11.6 with PRV): noise of std :math:`13S/5 = 2.6S` on
*every coordinate* of the averaged update, whose own norm is at most
:math:`S`. Modest noise, :math:`z = 1`, gives :math:`\varepsilon \approx 25`.

The guarantee is void if :math:`K` depends on who answered (dividing by the
realised count leaks it), if clients are sampled other than independently at
rate :math:`q` (:math:`q = 1`: all, every round), or if anything computed from a
hospital's data reaches the server un-noised
(metrics, sample counts used as FedAvg weights: the mean here is uniform).
"""

from __future__ import annotations

import numpy as np

from fedray.errors import FedrayError


def clip_update(delta: dict[str, np.ndarray], *, clip_norm: float) -> tuple[dict[str, np.ndarray], float]:
    r"""Scale ``delta`` by :math:`\min(1, S/\lVert\Delta\rVert_2)`; return it and :math:`\lVert\Delta\rVert_2`.

    >>> clipped, norm = clip_update({"a": np.array([3.0]), "b": np.array([4.0])}, clip_norm=2.5)
    >>> norm, clipped["a"].item(), clipped["b"].item()
    (5.0, 1.5, 2.0)
    """
    if not clip_norm > 0:
        raise FedrayError(f"privacy.clip_norm={clip_norm} must be positive: set e.g. privacy.clip_norm=1.0")
    norm = float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in delta.values())))
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: (np.asarray(v) * factor).astype(np.asarray(v).dtype) for k, v in delta.items()}, norm


def noisy_mean(
    clipped_updates: list[dict[str, np.ndarray]],
    *,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    expected_clients: int | None = None,
) -> dict[str, np.ndarray]:
    r""":math:`\frac1K(\sum_k \bar\Delta_k + \mathcal N(0, z^2S^2 I))`, ``K = expected_clients``.

    ``expected_clients=None`` uses ``len(clipped_updates)``, right only when
    every hospital takes part (:math:`q = 1`) and none dropped out. The updates
    must already be clipped to ``clip_norm`` (:func:`clip_update`); otherwise
    the noise is too small for the stated epsilon.
    """
    if not clipped_updates:
        raise FedrayError("no client update reached the server: check that hospitals finished the round")
    keys = clipped_updates[0].keys()
    if any(u.keys() != keys for u in clipped_updates):
        raise FedrayError("client updates carry different parameter names: every hospital must train the same model")
    k = expected_clients or len(clipped_updates)
    std = noise_multiplier * clip_norm
    out = {}
    for name in keys:
        total = np.sum([np.asarray(u[name], dtype=np.float64) for u in clipped_updates], axis=0)
        noisy = total + rng.normal(0.0, std, size=total.shape)
        out[name] = (noisy / k).astype(np.asarray(clipped_updates[0][name]).dtype)
    return out
