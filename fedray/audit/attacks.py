r"""Membership attacks, one registry: each turns what the attacker sees into a score per record (higher = member).

An attack receives an :class:`AttackView` of the scored pool (the members,
then the non-members; :mod:`fedray.audit.pools`): the audited model's class
probabilities on each record, its label and its loss
:math:`\ell_i = -\log p_{i,y_i}`, and, where the auditor trained :math:`R \ge 2`
reference models on the disjoint reference population, each record's loss
under each of them (``[R, n]``). It returns one score per record, or None
when it cannot run (no reference models). The attacks are black-box: they
read the released model's outputs only.

Every registered attack runs. :func:`fedray.audit.pools.attack_report`
chooses the attack and its threshold on one random half of the pool and
certifies them on the other, so adding an attack never biases the reported
bound: a new one is a function decorated with :func:`register_attack`.

- ``loss_threshold`` (Yeom et al., CSF 2018): :math:`-\ell_i`.
- ``lira_offline`` (Carlini et al., S&P 2022, offline): the target loss
  calibrated against the reference models' losses on the same record
  (:func:`fedray.audit.membership.calibrated_scores`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedray.audit.membership import calibrated_scores


@dataclass(frozen=True)
class AttackView:
    probs: np.ndarray  # [n, C] the audited model's probabilities
    labels: np.ndarray  # [n]
    losses: np.ndarray  # [n] the audited model's per-record cross-entropy
    reference_losses: np.ndarray | None  # [R, n] under R reference models that never saw the n records; or None


Attack = Callable[[AttackView], "np.ndarray | None"]
ATTACKS: dict[str, Attack] = {}


def register_attack(name: str) -> Callable[[Attack], Attack]:
    """Decorator: run ``attack`` in every audit under ``name`` (its scores' key in ``summary.audit.attacks``)."""

    def decorate(attack: Attack) -> Attack:
        if ATTACKS.get(name, attack) is not attack:
            raise ValueError(f"attack {name!r} is already registered; pick another name")
        ATTACKS[name] = attack
        return attack

    return decorate


@register_attack("loss_threshold")
def loss_threshold(view: AttackView) -> np.ndarray:
    return -view.losses


@register_attack("lira_offline")
def lira_offline(view: AttackView) -> np.ndarray | None:
    if view.reference_losses is None:
        return None
    return calibrated_scores(view.losses, view.reference_losses, method="lira")


def attack_scores(view: AttackView) -> dict[str, np.ndarray]:
    """Every registered attack's scores, in registration order; an attack that cannot run is left out."""
    scores = {name: attack(view) for name, attack in ATTACKS.items()}
    return {name: np.asarray(s, dtype=np.float64) for name, s in scores.items() if s is not None}
