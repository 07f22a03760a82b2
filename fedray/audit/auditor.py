"""The auditor task after the rounds, and the audit's part of the run summary.

:func:`run_auditor` runs in the driver's actor once the driver is gone (the
only process that sees members' records): it runs every membership attack
of :mod:`fedray.audit.attacks` on the final model(s) over the pools of
:mod:`fedray.audit.pools`, training the reference models offline LiRA and
RMIA need itself (RMIA also scores the population records with them and
with the audited model), and scores the input canaries.
:func:`audit_summary` adds the driver's observer reports (the white-box
canary scores, round and step views) and turns everything into bounds and flags against the
ledger's (ε, δ): ``summary["audit"]``.

Every audit figure is computed on real training records and released
un-noised: the summary says it is outside the guarantee.
"""

from __future__ import annotations

import numpy as np
import torch

from fedray.audit.canaries import input_canary_scores, one_run_report
from fedray.audit.canary_bounds import gaussian_epsilon_estimate
from fedray.audit.fair_attack import audit_flags
from fedray.audit.attacks import AttackView, Population, attack_scores
from fedray.audit.membership import per_example_losses
from fedray.audit.plan import AuditPlan
from fedray.audit.pools import attack_report, audit_pools
from fedray.audit.step_view import NAME as STEP_VIEW, published_sample_epsilon
from fedray.config import Config
from fedray.config.compose import replace
from fedray.data.deal import union
from fedray.data.input_map import input_map_from_state
from fedray.errors import FedrayError
from fedray.privacy.accounting import default_delta
from fedray.privacy.mechanisms import Mechanism
from fedray.privacy.randomness import AUDITOR, NoiseSource
from fedray.progress import Progress
from fedray.training import build_evaluator, build_trainer
from fedray.training.device import configure_process

OUTSIDE_GUARANTEE = ("outside the guarantee: audit statistics computed on real training records, released "
                     "un-noised; the ledger's epsilon does not cover them")
AUDIT_STREAM = 10_000  # seed streams of the auditor's reference models, apart from the hospitals' (0…N-1)
BOOTSTRAP_DRAWS = 200  # of the canary clients' Gaussian estimate interval


def audit_inputs(prep, final_params: list[dict], resources: dict, *, validation_choices: dict) -> dict:
    """The auditor task's arguments: members are exactly the real records trained on (hospital 0's under local).

    The config carries the driver's ``validation_choices`` (the prototype head's shrinkage), so the reference
    models are built as the audited model was.

    Non-members come from the members' population: under ``mode=local`` hospital 0's validation shard
    (partitioned like its training shard), otherwise the validation set and the test set, the latter only
    when it was cut from the same records (``splits.test_from_same_pool``; not a dataset's fixed test set).
    """
    cfg, dealt = replace(prep.cfg, **validation_choices), prep.dealt
    if cfg.mode == "local":
        members, held_out = dealt.train_shards[0], dealt.val_shards[0]
    else:
        members = union(dealt.train_shards)
        held_out = union([dealt.splits.val, dealt.splits.test]) if dealt.splits.test_from_same_pool \
            else dealt.splits.val
    pools = audit_pools(members=members, held_out=held_out, seed=cfg.seed, max_records=cfg.audit.max_records)
    inserted = None if prep.audit is None else prep.audit.input
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

    def probabilities(params: dict, pool: dict) -> np.ndarray:
        target.load(params)
        return target.predict_proba(pool["inputs"])

    def losses(params: dict, pool: dict) -> np.ndarray:
        return per_example_losses(probabilities(params, pool), pool["labels"])

    scored = {k: np.concatenate([pools["members"][k], pools["nonmembers"][k]]) for k in ("inputs", "labels")}
    probs = np.concatenate([probabilities(final_params[0], pools[p]) for p in ("members", "nonmembers")])
    n_members, n_refs = len(pools["members"]["labels"]), cfg.audit.reference_models
    population = pools["population"]
    reference = population_view = None
    if n_refs >= 2 and len(pools["reference"]["labels"]) > 0:
        progress, scored_losses, population_losses = Progress("audit: reference models"), [], []
        for r in range(n_refs):
            params = _reference_params(cfg, plan, shape, input_map, device, pools["reference"], r)
            scored_losses.append(losses(params, scored))
            if len(population["labels"]) > 0:
                population_losses.append(losses(params, population))
            progress(r + 1, n_refs)
        reference = np.stack(scored_losses)
        if population_losses:
            population_view = Population(losses=losses(final_params[0], population),
                                         reference_losses=np.stack(population_losses))
    view = AttackView(probs=probs, labels=scored["labels"], losses=per_example_losses(probs, scored["labels"]),
                      reference_losses=reference, population=population_view)
    canary_scores = None
    if input_canaries is not None:
        canary_scores = np.zeros(len(input_canaries["labels"]))
        for k in np.unique(input_canaries["hospitals"]):
            mine = input_canaries["hospitals"] == k
            target.load(final_params[k] if cfg.mode == "local" else final_params[0])
            canary_scores[mine] = input_canary_scores(target.predict_proba(input_canaries["inputs"][mine]),
                                                      input_canaries["labels"][mine])
    return {"attack_scores": attack_scores(view),
            "is_member": np.r_[np.ones(n_members), np.zeros(len(scored["labels"]) - n_members)],
            "reference_models": 0 if reference is None else n_refs, "input_canary_scores": canary_scores}


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


