r"""``privacy=dp_tree``: each hospital fits diffprivlib's ε-DP trees once, on its own rows.

diffprivlib's own ``BudgetAccountant`` charges each tree's fit; the ε a
hospital's state reports is the largest any of its trees charged (the rows of
a forest's trees are disjoint), declared as a pure
:func:`~fedray.privacy.ledger.pure_dp_event` (ε, δ = 0). Every record is in one hospital, so the run is
max-over-hospitals ε-DP per record. A tree is fitted once: a second fit would
spend the budget again, so the run has exactly one round. Needs public
feature ranges (the trees' bounds); counts are public (replace-one).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedray.privacy.ledger import Release, Releases, pure_dp_event
from fedray.privacy.mechanisms.base import InsertionPoint, PureMechanism, register
from fedray.privacy.mechanisms.releases import common_outputs


@register
@dataclass(frozen=True)
class DpTree(PureMechanism):
    name = "dp_tree"
    families = ("tree",)
    unit = "record"
    neighbouring = "replace-one"
    trust = "nobody: each hospital releases epsilon-DP trees"
    description = ("epsilon-DP per training record in each hospital's release: diffprivlib's DP trees, fitted "
                   "once (delta = 0)")

    @property
    def tree_epsilon(self) -> float:
        return self.epsilon

    def insertion_point(self):
        return InsertionPoint(None, note="a tree model has no gradients and no parameter updates to insert into")

    def hospital_releases(self, hospital):
        return Releases(f"hospital {hospital}'s message", (
            Release("trees", ("params",), "accounted", "diffprivlib's epsilon-DP trees", party=f"hospital {hospital}",
                    unit="record", event=pure_dp_event(self.epsilon)),
            Release("spent", ("metrics.dp_epsilon_spent", "num_samples"), "public",
                    "the budget diffprivlib charged (the target) and the public record count",
                    party=f"hospital {hospital}"), *self.hospital_operations(hospital)))

    def output_releases(self):
        return Releases("run output", common_outputs(counts_public=True, clients_public=True,
                                                       cross_validated=self.cross_validated))

    def events(self, hospital_states):
        spent = [float(s.get("dp_epsilon_spent", self.epsilon)) for s in hospital_states] or [self.epsilon]
        return {f"hospital {k}": [pure_dp_event(e)] for k, e in enumerate(spent)}
