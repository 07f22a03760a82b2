r"""The membership-inference audit's pure parts: record pools, and the attacks reported fairly (no Ray, no training).

The orchestration (the auditor task, its reference models, canary insertion)
lives in :mod:`fedray.audit.auditor`; this module only draws pools and
turns per-record scores into reports.

**Pools** (:func:`audit_pools`, all drawn with the run's seed, which is public:
no DP claim rests on them):

- members: a uniform sample of the records the audited model trained on;
- the held-out pool, records of the same population that no hospital trained
  on, is split in two halves: audit non-members, and the reference population;
- members are sampled to the same count as non-members, capped at ``max_records``;
- the reference population is split in two halves again: ``reference``, on
  which the auditor's reference models train (offline LiRA and RMIA need
  models that saw none of the scored records), and ``population``, RMIA's
  records z, joined by the non-member half's records left unscored by the
  cap. Each z is held out, so the audited model never trained on it; it is
  not in ``reference``, so no reference model trained on it; and it is not
  scored, so comparing with it reveals nothing of whom the pool's members are.
  RMIA's score takes m + 1 values on m population records, and its power at
  low FPR fades once m falls well below the scored non-members: half the
  reference population keeps m about the eval half's non-members.

Members and non-members must come from one distribution, or the attack
scores the difference between two populations: the caller passes as the
held-out pool the validation records partitioned like the members (the same
scheme and seed), and the test records only when they were cut from the same
records (:func:`fedray.audit.auditor.audit_inputs` says which).

**Reporting** (:func:`attack_report`). The scored pool is split at random into
a *choose* and an *eval* half (:func:`fedray.audit.fair_attack.split_for_threshold`);
the attack and its thresholds are chosen on the first and certified on the
second (:func:`fedray.audit.fair_attack.select_attack_heldout`), so neither the
threshold nor the choice of attack biases the bound. ``strongest`` is that
chosen attack, with its eval-half AUC, advantage (and interval), TPR at low
FPR and ε lower bound; ``max_over_attacks`` is the labelled maximum.

With n eval non-members, no empirical ε above about log(n/3.7) can be
certified, so the report states n beside the bound (docs/privacy.md).
"""

from __future__ import annotations

import numpy as np

from fedray.data.types import Records
from fedray.audit.fair_attack import select_attack_heldout, split_for_threshold
from fedray.audit.membership import evaluate_attack

_POOL_TAG, _SPLIT_TAG = 0xA0D17, 0x5E1EC7


def audit_pools(*, members: Records, held_out: Records, max_records: int, seed: int) -> dict[str, Records]:
    """Balanced members / non-members, the reference models' records and RMIA's population, as described above."""
    rng = np.random.default_rng([seed, _POOL_TAG])
    order = rng.permutation(len(held_out))
    half = len(order) // 2
    nonmember_idx, reference_idx = order[:half], order[half:]
    n = min(len(nonmember_idx), len(members), max_records)
    trained_on = (len(reference_idx) + 1) // 2
    return {
        "members": members.subset(np.sort(rng.choice(len(members), size=n, replace=False))),
        "nonmembers": held_out.subset(np.sort(nonmember_idx[:n])),
        "reference": held_out.subset(np.sort(reference_idx[:trained_on])),
        "population": held_out.subset(np.sort(np.r_[reference_idx[trained_on:], nonmember_idx[n:]])),
    }


def attack_report(attack_scores: dict[str, np.ndarray], is_member: np.ndarray, *, delta: float, confidence: float,
                  seed: int) -> dict:
    """Every attack chosen and certified on separate random halves of the scored pool (module docstring).

    ``attack_scores`` maps an attack's name to its scores ("higher = member") over the pool, in the
    order of ``is_member``. Returns ``strongest`` (the attack chosen on the choose half, figures from the
    eval half), ``attacks`` (each attack's held-out figures), ``max_over_attacks`` and the halves' sizes.
    """
    is_member = np.asarray(is_member).astype(bool)
    choose_idx, eval_idx = split_for_threshold(len(is_member), np.random.default_rng([seed, _SPLIT_TAG]))
    selection = select_attack_heldout(attack_scores, is_member, choose_idx, eval_idx, delta, confidence).as_dict()
    chosen = selection["strongest"]
    low_fpr = evaluate_attack(attack_scores[chosen["attack"]][eval_idx], is_member[eval_idx],
                              attack=chosen["attack"], delta=delta, confidence=confidence)
    strongest = {**chosen, "tpr_at_1pct_fpr": low_fpr.tpr_at_1pct_fpr,
                 "tpr_at_0_1pct_fpr": low_fpr.tpr_at_0_1pct_fpr,
                 "selection": "attack and thresholds chosen on the choose half, figures from the eval half"}
    return {**selection, "strongest": strongest}