def audit_summary(cfg: Config, canaries: AuditPlan, auditor: dict, observer_reports: dict, *, ledger: dict,
                  num_records: int) -> dict:
    """``summary["audit"]``: the fair attack report, each canary audit, and every flag.

    ``observer_reports`` are the driver's (``Driver.observer_reports``): the gradient canaries' white-box scores
    under ``"gradient"``, their step-level statistics under ``"gradient_step"``, the canary clients' cosines under
    ``"clients"``.
    """
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
        found["gradient"] = one_run_report(observer_reports["gradient"], canaries.gradient.included, **common,
                                           requested=audit.canaries, norm=canaries.gradient.design.norm, view=view)
    if STEP_VIEW in observer_reports:
        found.update(_step_reports(observer_reports[STEP_VIEW], canaries.gradient, common, requested=audit.canaries))
    if canaries.clients is not None:
        cosines, included = observer_reports["clients"], canaries.clients.included
        found["clients"] = one_run_report(cosines, included, **common, requested=audit.canaries,
                                          view="the cosine of the final model delta with each canary client")
        found["clients"]["gaussian_estimate"] = _gaussian_estimate(cosines, included, delta, confidence, cfg.seed)
    for kind in found.values():
        flags += kind["flags"]
    return {**report, "reference_models": auditor["reference_models"], "delta": delta, "confidence": confidence,
            "canaries": {**found, "notes": dict(canaries.notes)}, "flags": flags, "guarantee": OUTSIDE_GUARANTEE}


def _step_reports(steps: dict, gradient, common: dict, *, requested: int) -> dict:
    """The step-level view's two audits (:mod:`fedray.audit.step_view`): sample unknown, against the accountant's
    ε; sample known, against the ε of DP-SGD with its sample published."""
    published = published_sample_epsilon(steps["mu_squared"], common["delta"])
    norm = gradient.design.norm
    return {
        "gradient_step": one_run_report(
            steps["blind"], gradient.included, **common, requested=requested, norm=norm,
            view="white-box: every noised step at each hospital, the Poisson sample unknown (likelihood-ratio "
                 "score); the view DP-SGD's epsilon is for"),
        "gradient_step_sampled": one_run_report(
            steps["sampled"], gradient.included, **{**common, "accountant_epsilon": published},
            epsilon_source="the sample-published mechanism's", requested=requested, norm=norm,
            published_sample_epsilon=published,
            view="white-box: every noised step at each hospital with the Poisson sample known: a stronger "
                 "adversary than DP-SGD's epsilon covers, compared with the epsilon of DP-SGD with its sample "
                 "published (exactly Gaussian)"),
    }


def _gaussian_estimate(cosines: np.ndarray, included: np.ndarray, delta: float, confidence: float,
                       seed: int) -> dict | None:
    """Andrew et al.'s ε estimate from observed vs unobserved cosines (pooled variance); None with < 2 of either."""
    if min(int(included.sum()), int((~included).sum())) < 2:
        return None
    return gaussian_epsilon_estimate(cosines[included], cosines[~included], delta, confidence=confidence,
                                     n_bootstrap=BOOTSTRAP_DRAWS, rng=np.random.default_rng(seed),
                                     pooled_variance=True).as_dict()
