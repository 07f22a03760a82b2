"""Local training at a hospital and prediction at the driver, for every model family (pure torch/sklearn, no Ray).

:func:`build_trainer` and :func:`build_evaluator` are the only places that
decide which trainer a model and a privacy mechanism need:

================  ==================================  ================================
model family      trainer                             privacy it can take
================  ==================================  ================================
image backbone    LocalTrainer / DPSGDTrainer         none, dpsgd, dpfedavg
mlp, logreg, svm  LocalTrainer / DPSGDTrainer         the same, and laplace_input
trees             TreeTrainer (sklearn, diffprivlib)  none, dp_tree, laplace_input
================  ==================================  ================================

Every trainer has the same interface (``fit``, ``load``, ``export``,
``predict_proba``, ``num_samples``, ``privacy_state``), so hospitals, the
driver and the auditor never ask which one they hold.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedray.config.schema import Config
from fedray.data.augment import get_augment
from fedray.data.input_map import InputMap
from fedray.models import build_model, build_table_model, model_family
from fedray.privacy.mechanisms import Mechanism, NonPrivate
from fedray.privacy.randomness import NoiseSource
from fedray.strategies import client_settings
from fedray.training.augmult import ViewMeanLoss, check_augmult, pick_flip_views
from fedray.training.feature_norm import attach_feature_norm, trained_layer
from fedray.training.prototype_head import init_prototype_head, set_exact_prototype_head
from fedray.training.features import (
    FLIP_VIEWS,
    FeatureEncoder,
    FeatureStore,
    FrozenSplit,
    Unchanged,
    only_view,
    pick_flip_view,
    split_frozen,
)
from fedray.training.local import Evaluator, LocalTrainer, UntrainedHead
from fedray.training.objective import model_l2, training_loss


def build_training_model(cfg: Config, plan: Mechanism, *, num_classes: int, num_features: int | None) -> nn.Module:
    """The torch model every hospital and the driver share, as the mechanism prepares it (GroupNorm under DP-SGD).

    The driver must build the same architecture as the hospitals, or their
    state dicts would not match. Tree families have no torch model. The
    driver builds it once before Ray starts, so ``train.augmult`` and
    ``train.feature_norm`` that the model cannot take are refused here.
    """
    family = model_family(cfg.model.name)
    if family == "table":
        model = build_table_model(cfg.model, num_classes=num_classes, num_features=num_features)
    else:
        model = build_model(cfg.model, num_classes=num_classes, image_size=cfg.data.image_size)
    model = plan.prepare_model(model)
    if cfg.train.augmult > 1:
        check_augmult(cfg, family=family, cached=frozen_split(cfg, model, torch.device("cpu")) is not None)
    preprocessing = getattr(plan, "preprocessing", ())
    attach_feature_norm(model, cfg, family=family, preprocessing=preprocessing)
    if cfg.train.head_init == "prototypes":
        init_prototype_head(trained_layer(model, cfg, family=family), cfg, preprocessing)
    return model


def build_evaluator(cfg: Config, plan: Mechanism, *, num_classes: int, num_features: int | None, input_map: InputMap,
                    device: torch.device):
    """A predict-only model of the experiment's family (the driver's and the auditor's)."""
    if model_family(cfg.model.name) == "tree":
        from fedray.training.trees import TreeEvaluator

        return TreeEvaluator(num_classes=num_classes, input_map=input_map)
    model = build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features)
    cached = frozen_split(cfg, model, device)
    if cached is None:
        return Evaluator(model=model, train_cfg=cfg.train, input_map=input_map, device=device)
    return Evaluator(model=cached.head_side, full_model=model, train_cfg=cfg.train, input_map=Unchanged(),
                     device=device, encoder=FeatureEncoder(cached, input_map, _store(cfg), device))


def frozen_split(cfg: Config, model: nn.Module, device: torch.device) -> FrozenSplit | None:
    """The cut of :mod:`fedray.training.features` when ``train.cache_features`` and the backbone allow it."""
    if not cfg.train.cache_features or model_family(cfg.model.name) != "image":
        return None
    trainable = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    if len(trainable) != 1:
        return None
    sample = torch.zeros((2, 3, cfg.data.image_size, cfg.data.image_size), device=device)
    head_name = next(name for name, m in model.named_modules() if m is trainable[0])
    return split_frozen(model.to(device), head_name, sample)


