"""What the audit inserts into one experiment, and where: decided before any actor starts.

The stages, in the order :mod:`fedray.federation.experiment` calls them
(:mod:`fedray.audit.auditor` runs after the rounds):

1. :func:`plan_records`, before the privacy plan: the auditor makes
   ``audit.input_canaries`` records, draws their inclusion with its own secret
   randomness and deals them round-robin to the hospitals holding consented
   records; :func:`training_shards` appends the included ones to those
   hospitals' training shards (never to a validation, test or audit pool),
   so the privacy plan counts them as records.
2. :func:`plan_insertions`, once the plan is known, at the mechanism's
   ``insertion_point()``: ``audit.canaries`` gradient canaries where it is a
   record gradient (DP-SGD, non-private runs), canary clients where it is a
   client update (client-level DP-FedAvg); :mod:`fedray.audit.canaries` says
   why only there.
3. Hospital k receives, as attachments, the gradient canaries included there
   (:func:`hospital_attachments`); the driver, the white-box adversary,
   receives a round observer scoring every canary's coordinate but no
   inclusion, and the included canary clients as client insertions
   (:func:`driver_attachments`). Under ``audit.observer=step`` each hospital
   also receives every canary dealt to it and reports its step-level view
   with each update (:mod:`fedray.audit.step_view`), which a second observer
   at the driver sums.
4. After the rounds, :mod:`fedray.audit.auditor` attacks the final model(s)
   and turns every score into bounds and flags against the ledger's (ε, δ).

The plan is kept in a checkpoint and reused on resume: the inclusion is drawn
once per run, never again. Canaries and inclusion are the auditor's: the
summary reports how many were trained on, never which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from fedray.audit.canaries import (CLIENT, GRADIENT, INPUT, CanaryClients, DiracCanaries, IncludedCanaryClients,
                                   WhiteBoxScores, consenting_hospitals, deal_round_robin, design_generator,
                                   dirac_canaries, draw_inclusion, floating_names, input_canary_arrays)
from fedray.audit.gradient_canaries import GradientCanaries
from fedray.audit.step_view import StepScores
from fedray.config import Config
from fedray.data.deal import Dealt, union
from fedray.data.types import Records
from fedray.models import model_family
from fedray.privacy.mechanisms import Mechanism
from fedray.privacy.randomness import AUDITOR, NoiseSource
from fedray.training import build_training_model


@dataclass(frozen=True)
class Inserted:
    """One kind of canary: its public design, the auditor's secret inclusion, and each canary's hospital."""

    design: Records | DiracCanaries | CanaryClients
    included: np.ndarray
    hospitals: np.ndarray | None  # None for canary clients, which are clients of their own


@dataclass
class AuditPlan:
    """Every canary of one run, decided before any actor starts; ``notes`` say why a kind is absent."""

    input: Inserted | None = None
    gradient: Inserted | None = None
    clients: Inserted | None = None
    client_sample_rate: float = 1.0
    observe_steps: bool = False  # the gradient canaries' step-level view (audit.observer=step)
    notes: dict[str, str] = field(default_factory=dict)


def _auditor(cfg: Config) -> NoiseSource:
    """The auditor's own randomness: secret OS entropy unless ``privacy.reproducible_noise``."""
    return NoiseSource.from_config(cfg.privacy, seed=cfg.seed, party=AUDITOR)


def plan_records(cfg: Config, dealt: Dealt) -> AuditPlan | None:
    """Stage 1: the input canaries (None when the audit is off)."""
    if not cfg.audit.enabled:
        return None
    plan, m = AuditPlan(), cfg.audit.input_canaries
    if m == 0:
        plan.notes["input"] = "audit.input_canaries=0"
        return plan
    template = dealt.splits.train
    hosts = consenting_hospitals([len(s) for s in dealt.train_shards])
    inputs, labels = input_canary_arrays(
        m=m, image_shape=tuple(template.inputs.shape[1:]) if template.kind == "image" else None,
        feature_ranges=template.feature_ranges, num_classes=len(template.class_names),
        rng=design_generator(cfg.seed, INPUT))
    records = dataclasses.replace(template, inputs=torch.from_numpy(inputs), labels=labels,
                                  ids=np.array([f"canary/{j:06d}" for j in range(m)], dtype=object), sites=None)
    plan.input = Inserted(records, draw_inclusion(m, _auditor(cfg), INPUT), deal_round_robin(m, hosts))
    return plan


def training_shards(dealt: Dealt, canaries: AuditPlan | None) -> list[Records]:
    """Each hospital's training shard with its included input canaries appended (the shards the hospitals get)."""
    if canaries is None or canaries.input is None:
        return dealt.train_shards
    inserted = canaries.input
    shards = []
    for k, shard in enumerate(dealt.train_shards):
        mine = np.flatnonzero(inserted.included & (inserted.hospitals == k))
        shards.append(union([shard, inserted.design.subset(mine)]) if len(mine) else shard)
    return shards


