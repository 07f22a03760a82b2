r"""``privacy=laplace_input``: ε-local-DP per record, at its hospital, before any training.

Each training row's d features are clipped to their public ranges and get
Laplace noise of scale :math:`d\,w_j/\varepsilon_f` (feature j of width
:math:`w_j`), each an ε_f/d-DP release (``LaplaceDpEvent(d/ε_f)`` in units of
its sensitivity :math:`w_j`); the label goes through k-ary randomised response
at ε_l (``RandomizedResponseDpEvent(p = k/(e^{ε_l}+k-1), k)``), with
ε = ε_f + ε_l split by ``privacy.label_share``
(:mod:`fedray.privacy.laplace`, :mod:`fedray.privacy.randomized_response`).
Pure DP (δ = 0) composes by addition (:func:`fedray.privacy.ledger.pure_epsilon`).

Neighbouring: replace-one (any record's values by any others), the natural
relation for local DP; record counts are then public. Everything trained on
the privatised rows is post-processing. Needs public feature ranges: ranges
read from the data would be single patients' values (refused before Ray).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedray.privacy.ledger import Release, Releases
from fedray.privacy.mechanisms.base import InsertionPoint, PureMechanism, register
from fedray.privacy.mechanisms.releases import common_outputs


@register
@dataclass(frozen=True)
class LaplaceInput(PureMechanism):
    name = "laplace_input"
    families = ("table", "tree")
    unit = "record (local DP)"
    neighbouring = "replace-one"
    trust = "nobody: rows and labels are privatised at the hospital before training"
    description = ("epsilon-local-DP per training record, label included: Laplace input perturbation of the "
                   "features and randomised response of the label at its hospital (delta = 0)")

    label_share: float = 0.1
    num_features: int = 1
    num_classes: int = 2

    @classmethod
    def resolve(cls, cfg, context):
        return cls(**{**cls.common(cfg, context), "delta": 0.0, "accountant": "pure"},
                   label_share=cfg.privacy.label_share, num_features=context.num_features or 1,
                   num_classes=context.num_classes or 2)

    def prepare_records(self, inputs, labels, *, num_classes, input_map, noise):
        from fedray.privacy.laplace import perturb_hospital_rows

        return perturb_hospital_rows(inputs, labels, epsilon=self.epsilon, label_share=self.label_share,
                                     num_classes=num_classes, input_map=input_map, noise=noise)

    def insertion_point(self):
        return InsertionPoint(None, note=f"privacy={self.mechanism} privatises records before training, not "
                                         "gradients: an inserted gradient would bypass the mechanism (audit it with "
                                         "inserted records)")

    def record_events(self) -> list:
        import dp_accounting

        from fedray.privacy.randomized_response import split_epsilon

        features, label = split_epsilon(self.epsilon, self.label_share)
        d, k = self.num_features, self.num_classes
        p = k / (math.exp(label) + k - 1)
        return [dp_accounting.SelfComposedDpEvent(dp_accounting.LaplaceDpEvent(d / features), d),
                dp_accounting.RandomizedResponseDpEvent(p, k)]

    def hospital_releases(self, hospital):
        return Releases(f"hospital {hospital}'s message", (
            Release("model", ("params", "masked_payload"), "accounted", "trained on its locally privatised rows only",
                    party=f"hospital {hospital}", unit="record",
                    event=_composed(self.record_events())),
            Release("slot count", ("num_samples",), "public",
                    "replace-one neighbouring: the slot count is public (its step count, which follows the actual "
                    "count, is not sent)", party=f"hospital {hospital}"), *self.hospital_operations(hospital)))

    def output_releases(self):
        return Releases("run output", common_outputs(counts_public=True, clients_public=True,
                                                       cross_validated=self.cross_validated))

    def events(self, hospital_states):
        return {"each record": self.record_events()}


def _composed(events):
    import dp_accounting

    return dp_accounting.ComposedDpEvent(events)
