"""``train.head_init=prototypes``: the hospitals' masked releases, and the head built from them.

The maths and the privacy argument are :mod:`fedray.privacy.prototypes`'.
Here, two releases, each computed where every hospital would (before Ray
starts, through the feature cache its trainer reads later), each a sum over
the hospitals masked under secure aggregation:

1. the centre of ``train.feature_norm=centre_l2``: the sum of the records'
   unit features (sensitivity 1; noise multiplier ``train.centre_noise_multiplier``),
   with the public record count;
2. the class sums and counts of the centred unit features (sensitivity
   :math:`\\sqrt{1 + \\alpha^2}`), their noise multiplier calibrated so that
   the two releases compose to the run's ε at δ (``privacy=dp_prototypes``).

Each hospital adds its share of the noise from its own secret
``NoiseSource``; only the masked sum is kept (secure aggregation's output:
the masks cancel in it, so they are not drawn here). One entry per hospital
declares its share to the ledger without values; the ``MASKED_SUM`` entry
holds the released sum. Every party builds the same head from the plan's
entries, and a resumed run reuses them rather than releasing again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fedray.errors import FedrayError
from fedray.privacy.preprocessing import FEATURE_SUMS, feature_centre
from fedray.privacy.prototypes import PROTOTYPE_FIELD, class_sums, prototype_head, sensitivity
from fedray.privacy.randomness import NoiseSource, Purpose, hospital
from fedray.training.feature_norm import centred_unit_features, trained_layer, unit_features
from fedray.training.feature_subspace import public_basis
from fedray.training.local import LocalTrainer

MASKED_SUM = "masked sum"  # the ``hospital`` of the entry that holds a masked release's values
CENTRE_STREAM, PROTOTYPE_STREAM = 3, 2  # the hospitals' STAT_NOISE streams (0: colour moments, 1: centre sums)


def masked_release(cfg, vectors: list[np.ndarray], entry: dict, *, noise_multiplier: float | None, bound: float,
                   honest: int, stream: int) -> list[dict]:
    """One release of the sum of the hospitals' ``vectors``, each with its noise share, masked: its entries.

    ``bound``: one record's L2 contribution at most; ``noise_multiplier`` None (no DP claim): exact. The
    ``honest`` hospitals' shares, of variance ``(bound z)^2 / honest`` each, complete ``N(0, (bound z)^2)``; the
    masked sum's entry states the std of all K shares together, ``bound z sqrt(K / honest)``, which the head's
    bias corrects for.
    """
    share = bound * noise_multiplier / math.sqrt(honest) if noise_multiplier is not None else 0.0
    total, entries = 0.0, []
    for k, vector in enumerate(vectors):
        if noise_multiplier is not None:
            rng = NoiseSource.from_config(cfg.privacy, seed=cfg.seed, party=hospital(k)).numpy_generator(
                stream, Purpose.STAT_NOISE)
            vector = vector + rng.normal(0.0, share, size=vector.shape)
        total = total + vector
        entries.append({**entry, "hospital": k, "mechanism": "none, masked"} if noise_multiplier is None else
                       {**entry, "hospital": k, "mechanism": "gaussian, masked: the honest shares complete the noise",
                        "sensitivity": bound, "noise_multiplier": float(noise_multiplier), "noise_share_std": share})
    noise_std = share * math.sqrt(len(vectors))  # all K shares are in the sum, the colluders' too
    return [*entries, {**entry, "hospital": MASKED_SUM, "noise_std": noise_std, "released": total.tolist()}]


def release_centre(cfg, features: list[np.ndarray], *, private: bool, honest: int) -> list[dict]:
    """The masked sum of every record's unit feature, and the public record count (``centre_l2``'s centre)."""
    basis = public_basis(cfg)
    units = [unit_features(hospital_features, basis) for hospital_features in features]
    entry = {"statistic": "unit frozen-feature sum", "field": FEATURE_SUMS, "radius": 1.0, "unit": "record",
             "neighbouring": "zero-out: the count is public"}
    *declared, masked = masked_release(cfg, [u.sum(axis=0) for u in units], entry, bound=1.0, honest=honest,
                                       noise_multiplier=cfg.train.centre_noise_multiplier if private else None,
                                       stream=CENTRE_STREAM)
    return [*({**e, "count": len(u)} for e, u in zip(declared, units)), {**masked, "count": sum(map(len, units))}]


def release_prototype_sums(cfg, features: list[np.ndarray], labels: list[np.ndarray], preprocessing, *,
                           num_classes: int, noise_multiplier: float | None, honest: int) -> list[dict]:
    """The masked release of the hospitals' class sums and counts of their centred unit features."""
    centre = feature_centre(preprocessing)
    if centre is None:
        raise FedrayError("train.head_init=prototypes: the plan holds no released feature centre; set "
                          "train.feature_norm=centre_l2")
    weight = cfg.train.prototype_count_weight
    basis = public_basis(cfg)
    sums = [class_sums(centred_unit_features(hospital_features, centre, basis), hospital_labels,
                       num_classes=num_classes, count_weight=weight)
            for hospital_features, hospital_labels in zip(features, labels)]
    entry = {"statistic": "class prototype sums", "field": PROTOTYPE_FIELD, "count_weight": weight,
             "unit": "record", "neighbouring": "zero-out: the count is public"}
    return masked_release(cfg, sums, entry, noise_multiplier=noise_multiplier, bound=sensitivity(weight),
                          honest=honest, stream=PROTOTYPE_STREAM)


