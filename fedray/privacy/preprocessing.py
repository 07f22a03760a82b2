r"""The private statistics an input map is fitted on: each hospital's release, declared to the privacy plan.

:func:`fit_input_map` decides the map of one experiment (module of the map:
:mod:`fedray.data.input_map`). Tables are scaled by their declared public
ranges: no statistic of the rows is released. Images are whitened from
colour statistics that each hospital computes on its own shard; under a DP
mechanism each hospital releases them through the Gaussian mechanism, with
its own secret noise, and the entries returned are declared releases: the
mechanism composes each one (a ``GaussianDpEvent``) with training in one
accountant and calibrates the training noise for what is left
(:mod:`fedray.privacy.mechanisms.dpsgd`).

**The colour statistics** (:func:`private_colour_moments`). The unit of privacy is one image.
Image ``i`` adds ``v_i = (1, a_i, u(B_i))`` to the 10 released coordinates,
``u(B)`` being the 6 entries on and above the diagonal. Pixels lie in
``[0, 1]^3``, so every coordinate of ``v_i`` lies in ``[0, 1]`` and
``||v_i||_2 <= sqrt(1 + 3 + 6) = sqrt(10)``, attained by an all-white image:
adding or removing one image moves the sums by at most ``Delta = sqrt(10)`` in
L2 (replacing one moves them by at most 3: the bound covers both
adjacencies). Each hospital adds ``N(0, sigma^2 I_10)`` to its own sums before they leave
it, with ``sigma = Delta z`` and ``z`` the smallest noise multiplier whose exact
privacy profile gives ``(epsilon, delta)``-DP (the analytic Gaussian mechanism,
Balle & Wang 2018, via ``dp_accounting.get_sigma_gaussian``). The driver only
ever sees noised sums; each image lies in one hospital, so by parallel
composition the fit spends ``(epsilon, delta)`` per image, once per run, to be
composed with training in the ledger. A hospital releases its noised sums
once: asking it again (after a restart) would spend the budget again, so the
caller keeps them, or the fitted map. Everything after the noise is
post-processing: ``m = s / n`` clipped to ``[0, 1]^3``; ``C`` with its
eigenvalues clipped to ``[0, 3/4]`` (for ``x`` in ``[0, 1]^3`` and a unit ``u``,
``u^T x`` ranges over an interval of length ``||u||_1 <= sqrt(3)``, so its
variance is at most 3/4), which also makes it PSD; and ``W``. The DP path reads
every pixel: no subsample is drawn, so nothing in it is seeded from the config.

**The frozen-feature sums** (:func:`private_feature_sums`, ``train.feature_norm=centre``).
The unit is one record, under DP-SGD's zero-out neighbouring (:mod:`fedray.privacy.ledger`):
a hospital's record count is public, and a neighbour replaces one record's
contribution by zeros. Record ``i`` adds ``c_R(g_i) = g_i \min(1, R / \lVert g_i\rVert_2)``
to the released sum, ``g_i`` its frozen feature (view 0) and ``R = train.centre_radius``
(declared public), so the sum moves by at most ``\Delta = R``. Each hospital adds
``N(0, (zR)^2 I_d)``, ``z = train.centre_noise_multiplier``, with its own
secret noise: a ``GaussianDpEvent(z)`` per record, once per run, composed
with training in the ledger (DP-SGD's σ is calibrated for what is left). The
centre ``m = \sum_k s_k / \sum_k n_k`` over the noised sums and public counts is
post-processing (:func:`feature_centre`); without a DP claim the sums are exact.
Clipping only shortens the mean along the records' common direction, which is
what centring removes; a noised count would have cost more (its noise, zR,
is of the order of a hospital's count).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fedray.config.schema import Config
from fedray.data.feature_scaling import FeatureScaling
from fedray.data.input_map import InputMap
from fedray.data.types import Records
from fedray.data.whitening import PRIVATE_SENSITIVITY, ColorWhitening, ColourMoments
from fedray.errors import FedrayError
from fedray.models import backbone_spec, model_family
from fedray.privacy.accounting import run_delta
from fedray.privacy.mechanisms import claims_dp
from fedray.privacy.randomness import NoiseSource, Purpose, hospital


def fit_input_map(cfg: Config, train_shards: list[Records], *, extra_slots: int = 0) -> tuple[InputMap, list[dict]]:
    """The input map of one experiment and the ledger entries of every private statistic it used.

    ``extra_slots`` are record slots beyond the shards' records (an audit's), counted by the default δ as the
    privacy plan counts them.

    Tables are scaled by their public feature ranges, never by statistics of
    the private rows. For images the colour statistics are federated: each
    hospital computes the sufficient statistics of its own shard
    (:class:`ColourMoments`) and only their sum is used. ``data.whitening``:

    - ``auto``: a pretrained backbone's own fixed normalisation; otherwise the
      seed's ZCA whitening, except under a DP mechanism, where it is ``none``
      (rgb/255): no statistic of private images is fitted at all.
    - ``zca`` / ``pca`` under a DP mechanism: each hospital releases its
      statistics through the Gaussian mechanism at ``data.whitening_epsilon_share``
      of the run's ε and δ (:func:`private_colour_moments`); the entries
      returned here are declared releases: the mechanism composes each one
      (a ``GaussianDpEvent``) with training in one accountant and calibrates
      the training noise for what is left (:mod:`fedray.privacy.mechanisms.dpsgd`).
    """
    if train_shards[0].kind == "table":
        return FeatureScaling.from_ranges(train_shards[0].feature_ranges), []
    method = cfg.data.whitening
    private = claims_dp(cfg)
    if method == "auto":
        name = cfg.model.name
        normalisation = backbone_spec(name).pretrained_normalisation if model_family(name) == "image" else None
        if getattr(cfg.model, "pretrained", False) and normalisation is not None:
            return ColorWhitening.standardise(mean=normalisation[0], std=normalisation[1]), []
        method = "none" if private else "zca"
    if method == "none":
        return ColorWhitening.fit(train_shards[0].inputs[:1], method="none", seed=cfg.seed), []
    if not private:
        return ColorWhitening.fit_federated([ColourMoments.of_images(s.inputs) for s in train_shards],
                                            method=method), []
    share = cfg.data.whitening_epsilon_share
    epsilon, delta = statistics_budget(cfg, total_records=sum(len(s) for s in train_shards) + extra_slots)
    moments, entries = [], []
    for k, shard in enumerate(train_shards):
        noise = NoiseSource.from_config(cfg.privacy, seed=cfg.seed, party=hospital(k))
        released, entry = private_colour_moments(shard.inputs, epsilon=share * epsilon, delta=share * delta,
                                                 rng=noise.numpy_generator(0, Purpose.STAT_NOISE))
        moments.append(released)
        entries.append({**entry, "hospital": k})
    return ColorWhitening.fit_federated(moments, method=method), entries


def statistics_budget(cfg: Config, *, total_records: int) -> tuple[float, float]:
    """The run's (ε, δ) as the privacy plan will resolve them (δ defaults below 1/N for N record slots)."""
    return float(cfg.privacy.epsilon), run_delta(cfg.privacy, total_records)


