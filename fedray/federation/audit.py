"""The privacy audit of one experiment: canaries planned before the run, the auditor task after it.

The stages, in the order :mod:`fedray.federation.experiment` calls them:

1. :func:`plan_input_canaries`, before the privacy plan: the auditor makes
   ``audit.input_canaries`` records, draws their inclusion with its own secret
   randomness and deals them round-robin to the hospitals holding consented
   records; :func:`training_shards` appends the included ones to those
   hospitals' training shards (never to a validation, test or audit pool),
   so the privacy plan counts them as records.
2. :func:`plan_white_box`, once the plan is known: ``audit.canaries`` gradient
   canaries under DP-SGD and non-private runs, or canary clients under
   client-level DP-FedAvg (:mod:`fedray.privacy.canaries` says why only there).
3. Hospital k receives its included gradient canaries
   (:func:`hospital_gradient_canaries`); the driver, the white-box adversary,
   receives every canary's coordinate but no inclusion (:func:`driver_canaries`).
4. After the rounds, :func:`run_auditor` (run in the driver's actor once the
   driver is gone, the only process that sees members' records) attacks the final
   model(s) with the membership attacks and scores the input canaries;
   :func:`audit_summary` adds the driver's white-box scores and turns
   everything into bounds and flags against the ledger's (ε, δ).

The plan is kept in a checkpoint and reused on resume: the inclusion is drawn
once per run, never again. Canaries and inclusion are the auditor's: the
summary reports how many were trained on, never which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from fedray.config import Config
from fedray.data.deal import Dealt, union
from fedray.data.input_map import input_map_from_state
from fedray.data.types import Records
from fedray.errors import FedrayError
from fedray.models import model_family
from fedray.privacy.accounting import default_delta
from fedray.privacy.audit import attack_report, audit_pools
from fedray.privacy.canaries import (CLIENT, GRADIENT, INPUT, CanaryClients, DiracCanaries, IncludedCanaryClients,
                                     WhiteBoxScores, consenting_hospitals, deal_round_robin, design_generator,
                                     dirac_canaries, draw_inclusion, floating_names, input_canary_arrays,
                                     input_canary_scores, one_run_report)
from fedray.privacy.canary_bounds import gaussian_epsilon_estimate
from fedray.privacy.fair_audit import audit_flags
from fedray.privacy.mechanisms import Mechanism
from fedray.privacy.membership import calibrated_scores, per_example_losses
from fedray.privacy.randomness import AUDITOR, NoiseSource
from fedray.training import build_evaluator, build_trainer, build_training_model
from fedray.training.device import configure_process

# Every audit figure is computed on real training records (the members) and released un-noised.
OUTSIDE_GUARANTEE = ("outside the guarantee: audit statistics computed on real training records, released "
                     "un-noised; the ledger's epsilon does not cover them")
AUDIT_STREAM = 10_000  # seed streams of the auditor's reference models, apart from the hospitals' (0…N-1)
BOOTSTRAP_DRAWS = 200  # of the canary clients' Gaussian estimate interval


@dataclass(frozen=True)
class Inserted:
    """One kind of canary: its public design, the auditor's secret inclusion, and each canary's hospital."""

    design: Records | DiracCanaries | CanaryClients
    included: np.ndarray
    hospitals: np.ndarray | None  # None for canary clients, which are clients of their own


@dataclass
class CanaryPlan:
    """Every canary of one run, decided before any actor starts; ``notes`` say why a kind is absent."""

    input: Inserted | None = None
    gradient: Inserted | None = None
    clients: Inserted | None = None
    client_sample_rate: float = 1.0
    notes: dict[str, str] = field(default_factory=dict)


def _auditor(cfg: Config) -> NoiseSource:
    """The auditor's own randomness: secret OS entropy unless ``privacy.reproducible_noise``."""
    return NoiseSource.from_config(cfg.privacy, seed=cfg.seed, party=AUDITOR)