def released_prototypes(preprocessing) -> dict | None:
    """The prototypes' masked sum among the plan's preprocessing entries; None if none was released."""
    return next((e for e in preprocessing if e.get("field") == PROTOTYPE_FIELD and e["hospital"] == MASKED_SUM),
                None)


def init_prototype_head(layer: nn.Module, cfg, preprocessing, *, shrinkage: float | None = None) -> None:
    """Set the head's weight and bias to the prototype classifier of the released sums, in place, at
    ``shrinkage`` (default: the first of ``train.prototype_shrinkage``)."""
    shrinkages = shrinkage_choices(cfg)
    shrinkage = shrinkages[0] if shrinkage is None else shrinkage
    released = released_prototypes(preprocessing)
    if released is None:  # the plan was resolved before the release (a sweep varying it)
        raise FedrayError("train.head_init=prototypes: the plan holds no released class sums; set it for every "
                          "trial of a sweep alike, or train.head_init=default")
    _set_head(layer, cfg, *prototype_head(np.asarray(released["released"]), count_weight=released["count_weight"],
                                          shrinkage=shrinkage, noise_std=released["noise_std"],
                                          basis=public_basis(cfg)))


def set_exact_prototype_head(trainer: LocalTrainer, cfg, preprocessing, *, num_classes: int) -> None:
    """Set ``trainer``'s head, in place, to the prototype head of its own records' exact class sums:
    ``head_init=prototypes`` without noise, at the first of ``train.prototype_shrinkage`` (the auditor passes the
    driver's choice there).

    The start of the auditor's reference models under ``head_init=prototypes``, and under a mechanism that trains
    nothing the whole of them: a model of the audited kind that never saw the scored records. (The head built from
    the plan's release was computed from the members, so it cannot be one.) The trainer holds ``[n, views, d]``
    cached frozen features; view 0 is mapped by ``centre_l2`` on the run's released centre, which is public.
    """
    if trainer.inputs.ndim != 3:  # raw inputs (the release step refuses such a run first): never read pixels
        raise FedrayError(f"train.head_init=prototypes needs cached frozen features (model.finetune=head); model "
                          f"{cfg.model.name} trains on raw inputs here: set train.head_init=default")
    weight, basis = cfg.train.prototype_count_weight, public_basis(cfg)
    units = centred_unit_features(trainer.inputs[:, 0].double().cpu().numpy(), feature_centre(preprocessing), basis)
    sums = class_sums(units, trainer.labels.cpu().numpy(), num_classes=num_classes, count_weight=weight)
    _set_head(trained_layer(trainer.full_model, cfg, family="image"), cfg,
              *prototype_head(sums, count_weight=weight, shrinkage=shrinkage_choices(cfg)[0], noise_std=0.0,
                              basis=basis))


def _set_head(layer: nn.Module, cfg, weight: np.ndarray, bias: np.ndarray) -> None:
    if not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != weight.shape or layer.bias is None:
        raise FedrayError(f"train.head_init=prototypes sets a linear head of {weight.shape[0]} classes x "
                          f"{weight.shape[1]} features with a bias; model {cfg.model.name}'s trained layer is "
                          f"{layer}: set train.head_init=default")
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))


def shrinkage_choices(cfg) -> list[float]:
    """``train.prototype_shrinkage`` as a list of candidates, each >= 0; a one-line error otherwise."""
    values = cfg.train.prototype_shrinkage
    values = [values] if isinstance(values, (int, float)) else list(values)
    if not values or any(not isinstance(v, (int, float)) or not 0 <= v < math.inf for v in values):
        raise FedrayError(f"train.prototype_shrinkage={values}: give one or more finite numbers >= 0, e.g. "
                          "[30,100,300]")
    return [float(v) for v in values]


def choose_shrinkage(layer: nn.Module, cfg, preprocessing, score) -> float:
    """The candidate shrinkage whose head ``score()`` rates highest (the driver's validation balanced accuracy),
    left set on ``layer``. Every candidate is built from the same release: choosing among them is post-processing
    with respect to the training records, so it spends no budget."""
    scores = {}
    for shrinkage in shrinkage_choices(cfg):
        init_prototype_head(layer, cfg, preprocessing, shrinkage=shrinkage)
        scores[shrinkage] = score()
    best = max(scores, key=scores.get)
    init_prototype_head(layer, cfg, preprocessing, shrinkage=best)
    return best