def slot_counts(dealt: Dealt, canaries: AuditPlan | None) -> list[int]:
    """Each hospital's public record slots: its records plus every input canary dealt to it, included or not.

    The privacy plan's schedule (q, T, σ, FedAvg weights) depends on these only, so nothing it releases
    reveals the auditor's secret inclusion (zero-out neighbouring, :mod:`fedray.privacy.ledger`).
    """
    return [len(shard) + slots for shard, slots in zip(dealt.train_shards, audit_slot_counts(dealt, canaries))]


def audit_slot_counts(dealt: Dealt, canaries: AuditPlan | None) -> list[int]:
    """Of each hospital's record slots, the input canaries dealt to it, included or not (public: the dealing
    rule is; the inclusion is the auditor's secret). The plan's ``audit_slots``, which its ledger states."""
    counts = [0] * len(dealt.train_shards)
    if canaries is not None and canaries.input is not None:
        for k in canaries.input.hospitals:
            counts[int(k)] += 1
    return counts


def plan_insertions(cfg: Config, plan: Mechanism, canaries: AuditPlan | None, *, dealt: Dealt, num_classes: int,
                    num_features: int | None) -> AuditPlan | None:
    """Stage 2: gradient canaries or canary clients, whichever the mechanism's ``insertion_point()`` covers."""
    if canaries is None:
        return None
    m, point = cfg.audit.canaries, plan.insertion_point()
    if m == 0:
        canaries.notes["white_box"] = "audit.canaries=0"
    elif model_family(cfg.model.name) == "tree":
        canaries.notes["white_box"] = "a tree model has no gradients and no parameter updates to hold a canary"
    elif point.kind == "client_update":
        params = build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features).state_dict()
        names = floating_names({n: t.numpy() for n, t in params.items()})
        clients = CanaryClients(names=names, shapes={n: tuple(params[n].shape) for n in names}, seed=cfg.seed,
                                count=m, clip_norm=point.norm)
        canaries.clients = Inserted(clients, draw_inclusion(m, _auditor(cfg), CLIENT), None)
        canaries.client_sample_rate = point.sample_rate
    elif point.kind == "record_gradient":
        model = build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features)
        trainable = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
        norm = cfg.audit.gradient_canary_norm if point.norm is None else point.norm  # nothing clipped: the audit's
        design = dirac_canaries(trainable, m, norm, design_generator(cfg.seed, GRADIENT))
        hosts = consenting_hospitals([len(s) for s in dealt.train_shards])
        canaries.gradient = Inserted(design, draw_inclusion(len(design), _auditor(cfg), GRADIENT),
                                     deal_round_robin(len(design), hosts))
        canaries.observe_steps = cfg.audit.observer == "step" and not cfg.fl.secure_aggregation
        if cfg.audit.observer == "step" and cfg.fl.secure_aggregation:
            canaries.notes["step"] = ("fl.secure_aggregation=true: a hospital sends only its masked share, so no "
                                      "step-level view leaves it; the round view sees the aggregate")
    else:
        canaries.notes["white_box"] = point.note
    if cfg.audit.observer == "step" and canaries.gradient is None:
        canaries.notes["step"] = "the step-level view reads gradient canaries: DP-SGD and non-private runs hold them"
    return canaries


def hospital_attachments(canaries: AuditPlan | None, hospital: int) -> tuple[GradientCanaries, ...]:
    """What hospital ``hospital`` receives: the gradient canaries included there, the only ones it learns of; with
    the step-level view, every canary dealt to it (public designs) and which are included, in the dealing order."""
    if canaries is None or canaries.gradient is None:
        return ()
    inserted = canaries.gradient
    dealt = inserted.hospitals == hospital
    mine = np.flatnonzero(dealt if canaries.observe_steps else dealt & inserted.included)
    if not len(mine):
        return ()
    return (GradientCanaries(inserted.design.subset(mine), inserted.included[mine], canaries.observe_steps),)


def driver_attachments(canaries: AuditPlan | None) -> dict:
    """The driver's part: a round observer scoring every gradient canary's coordinate (never told the inclusion),
    and the included canary clients, both inserted into the sum and observed."""
    gradient = None if canaries is None else canaries.gradient
    clients = None if canaries is None or canaries.clients is None else IncludedCanaryClients(
        canaries.clients.design, np.flatnonzero(canaries.clients.included), canaries.client_sample_rate)
    observers = () if gradient is None else (WhiteBoxScores(gradient.design, gradient.hospitals),)
    if canaries is not None and canaries.observe_steps:
        observers += (StepScores(gradient.hospitals),)
    return {"observers": observers + (() if clients is None else (clients,)),
            "insertions": () if clients is None else (clients,)}