def plan_input_canaries(cfg: Config, dealt: Dealt) -> CanaryPlan | None:
    """Stage 1: the input canaries (None when the audit is off)."""
    if not cfg.audit.enabled:
        return None
    plan, m = CanaryPlan(), cfg.audit.input_canaries
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
                                  ids=np.array([f"canary/{j:06d}" for j in range(m)], dtype=object))
    plan.input = Inserted(records, draw_inclusion(m, _auditor(cfg), INPUT), deal_round_robin(m, hosts))
    return plan


def training_shards(dealt: Dealt, canaries: CanaryPlan | None) -> list[Records]:
    """Each hospital's training shard with its included input canaries appended (the shards the hospitals get)."""
    if canaries is None or canaries.input is None:
        return dealt.train_shards
    inserted = canaries.input
    shards = []
    for k, shard in enumerate(dealt.train_shards):
        mine = np.flatnonzero(inserted.included & (inserted.hospitals == k))
        shards.append(union([shard, inserted.design.subset(mine)]) if len(mine) else shard)
    return shards


def slot_counts(dealt: Dealt, canaries: CanaryPlan | None) -> list[int]:
    """Each hospital's public record slots: its records plus every input canary dealt to it, included or not.

    The privacy plan's schedule (q, T, σ, FedAvg weights) depends on these only, so nothing it releases
    reveals the auditor's secret inclusion (zero-out neighbouring, :mod:`fedray.privacy.ledger`).
    """
    counts = [len(shard) for shard in dealt.train_shards]
    if canaries is not None and canaries.input is not None:
        for k in canaries.input.hospitals:
            counts[int(k)] += 1
    return counts


def plan_white_box(cfg: Config, plan: Mechanism, canaries: CanaryPlan | None, *, dealt: Dealt, num_classes: int,
                   num_features: int | None) -> CanaryPlan | None:
    """Stage 2: gradient canaries or canary clients, whichever the mechanism's guarantee covers (``plan.white_box``)."""
    if canaries is None:
        return None
    m, white_box = cfg.audit.canaries, plan.white_box(cfg)
    if m == 0:
        canaries.notes["white_box"] = "audit.canaries=0"
    elif model_family(cfg.model.name) == "tree":
        canaries.notes["white_box"] = "a tree model has no gradients and no parameter updates to hold a canary"
    elif white_box.kind == "clients":
        params = build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features).state_dict()
        names = floating_names({n: t.numpy() for n, t in params.items()})
        clients = CanaryClients(names=names, shapes={n: tuple(params[n].shape) for n in names}, seed=cfg.seed,
                                count=m, clip_norm=white_box.norm)
        canaries.clients = Inserted(clients, draw_inclusion(m, _auditor(cfg), CLIENT), None)
        canaries.client_sample_rate = white_box.sample_rate
    elif white_box.kind == "gradient":
        model = build_training_model(cfg, plan, num_classes=num_classes, num_features=num_features)
        trainable = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
        design = dirac_canaries(trainable, m, white_box.norm, design_generator(cfg.seed, GRADIENT))
        hosts = consenting_hospitals([len(s) for s in dealt.train_shards])
        canaries.gradient = Inserted(design, draw_inclusion(len(design), _auditor(cfg), GRADIENT),
                                     deal_round_robin(len(design), hosts))
    else:
        canaries.notes["white_box"] = white_box.note
    return canaries


def hospital_gradient_canaries(canaries: CanaryPlan | None, hospital: int) -> DiracCanaries | None:
    """The gradient canaries included at ``hospital``: the only ones it ever learns of."""
    if canaries is None or canaries.gradient is None:
        return None
    inserted = canaries.gradient
    return inserted.design.subset(np.flatnonzero(inserted.included & (inserted.hospitals == hospital)))


