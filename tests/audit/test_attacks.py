"""The membership attacks' registry: every registered attack runs, one that cannot is left out, names are unique."""

from __future__ import annotations

import numpy as np
import pytest

from fedray.audit.attacks import ATTACKS, AttackView, Population, attack_scores, register_attack
from fedray.audit.membership import calibrated_scores, per_example_losses, rmia_scores


def _view(reference: bool, population: bool = False) -> AttackView:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=8)
    labels = rng.integers(0, 3, size=8)
    losses = per_example_losses(probs, labels)
    z = rng.exponential(size=5)
    return AttackView(probs=probs, labels=labels, losses=losses,
                      reference_losses=losses + rng.exponential(size=(2, 8)) if reference else None,
                      population=Population(losses=z, reference_losses=z + rng.exponential(size=(2, 5)))
                      if population else None)


def test_the_shipped_attacks_score_as_their_papers_say():
    alone = attack_scores(_view(reference=False))
    assert list(alone) == ["loss_threshold"]  # offline LiRA needs reference models, RMIA a population too
    assert list(attack_scores(_view(reference=False, population=True))) == ["loss_threshold"]
    assert list(attack_scores(_view(reference=True))) == ["loss_threshold", "lira_offline"]
    view = _view(reference=True, population=True)
    scores = attack_scores(view)
    assert list(scores) == ["loss_threshold", "lira_offline", "rmia_offline"]
    np.testing.assert_array_equal(scores["loss_threshold"], -view.losses)
    np.testing.assert_array_equal(scores["lira_offline"], calibrated_scores(view.losses, view.reference_losses))
    np.testing.assert_array_equal(scores["rmia_offline"], rmia_scores(view.losses, view.reference_losses,
                                                                      view.population.losses,
                                                                      view.population.reference_losses))


def test_a_registered_attack_runs_and_a_taken_name_is_refused():
    try:
        register_attack("max_confidence")(lambda view: view.probs.max(axis=1))
        scores = attack_scores(_view(reference=False))
        assert list(scores) == ["loss_threshold", "max_confidence"]
        with pytest.raises(ValueError, match="already registered"):
            register_attack("max_confidence")(lambda view: -view.losses)
    finally:
        ATTACKS.pop("max_confidence", None)
