"""Membership-inference audit of a finished run: what an attacker still learns.

The auditor is a separate role from the driver: it is given the final model,
the member records (exactly the records the hospitals trained on, by id; a
record that was never trained on, e.g. one without consent, is never a
member) and held-out records no hospital trained on.

Record pools (all drawn with the run's seed):

- members: a uniform sample of the hospitals' training records;
- the held-out pool (validation ∪ test) is split in two halves: audit
  non-members, and the reference population on which R reference models are
  trained for the calibrated attack (offline LiRA needs models that saw none
  of the scored records, members or not);
- members are sampled to the same count as non-members (balanced), capped at
  ``audit.max_records`` each.

Reference models are trained centrally on the reference population with the
run's architecture and optimiser for rounds × local_epochs epochs, without DP
(the attacker's choice; it does not weaken the attack on a DP target).

With n non-members, no empirical ε above about log(n) can be certified, so the
summary states n next to the bound (docs/privacy.md).
"""

from __future__ import annotations

import numpy as np
import torch

from fedray.config import Config
from fedray.data.input_map import input_map_from_state
from fedray.privacy.randomness import AUDITOR, NoiseSource
from fedray.data.types import Records
from fedray.training.device import configure_process
from fedray.privacy.membership import (
    calibrated_scores,
    evaluate_attack,
    loss_threshold_scores,
    per_example_losses,
)
from fedray.training import build_evaluator, build_trainer

# Seed streams of the auditor's models, apart from the hospitals' (0…N-1).
AUDIT_STREAM = 10_000


def audit_pools(*, members: Records, held_out: Records, max_records: int, seed: int) -> dict[str, Records]:
    """Balanced members / non-members and a disjoint reference population, as described above."""
    rng = np.random.default_rng([seed, 0xA0D17])
    order = rng.permutation(len(held_out))
    half = len(order) // 2
    nonmember_idx, reference_idx = order[:half], order[half:]
    n = min(len(nonmember_idx), len(members), max_records)
    return {
        "members": members.subset(np.sort(rng.choice(len(members), size=n, replace=False))),
        "nonmembers": held_out.subset(np.sort(nonmember_idx[:n])),
        "reference": held_out.subset(np.sort(reference_idx)),
    }


def run_audit(*, cfg: Config, plan: dict, params: dict, pools: dict[str, dict], input_map_state: dict,
              num_classes: int, num_features: int | None, resources: dict) -> dict:
    """Attack the final model; returns the reports of each attack and the strongest (highest AUC)."""
    device = configure_process(num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], seed=cfg.seed)
    input_map = input_map_from_state(input_map_state)
    delta = plan.get("delta") or 1e-5
    shape = dict(num_classes=num_classes, num_features=num_features)

    def losses_under(model, pool: dict) -> np.ndarray:
        return per_example_losses(model.predict_proba(pool["inputs"]), pool["labels"])

    target = build_evaluator(cfg, plan, **shape, input_map=input_map, device=device)
    target.load(params)
    members, nonmembers = losses_under(target, pools["members"]), losses_under(target, pools["nonmembers"])
    scores, is_member = loss_threshold_scores(members, nonmembers)
    reports = [evaluate_attack(scores, is_member, attack="loss_threshold", delta=delta).as_dict()]

    n_refs = cfg.audit.reference_models
    if n_refs >= 2 and len(pools["reference"]["labels"]) > 0:
        scored = {k: np.concatenate([pools["members"][k], pools["nonmembers"][k]]) for k in ("inputs", "labels")}
        epochs = cfg.fl.rounds * cfg.fl.local_epochs
        reference_losses = []
        for r in range(n_refs):
            reference = _reference_trainer(cfg, plan, shape, input_map, device, pools["reference"], stream=r)
            params_r, _ = reference.fit(reference.export(), epochs=epochs, round_idx=0)
            reference.load(params_r)
            reference_losses.append(losses_under(reference, scored))
        lira = calibrated_scores(np.concatenate([members, nonmembers]), np.stack(reference_losses), method="lira")
        reports.append(evaluate_attack(lira, is_member, attack="lira_offline", delta=delta).as_dict())
    strongest = max(reports, key=lambda r: r["auc"])
    return {"strongest": strongest, "attacks": reports, "reference_models": n_refs if len(reports) > 1 else 0,
            "delta": delta}


def _reference_trainer(cfg, plan, shape, input_map, device, pool: dict, *, stream: int):
    """A non-private trainer of the run's architecture on the reference population, its own seed stream."""
    hospital = AUDIT_STREAM + stream
    torch.manual_seed(cfg.seed + hospital)
    # The target's architecture (GroupNorm under DP-SGD), trained without any mechanism.
    return build_trainer(cfg=cfg, plan=plan, **shape, inputs=pool["inputs"], labels=pool["labels"],
                         input_map=input_map, device=device, hospital=hospital, apply_mechanism=False,
                         noise=NoiseSource.reproducible(cfg.seed, AUDITOR))