def driver_canaries(canaries: CanaryPlan | None) -> dict:
    """The driver's part: every gradient canary's coordinate (not its inclusion) and the included canary clients."""
    gradient = None if canaries is None else canaries.gradient
    clients = None if canaries is None else canaries.clients
    return {
        "white_box": None if gradient is None else WhiteBoxScores(gradient.design, gradient.hospitals),
        "canary_clients": None if clients is None else IncludedCanaryClients(
            clients.design, np.flatnonzero(clients.included), canaries.client_sample_rate),
    }


def audit_inputs(prep, final_params: list[dict], resources: dict) -> dict:
    """The auditor task's arguments: members are exactly the real records trained on (hospital 0's under local).

    Non-members come from the members' population: under ``mode=local`` hospital 0's validation shard
    (partitioned like its training shard), otherwise the validation set and the test set, the latter only
    when it was cut from the same records (not a fixed test folder).
    """
    cfg, dealt = prep.cfg, prep.dealt
    if cfg.mode == "local":
        members, held_out = dealt.train_shards[0], dealt.val_shards[0]
    else:
        same_pool_test = not getattr(cfg.data, "use_test_folder", False)
        members = union(dealt.train_shards)
        held_out = union([dealt.splits.val, dealt.splits.test]) if same_pool_test else dealt.splits.val
    pools = audit_pools(members=members, held_out=held_out, seed=cfg.seed, max_records=cfg.audit.max_records)
    inserted = None if prep.canaries is None else prep.canaries.input
    input_canaries = None if inserted is None else {
        "inputs": np.ascontiguousarray(inserted.design.inputs.numpy()), "labels": inserted.design.labels,
        "hospitals": inserted.hospitals}
    return dict(cfg=cfg, plan=prep.privacy, final_params=final_params,
                pools={k: {"inputs": np.ascontiguousarray(v.inputs.numpy()), "labels": v.labels}
                       for k, v in pools.items()},
                input_canaries=input_canaries, input_map_state=dealt.input_map.state_dict(),
                num_classes=prep.num_classes, num_features=prep.num_features, resources=resources)


def run_auditor(*, cfg: Config, plan: Mechanism, final_params: list[dict], pools: dict[str, dict],
                input_canaries: dict | None, input_map_state: dict, num_classes: int, num_features: int | None,
                resources: dict) -> dict:
    """The auditor task: membership attacks on the audited model and black-box scores of the input canaries."""
    device = configure_process(num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], seed=cfg.seed)
    input_map = input_map_from_state(input_map_state)
    shape = dict(num_classes=num_classes, num_features=num_features)
    target = build_evaluator(cfg, plan, **shape, input_map=input_map, device=device)

    def losses(params: dict, pool: dict) -> np.ndarray:
        target.load(params)
        return per_example_losses(target.predict_proba(pool["inputs"]), pool["labels"])

    members, nonmembers = losses(final_params[0], pools["members"]), losses(final_params[0], pools["nonmembers"])
    attack_scores = {"loss_threshold": -np.concatenate([members, nonmembers])}
    n_refs = cfg.audit.reference_models
    if n_refs >= 2 and len(pools["reference"]["labels"]) > 0:
        scored = {k: np.concatenate([pools["members"][k], pools["nonmembers"][k]]) for k in ("inputs", "labels")}
        reference_losses = [losses(_reference_params(cfg, plan, shape, input_map, device, pools["reference"], r),
                                   scored) for r in range(n_refs)]
        attack_scores["lira_offline"] = calibrated_scores(np.concatenate([members, nonmembers]),
                                                          np.stack(reference_losses), method="lira")
    canary_scores = None
    if input_canaries is not None:
        canary_scores = np.zeros(len(input_canaries["labels"]))
        for k in np.unique(input_canaries["hospitals"]):
            mine = input_canaries["hospitals"] == k
            target.load(final_params[k] if cfg.mode == "local" else final_params[0])
            canary_scores[mine] = input_canary_scores(target.predict_proba(input_canaries["inputs"][mine]),
                                                      input_canaries["labels"][mine])
    return {"attack_scores": attack_scores, "is_member": np.r_[np.ones(len(members)), np.zeros(len(nonmembers))],
            "reference_models": n_refs if "lira_offline" in attack_scores else 0, "input_canary_scores": canary_scores}