def build_trainer(
    *, cfg: Config, plan: Mechanism, num_classes: int, num_features: int | None, inputs: np.ndarray, labels: np.ndarray,
    input_map: InputMap, device: torch.device, hospital: int, noise: NoiseSource, apply_mechanism: bool = True,
    rounds: int | None = None,
):
    """The trainer for hospital ``hospital`` under the privacy ``plan`` (its hooks decide records and trainer).

    ``noise`` is the hospital's source of DP randomness (secret by default,
    :mod:`fedray.privacy.randomness`); nothing random under DP is drawn from the
    config. ``apply_mechanism=False`` trains the plan's architecture (GroupNorm
    under DP-SGD) without the mechanism: the auditor's reference models.
    ``rounds`` is how many fits the learning-rate schedule spans (default
    ``fl.rounds``; a reference model takes its whole budget in one fit: 1).
    """
    architecture = plan
    plan = plan if apply_mechanism else NonPrivate(**_baseline_fields(plan))
    inputs, labels = plan.prepare_records(inputs, labels, num_classes=num_classes, input_map=input_map, noise=noise)
    if model_family(cfg.model.name) == "tree":
        from fedray.training.trees import TreeTrainer

        epsilon = plan.tree_epsilon
        return TreeTrainer(model_cfg=cfg.model, inputs=inputs, labels=labels, num_classes=num_classes,
                           input_map=input_map, epsilon=epsilon, seed=cfg.seed, hospital=hospital, noise=noise)
    model = build_training_model(cfg, architecture, num_classes=num_classes, num_features=num_features)
    augment_name = cfg.data.augment if np.ndim(inputs) == 4 else "none"
    common = dict(model=model, inputs=inputs, labels=labels, train_cfg=cfg.train, input_map=input_map,
                  augment=get_augment(augment_name), device=device, seed=cfg.seed, hospital=hospital, noise=noise,
                  loss_fn=training_loss(cfg.model), l2=model_l2(cfg.model),
                  rounds=cfg.fl.rounds if rounds is None else rounds,
                  **client_settings(cfg.strategy))  # what the strategy sends its hospitals (FedProx: proximal_mu)
    cached = frozen_split(cfg, model, device)
    untrained = plan.trains_nothing  # at every epsilon: the baseline of such a mechanism is its exact release
    if cached is not None:
        encoder = FeatureEncoder(cached, input_map, _store(cfg), device)
        head_side = dict(model=cached.head_side, full_model=model, input_map=Unchanged(), encoder=encoder)
        if untrained and apply_mechanism:  # it never reads a record: no features to compute
            return UntrainedHead(**common | head_side)
        views = FLIP_VIEWS if augment_name == "flips" and not untrained else 1
        augment = pick_flip_view if views == FLIP_VIEWS else only_view
        if cfg.train.augmult > 1:  # check_augmult has made sure the cache holds the flip views
            augment, common["loss_fn"] = pick_flip_views(cfg.train.augmult), ViewMeanLoss(common["loss_fn"])
        common |= head_side | dict(inputs=encoder.features(inputs, views=views), augment=augment)
    trainer = UntrainedHead(**common) if untrained else \
        plan.trainer(common, hospital) or LocalTrainer(**common, steps_per_epoch=plan.epoch_steps)
    if not apply_mechanism and cfg.train.head_init == "prototypes":
        # the auditor's reference model starts from the prototype head of its own records, exactly: the run's head
        # was built from the members' release, and a reference model must never have seen them
        set_exact_prototype_head(trainer, cfg, getattr(architecture, "preprocessing", ()), num_classes=num_classes)
    return trainer


def _baseline_fields(plan: Mechanism) -> dict:
    """The fields of the non-private plan with ``plan``'s shape (the auditor's reference models)."""
    return {f.name: getattr(plan, f.name) for f in dataclasses.fields(NonPrivate)}


def _store(cfg: Config) -> FeatureStore:
    return FeatureStore(Path(cfg.paths.feature_cache_dir) if cfg.paths.feature_cache_dir else None)


__all__ = ["LocalTrainer", "build_evaluator", "build_trainer", "build_training_model"]
