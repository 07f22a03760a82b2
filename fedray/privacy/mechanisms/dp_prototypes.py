r"""``privacy=dp_prototypes``: the head on frozen features is the private prototype classifier, and nothing is trained.

Unit: one record at one hospital; neighbouring: zero-out (a hospital's slot
count is public). Before the run the hospitals make two releases, each one
sum over all of them masked under secure aggregation, each hospital adding
its share of the noise (:mod:`fedray.training.prototype_head`):

1. the sum of their records' unit frozen features (sensitivity 1) at noise
   multiplier :math:`z_c` = ``train.centre_noise_multiplier``: the centre of
   ``train.feature_norm=centre_l2``;
2. the class sums and counts of the centred unit features (sensitivity
   :math:`\sqrt{1 + \alpha^2}`, :mod:`fedray.privacy.prototypes`) at the
   noise multiplier :math:`z_p` calibrated here, the smallest for which the
   two compose to at most the target ε at δ.

Against the driver colluding with up to t hospitals (``privacy.colluders``),
who know their own shares, the K − t honest shares complete each release's
noise, so every record's events are ``GaussianDpEvent(z_c)`` and
``GaussianDpEvent(z_p)``, once per run (the trust model of
``privacy=distributed_dpsgd``). The head is then the nearest shrunk class
mean, post-processing of the two releases; the hospitals train nothing
(each round returns the model it was sent), so no other event exists. The
run is (ε, δ)-DP per record.

Why it exists: on ISIC's frozen Lite0 features with about 1,550 records,
DP-SGD at ε = 1 keeps 0.62× of the non-private head's balanced accuracy;
one release of class means spends the whole budget on the statistic the
classifier needs (``docs/privacy.md`` measures both).

Refused, each in one line before Ray starts: without secure aggregation, the
centred unit map or the prototype head; client sampling (the cohort's
shares would not complete the noise); t ≥ K. Void if, besides DP-SGD's
conditions, the masking protocol fails or more than t hospitals collude.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedray.errors import FedrayError
from fedray.privacy.accounting import run_delta, validate_privacy_params
from fedray.privacy.ledger import Release, Releases, calibrate_noise, compose_epsilon
from fedray.privacy.prototypes import PROTOTYPE_FIELD
from fedray.privacy.mechanisms.base import InsertionPoint, PrivateMechanism, register
from fedray.privacy.mechanisms.releases import common_outputs, noise_share_refusals
from fedray.privacy.mechanisms.statistics import released_statistics, statistic_event, statistic_events


def prototype_noise_multiplier(cfg, preprocessing, *, total_slots: int) -> float:
    """:math:`z_p`: the smallest noise multiplier whose release, after the statistics a hospital released before
    (the centre), composes to at most the target ε at δ; a one-line error if those alone spend it."""
    import dp_accounting

    privacy = cfg.privacy
    delta = run_delta(privacy, total_slots)
    before = statistic_events(preprocessing, 0)  # every hospital released the same statistics
    spent = compose_epsilon(before, delta=delta, accountant=privacy.accountant)
    if spent >= privacy.epsilon:
        raise FedrayError(f"privacy=dp_prototypes at epsilon={privacy.epsilon:g}: the feature centre alone spends "
                          f"{spent:.3g}; raise train.centre_noise_multiplier (now "
                          f"{cfg.train.centre_noise_multiplier:g}) or privacy.epsilon")
    return calibrate_noise(lambda z: compose_epsilon([*before, dp_accounting.GaussianDpEvent(z)], delta=delta,
                                                     accountant=privacy.accountant), target=privacy.epsilon)


@register
@dataclass(frozen=True)
class DpPrototypes(PrivateMechanism):
    name = "dp_prototypes"
    families = ("image",)
    unit = "record"
    trust = ("the masking protocol, and at most privacy.colluders hospitals colluding with the driver: each "
             "hospital adds a share of each release's noise that only the masked sum completes")
    masked_release_noise = staticmethod(prototype_noise_multiplier)
    trains = False

    colluders: int = 1

    @classmethod
    def refuse(cls, cfg, context=None):
        for broken, why, fix in (
            *noise_share_refusals(cfg, shared="sums"),
            (cfg.train.head_init != "prototypes", "the head is the prototype classifier of the released class "
             "sums", "set train.head_init=prototypes"),
        ):
            if broken:
                raise FedrayError(f"privacy=dp_prototypes: {why}; {fix}")

    @classmethod
    def resolve(cls, cfg, context):
        total = sum(context.slot_counts)
        delta = run_delta(cfg.privacy, total)
        # no clipping norm to check: both releases' sensitivities are fixed by the unit map
        validate_privacy_params(epsilon=cfg.privacy.epsilon, delta=delta, max_grad_norm=1.0, num_records=total)
        return cls(**{**cls.common(cfg, context), "delta": delta}, accountant=cfg.privacy.accountant,
                   colluders=cfg.privacy.colluders)

    def insertion_point(self):
        return InsertionPoint(None, note="the head is built from two releases of sums; no gradient or update "
                                         "carries a record")

    def hospital_releases(self, hospital: int) -> Releases:
        return Releases(f"hospital {hospital}'s message", (
            *(Release(e["statistic"], (e["field"],), "accounted",
                      f"its share of the masked sum's noise (noise multiplier {e['noise_multiplier']:.3g} once the "
                      f"honest shares add up), released once before the first round", party=f"hospital {hospital}",
                      unit="record", event=statistic_event(e))
              for e in released_statistics(self.preprocessing, hospital)),
            Release("model", ("params", "masked_payload"), "post-processing",
                    "the model it was sent, untrained", party=f"hospital {hospital}"),
            Release("slot count", ("num_samples",), "public", "zero-out neighbouring: the slot count is public",
                    party=f"hospital {hospital}"),
            Release("step counter", ("metrics.local_steps",), "public", "always 0", party=f"hospital {hospital}"),
            *self.hospital_operations(hospital)))

    def output_releases(self) -> Releases:
        return Releases("run output", common_outputs(counts_public=True, clients_public=True,
                                                       cross_validated=self.cross_validated))

    def events(self, hospital_states):
        return {f"hospital {k}": statistic_events(self.preprocessing, k) for k in range(self.num_hospitals)}

    def hospital_schedule(self, hospital, state):
        return {"releases": [{"statistic": e["statistic"], "noise_multiplier": e["noise_multiplier"],
                              "noise_share_std": e["noise_share_std"]}
                             for e in released_statistics(self.preprocessing, hospital)]}

    def trust_line(self) -> str:
        return (f"the masking protocol, and at most {self.colluders} hospital(s) colluding with the driver: each "
                f"hospital adds a 1/{self.num_hospitals - self.colluders} share of each release's noise variance")

    def details(self, hospital_states, epsilons):
        prototypes = next(e for e in released_statistics(self.preprocessing, 0) if e["field"] == PROTOTYPE_FIELD)
        return {"colluders": self.colluders, "max_noise_multiplier": prototypes["noise_multiplier"],
                "preprocessing": [{key: value for key, value in e.items() if key != "released"}
                                  for e in self.preprocessing]}
