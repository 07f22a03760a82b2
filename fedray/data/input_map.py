"""The map every model input goes through on its device: colour whitening for images, public-range scaling for rows.

It is decided once per experiment, from each hospital's own statistics (summed,
and noised under DP), and travels to the
hospitals, the driver and the auditor as a plain ``state_dict``, so every
process feeds its model identical inputs.
"""

from __future__ import annotations

from fedray.config.schema import Config
from fedray.data.feature_scaling import FeatureScaling
from fedray.data.types import Records
from fedray.data.whitening import ColorWhitening, ColourMoments, private_colour_moments
from fedray.models import backbone_spec, model_family
from fedray.privacy.accounting import default_delta
from fedray.privacy.mechanisms import claims_dp
from fedray.privacy.randomness import NoiseSource, Purpose, hospital

InputMap = ColorWhitening | FeatureScaling


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
        noise = (NoiseSource.reproducible(cfg.seed, hospital(k)) if cfg.privacy.reproducible_noise
                 else NoiseSource.secret(hospital(k)))
        released, entry = private_colour_moments(shard.inputs, epsilon=share * epsilon, delta=share * delta,
                                                 rng=noise.numpy_generator(0, Purpose.STAT_NOISE))
        moments.append(released)
        entries.append({**entry, "hospital": k})
    return ColorWhitening.fit_federated(moments, method=method), entries


def statistics_budget(cfg: Config, *, total_records: int) -> tuple[float, float]:
    """The run's (ε, δ) as the privacy plan will resolve them (δ defaults below 1/N for N record slots)."""
    delta = getattr(cfg.privacy, "delta", None)
    return float(cfg.privacy.epsilon), float(delta if delta is not None else default_delta(total_records))


def input_map_from_state(state: dict) -> InputMap:
    if state.get("kind") == "feature_scaling":
        return FeatureScaling.from_state_dict(state)
    return ColorWhitening.from_state_dict(state)


__all__ = ["InputMap", "fit_input_map", "input_map_from_state"]
