r"""``privacy=distributed_dpsgd``: record-level DP-SGD over the union of the hospitals' records, the noise split among them.

Unit: one record at one hospital; neighbouring: zero-out, as ``privacy=dpsgd``
(:mod:`.dpsgd`), whose schedule this shares. What differs is where the noise
is added and how much of it each record sees. Under ``privacy=dpsgd`` every
hospital runs DP-SGD alone: a record is protected by its own hospital's noise,
and FedAvg's mean of K hospitals then carries K independent noises, each
calibrated as if that hospital were the whole dataset. Here each round is one
DP-SGD step over all the hospitals' records at once (DP-FedSGD; the
distributed DP of Kairouz et al. 2021, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", for record-level
units):

- hospital k draws a Poisson batch at :math:`q_k = B / n_k`, clips each
  record's gradient to C and adds :math:`e_k \sim \mathcal N(0, \sigma^2 C^2 / (K - t))`
  to the sum :math:`S_k` (its *share* of the noise); its one local SGD step at
  rate :math:`\eta` gives :math:`w_k = w - \eta (S_k + e_k) / B`;
- secure aggregation (``fl.secure_aggregation=true``, required) reveals only
  :math:`\frac1K \sum_k w_k = w - \eta \sum_k (S_k + e_k) / (KB)`: one step of
  DP-SGD on the union with expected batch KB (``strategy.weighting=uniform``,
  required, so that the mean divides by K; ``strategy=fedavgm`` adds server
  momentum to it);
- against the driver colluding with up to t hospitals (``privacy.colluders``),
  who know their own shares, the K - t honest shares still sum to
  :math:`\mathcal N(0, \sigma^2 C^2)`; a record of hospital k changes the sum
  by at most C, in the rounds its Poisson draw selects it. So each round is a
  Poisson-subsampled Gaussian mechanism with noise multiplier σ for every
  record, and hospital k's events are those of ``privacy=dpsgd`` with
  :math:`T = \text{rounds}` steps:
  ``SelfComposedDpEvent(PoissonSampledDpEvent(q_k, GaussianDpEvent(σ)), T)``,
  after any private statistic it released. σ is the largest that any
  hospital's calibration needs (equal for equal shards).

The price against ``privacy=dpsgd``: trust in the masking protocol (a hospital's
own update, which carries only its share of the noise, must never be seen
alone; :mod:`fedray.privacy.secure_aggregation` states its threat model) and
one step per round instead of round(1/q). The gain: the released mean carries
the noise of :math:`K/(K - t)` records' worth of calibration instead of K
independent ones, a :math:`\sqrt{K - t}`-fold smaller noise std in the mean at
equal σ (``docs/privacy.md`` measures what it buys on ISIC).

Refused, each in one line before Ray starts: without secure aggregation; more
than one local step per round (``fl.local_epochs`` > 1); client sampling (the
honest shares' variance would depend on the cohort); sample-weighted
aggregation; t ≥ K; hospitals trained together on one actor (one step a round
gains nothing from it).

Void if, besides ``privacy=dpsgd``'s conditions: the masking protocol fails
(an active driver substituting keys; :mod:`fedray.privacy.secure_aggregation`),
or more than t hospitals collude with the driver. Against a reader of the
outputs only, the noise is :math:`\sigma\sqrt{K/(K - t)}`: the stated ε
holds a fortiori.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fedray.errors import FedrayError
from fedray.privacy.ledger import Release, Releases
from fedray.privacy.mechanisms.base import register
from fedray.privacy.mechanisms.releases import noise_share_refusals
from fedray.privacy.mechanisms.dpsgd import DpSgd


@register
@dataclass(frozen=True)
class DistributedDpSgd(DpSgd):
    name = "distributed_dpsgd"
    trust = ("the masking protocol, and at most privacy.colluders hospitals colluding with the driver: each "
             "hospital adds a share of the noise that only the masked sum completes")

    colluders: int = 1

    @property
    def noise_share(self) -> float:
        """Each hospital's noise multiplier: the honest K - t shares' variances add up to σ²."""
        return max(s.noise_multiplier for s in self.hospitals) / math.sqrt(self.num_hospitals - self.colluders)

    @classmethod
    def refuse(cls, cfg, context=None):
        for broken, why, fix in (
            *noise_share_refusals(cfg, shared="update"),
            (cfg.fl.local_epochs != 1, f"fl.local_epochs={cfg.fl.local_epochs}: each round is one DP-SGD step",
             "set fl.local_epochs=1 and more fl.rounds"),
            (cfg.strategy.weighting != "uniform", f"strategy.weighting={cfg.strategy.weighting}: the mean of the "
             "hospitals' steps must divide their noised sum by K", "set strategy.weighting=uniform"),
            (cfg.fl.train_together > 1, f"fl.train_together={cfg.fl.train_together}: one step a round gains "
             "nothing from lockstep training", "set fl.train_together=1"),
        ):
            if broken:
                raise FedrayError(f"privacy=distributed_dpsgd: {why}; {fix}")

    fixed_epoch_steps = 1  # and fl.local_epochs=1 (refused otherwise): one step a round

    @classmethod
    def steps_per_round(cls, cfg, sample_rate: float) -> int:
        return cls.fixed_epoch_steps

    @classmethod
    def resolve(cls, cfg, context):
        plan = super().resolve(cfg, context)
        sigma = max(s.noise_multiplier for s in plan.hospitals)
        return replace(plan, colluders=cfg.privacy.colluders,
                       hospitals=tuple(replace(s, noise_multiplier=sigma) for s in plan.hospitals))

    def trainer(self, common: dict, hospital: int):
        from fedray.training.private import DPSGDTrainer

        schedule = self.hospitals[hospital]
        return DPSGDTrainer(**common, noise_multiplier=self.noise_share, sample_rate=schedule.sample_rate,
                            max_grad_norm=self.max_grad_norm, accountant=self.accountant,
                            grad_sample_mode=self.grad_sample_mode, num_slots=schedule.count,
                            steps_per_epoch=self.epoch_steps)

    def hospital_releases(self, hospital: int) -> Releases:
        update, *rest = super().hospital_releases(hospital).releases
        masked = replace(update, fields=("masked_payload",),
                         reason=f"one DP-SGD step's parameters with its 1/{self.num_hospitals - self.colluders} "
                                     "share of the noise variance, masked: only the sum completes the noise")
        return Releases(f"hospital {hospital}'s message", (masked, *rest))

    def trust_line(self) -> str:
        return (f"the masking protocol, and at most {self.colluders} hospital(s) colluding with the driver: each "
                f"hospital's update carries a 1/{self.num_hospitals - self.colluders} share of the noise variance, "
                f"and the honest shares complete it in the masked sum (distributed DP)")

    def hospital_schedule(self, hospital, state):
        return {**super().hospital_schedule(hospital, state), "noise_share": self.noise_share}

    def details(self, hospital_states, epsilons):
        return {**super().details(hospital_states, epsilons), "colluders": self.colluders,
                "noise_share": self.noise_share,
                "note": (f"record-level DP-SGD over all {self.num_hospitals} hospitals' records, one step a round; "
                         f"each hospital adds a share of the noise, the masked sum carries all of it")}
