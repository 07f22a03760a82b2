r"""Membership attacks, one registry: each turns what the attacker sees into a score per record (higher = member).

An attack receives an :class:`AttackView` of the scored pool (the members,
then the non-members; :mod:`fedray.audit.pools`): the audited model's class
probabilities on each record, its label and its loss
:math:`\ell_i = -\log p_{i,y_i}`, and, where the auditor trained :math:`R \ge 2`
reference models on the disjoint reference population, each record's loss
under each of them (``[R, n]``), and, with those, a :class:`Population`:
the losses of the audited model and of the same reference models on records
that none of them trained on and that are not scored. It returns one score
per record, or None when it cannot run (no reference models, no population).
The attacks are black-box: they read the released model's outputs only.

Every registered attack runs. :func:`fedray.audit.pools.attack_report`
chooses the attack and its threshold on one random half of the pool and
certifies them on the other, so adding an attack never biases the reported
bound: a new one is a function decorated with :func:`register_attack`.

- ``loss_threshold`` (Yeom et al., CSF 2018): :math:`-\ell_i`.
- ``lira_offline`` (Carlini et al., S&P 2022, offline): the target loss
  calibrated against the reference models' losses on the same record
  (:func:`fedray.audit.membership.calibrated_scores`).
- ``rmia_offline`` (Zarifzadeh, Liu & Shokri, ICML 2024, offline): with
  :math:`p = e^{-\ell}` and :math:`\bar p_{OUT}` the reference models' mean,
  :math:`r(x) = p(x\mid\theta) / \tfrac12\big((1+a)\bar p_{OUT}(x) + 1-a\big)`
  and the score is :math:`\Pr_z[r(x)/r(z) \ge \gamma]` over the population,
  :math:`a = 0.3`, :math:`\gamma = 1`
  (:func:`fedray.audit.membership.rmia_scores`). It assumes the population
  records are drawn like the scored ones and are non-members of the target
  and of every reference model, and that a member's probability is about
  :math:`a\,p_{OUT} + 1 - a` (the paper's offline approximation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedray.audit.membership import calibrated_scores, rmia_scores


@dataclass(frozen=True)
class Population:
    """RMIA's records z: members of neither the audited model nor any reference model, and never scored.

    The auditor's ``population`` pool (:func:`fedray.audit.pools.audit_pools`): held-out records, which no
    hospital trained on, taken from the half of the reference population the reference models do not train
    on, and from the non-members the ``max_records`` cap leaves unscored. Scored records as z would compare
    each member with the others and leak membership into the scores.
    """

    losses: np.ndarray  # [m] the audited model's cross-entropy of the true label
    reference_losses: np.ndarray  # [R, m] under the reference models of AttackView.reference_losses


@dataclass(frozen=True)
class AttackView:
    probs: np.ndarray  # [n, C] the audited model's probabilities
    labels: np.ndarray  # [n]
    losses: np.ndarray  # [n] the audited model's per-record cross-entropy
    reference_losses: np.ndarray | None  # [R, n] under R reference models that never saw the n records; or None
    population: Population | None = None  # only with reference_losses


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


@register_attack("rmia_offline")
def rmia_offline(view: AttackView) -> np.ndarray | None:
    if view.reference_losses is None or view.population is None:
        return None
    return rmia_scores(view.losses, view.reference_losses, view.population.losses, view.population.reference_losses)


def attack_scores(view: AttackView) -> dict[str, np.ndarray]:
    """Every registered attack's scores, in registration order; an attack that cannot run is left out."""
    scores = {name: attack(view) for name, attack in ATTACKS.items()}
    return {name: np.asarray(s, dtype=np.float64) for name, s in scores.items() if s is not None}