def private_colour_moments(
    images_uint8: torch.Tensor, *, epsilon: float, delta: float, rng: np.random.Generator
) -> tuple[ColourMoments, dict]:
    """One hospital's moments plus ``N(0, sigma^2 I_10)``: ``(epsilon, delta)``-DP per image, and its ledger entry.

    ``rng`` must be secret (``NoiseSource`` with ``Purpose.STAT_NOISE``). The
    ledger entry names the mechanism so that the privacy ledger can compose it
    with training (``noise_multiplier`` is ``sigma / sensitivity``, the
    ``GaussianDpEvent`` parameter).
    """
    if not 0 < epsilon < math.inf or not 0 < delta < 1:
        raise FedrayError(
            f"whitening epsilon={epsilon}, delta={delta}: need a finite epsilon > 0 and 0 < delta < 1 "
            "(without privacy, use ColourMoments.of_images)"
        )
    exact = ColourMoments.of_images(images_uint8)
    # brentq stops within 1e-12 of the root; step past it so that sigma never falls below the calibrated value.
    import dp_accounting  # with scipy, about 0.7 s: only the launcher fits whitening, every party imports this

    noise_multiplier = dp_accounting.get_sigma_gaussian(epsilon, delta) + 1e-9
    sigma = noise_multiplier * PRIVATE_SENSITIVITY
    noisy = ColourMoments.from_vector(exact.as_vector() + rng.normal(0.0, sigma, size=10))
    entry = {
        "statistic": "colour mean and covariance",
        "mechanism": "gaussian",
        "epsilon": float(epsilon),
        "delta": float(delta),
        "sensitivity": PRIVATE_SENSITIVITY,
        "sigma": float(sigma),
        "noise_multiplier": float(noise_multiplier),
        "unit": "image",
        "neighbouring": "add or remove one image",
    }
    return noisy, entry


FEATURE_SUMS = "feature_sums"  # the field a hospital's frozen-feature release is declared under


def private_feature_sums(features: np.ndarray, *, radius: float, noise_multiplier: float | None,
                         rng: np.random.Generator | None) -> dict:
    """One hospital's ``sum_i c_R(g_i)``, plus ``N(0, (zR)^2 I)`` under DP, and its public count: its ledger entry.

    ``features``: ``[n, d]``, one row per record. ``noise_multiplier`` None (no DP claim) releases the exact sum;
    otherwise ``rng`` must be secret (``NoiseSource`` with ``Purpose.STAT_NOISE``). The entry carries the released
    vector (``released``) for :func:`feature_centre`.
    """
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    exact = (features * np.minimum(1.0, radius / np.maximum(norms, 1e-12))).sum(axis=0)
    entry = {"statistic": "frozen-feature sum", "field": FEATURE_SUMS, "radius": float(radius),
             "count": len(features), "unit": "record", "neighbouring": "zero-out: the count is public"}
    if noise_multiplier is None:
        return {**entry, "mechanism": "none", "released": exact.tolist()}
    sigma = noise_multiplier * radius
    noisy = exact + rng.normal(0.0, sigma, size=exact.shape)
    return {**entry, "mechanism": "gaussian", "sensitivity": float(radius), "sigma": float(sigma),
            "noise_multiplier": float(noise_multiplier), "released": noisy.tolist()}


def feature_centre(preprocessing) -> np.ndarray | None:
    """``m = sum_k s_k / sum_k n_k`` over the hospitals' released feature sums (or their masked sum, whose count
    is the total); None if none were released."""
    released = [e for e in preprocessing if e.get("field") == FEATURE_SUMS and "released" in e]
    if not released:
        return None
    count = sum(e["count"] for e in released)
    if count < 1:
        raise FedrayError("train.feature_norm=centre: the hospitals hold no training record to centre on")
    return np.sum([np.asarray(e["released"]) for e in released], axis=0) / count