def _reference_params(cfg, plan, shape, input_map, device, pool: dict, stream: int) -> dict:
    """A non-private model of the run's architecture trained centrally on the reference population."""
    hospital = AUDIT_STREAM + stream
    torch.manual_seed(cfg.seed + hospital)
    # The target's architecture (GroupNorm under DP-SGD), trained without any mechanism: the attacker's choice.
    trainer = build_trainer(cfg=cfg, plan=plan, **shape, inputs=pool["inputs"], labels=pool["labels"],
                            input_map=input_map, device=device, hospital=hospital, apply_mechanism=False,
                            noise=NoiseSource.reproducible(cfg.seed, AUDITOR), rounds=1)
    params, _ = trainer.fit(trainer.export(), epochs=cfg.fl.rounds * cfg.fl.local_epochs, round_idx=0)
    return params


def audit_delta(ledger: dict, num_records: int) -> float:
    """δ of every bound: the ledger's (0 under pure DP); without one, the default δ below 1/N of the N records."""
    delta = ledger.get("delta")
    return default_delta(num_records) if delta is None else float(delta)


def audit_summary(cfg: Config, canaries: CanaryPlan, auditor: dict, driver_scores: dict, *, ledger: dict,
                  num_records: int) -> dict:
    """``summary["membership_inference"]``: the fair attack report, each canary audit, and every flag."""
    audit, confidence = cfg.audit, cfg.audit.confidence
    delta, epsilon = audit_delta(ledger, num_records), float(ledger["epsilon"])
    try:
        report = attack_report(auditor["attack_scores"], auditor["is_member"], delta=delta, confidence=confidence,
                               seed=cfg.seed)
        flags = audit_flags(report, epsilon, delta)
    except FedrayError as too_small:  # e.g. mode=local on tiny data: hospital 0's validation shard is the pool
        report, flags = {"strongest": None, "attacks": [], "attack_note": str(too_small)}, []
    common = dict(delta=delta, confidence=confidence, accountant_epsilon=epsilon)
    found = {}
    if canaries.input is not None:
        found["input"] = one_run_report(auditor["input_canary_scores"], canaries.input.included, **common,
                                        requested=audit.input_canaries,
                                        view="black-box: the final model's loss on each canary's label")
    if canaries.gradient is not None:
        view = ("white-box: the aggregate of each round (secure aggregation)" if cfg.fl.secure_aggregation else
                "white-box: each hospital's update of each round, as the driver receives it")
        found["gradient"] = one_run_report(driver_scores["gradient"], canaries.gradient.included, **common,
                                           requested=audit.canaries, norm=canaries.gradient.design.norm, view=view)
    if canaries.clients is not None:
        cosines, included = driver_scores["clients"], canaries.clients.included
        found["clients"] = one_run_report(cosines, included, **common, requested=audit.canaries,
                                          view="the cosine of the final model delta with each canary client")
        found["clients"]["gaussian_estimate"] = _gaussian_estimate(cosines, included, delta, confidence, cfg.seed)
    for kind in found.values():
        flags += kind["flags"]
    return {**report, "reference_models": auditor["reference_models"], "delta": delta, "confidence": confidence,
            "canaries": {**found, "notes": dict(canaries.notes)}, "flags": flags, "guarantee": OUTSIDE_GUARANTEE}


def _gaussian_estimate(cosines: np.ndarray, included: np.ndarray, delta: float, confidence: float,
                       seed: int) -> dict | None:
    """Andrew et al.'s ε estimate from observed vs unobserved cosines (pooled variance); None with < 2 of either."""
    if min(int(included.sum()), int((~included).sum())) < 2:
        return None
    return gaussian_epsilon_estimate(cosines[included], cosines[~included], delta, confidence=confidence,
                                     n_bootstrap=BOOTSTRAP_DRAWS, rng=np.random.default_rng(seed),
                                     pooled_variance=True).as_dict()
