r"""``privacy=dpfedavg``: client-level DP-FedAvg (McMahan et al. 2018), central or distributed.

Unit: a whole hospital. Neighbouring: zero-out at hospital level (one
hospital replaced by a null hospital that sends a zero update); the number of
hospitals K is public, each hospital's records and record count are not.
Each round every participating hospital's update is clipped to L2 norm S and
:math:`\mathcal N(0, z^2S^2 I)` is added to their sum, which is divided by the
expected count m (:mod:`fedray.privacy.client_level`). With each hospital
taking part independently with probability q = m/K (Poisson, the driver's
secret draw), each hospital's events are

``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), rounds)``

(``GaussianDpEvent`` without sampling at q = 1), composed in dp-accounting.

Who must be trusted, and what may be published:

- central (``fl.secure_aggregation=false``): the driver sees un-noised
  updates and adds the noise; the guarantee is against readers of the outputs.
  Amplification by sampling needs the sample S_t kept secret: under q < 1
  nothing published names a round's participants (no per-hospital rows in
  ``rounds.parquet``), and no hospital's record count or step count leaves it.
- distributed (``fl.secure_aggregation=true``): each hospital adds a share of
  the noise before masking. Against the driver colluding with up to t
  hospitals (``privacy.colluders``, Kairouz et al. 2021, "The Distributed
  Discrete Gaussian Mechanism"), the honest shares alone must carry the noise.
  Without sampling the K - t honest shares carry :math:`z^2S^2`: each share has
  variance :math:`z^2S^2/(K-t)`, so the sum carries :math:`z^2S^2 K/(K-t)`,
  more noise than central DP, the price of trusting nobody. With client
  sampling the shares are split among each round's cohort, and the driver tops
  the sum up so that it carries :math:`z^2S^2` for every cohort
  (:mod:`fedray.privacy.secure_round`): readers of the outputs, who never learn
  a cohort, get the amplified ε at z; the driver relays the cohort's keys and so
  knows it, and with t colluders the honest shares carry
  :math:`z_h = z/\sqrt{t+1}`: against it ``epsilon_against_driver`` counts every
  round as a plain Gaussian at :math:`z_h`.

The ledger's rows state each hospital's q, z, rounds and ε, never its record
count: at hospital level the count is the hospital's own data, which no
release makes public (:mod:`fedray.privacy.ledger`).

Refused: other modes than federated, one hospital, and private colour
whitening (its statistics are protected per image, which says nothing about
a whole hospital: ``data.whitening=none``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedray.errors import FedrayError
from fedray.privacy.accounting import validate_privacy_params
from fedray.privacy.ledger import Release, Releases, calibrate_noise, compose_epsilon
from fedray.privacy.mechanisms.base import InsertionPoint, PrivateMechanism, register
from fedray.privacy.mechanisms.releases import common_outputs


def round_event(noise_multiplier: float, sample_rate: float, rounds: int):
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    step = gaussian if sample_rate >= 1 else dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(step, rounds)


@register
@dataclass(frozen=True)
class DpFedAvg(PrivateMechanism):
    name = "dpfedavg"
    families = ("image", "table")
    unit = "hospital"

    clip_norm: float = 1.0
    noise_multiplier: float = 0.0
    rounds: int = 1
    colluders: int = 0

    @classmethod
    def refuse(cls, cfg, context=None):
        if cfg.mode != "federated":
            raise FedrayError(f"privacy=dpfedavg with mode={cfg.mode}: client-level DP is applied by the driver's "
                              "aggregation, which this mode never runs, so no guarantee would hold; use "
                              "mode=federated, or privacy=dpsgd for record-level DP in every mode")
        if cfg.fl.num_hospitals < 2:
            raise FedrayError("privacy=dpfedavg needs fl.num_hospitals >= 2: it hides whether one hospital took part")
        whitening = getattr(cfg.data, "whitening", "none")
        if whitening in ("zca", "pca"):
            raise FedrayError(f"privacy=dpfedavg with data.whitening={whitening}: the colour statistics would be "
                              "protected per image, not per hospital, so the hospital-level epsilon would be false; "
                              "use data.whitening=none (or auto), or privacy=dpsgd for record-level DP")
        from fedray.strategies.base import strategy_class

        if not strategy_class(cfg.strategy.name).aggregates_by_sum:
            raise FedrayError(f"privacy=dpfedavg with strategy={cfg.strategy.name}: DP-FedAvg's noise is calibrated for a "
                              "mean of clipped updates, which this strategy does not compute; use a mean strategy "
                              "(strategy=fedavg, fedavgm, fedadam, ...)")
        colluders = cfg.privacy.colluders
        if cfg.fl.secure_aggregation and colluders >= cfg.fl.num_hospitals:
            raise FedrayError(f"privacy.colluders={colluders} with {cfg.fl.num_hospitals} hospitals: distributed DP "
                              "needs at least one honest hospital's noise share; set privacy.colluders below "
                              f"{cfg.fl.num_hospitals}")

    @classmethod
    def resolve(cls, cfg, context):
        privacy, hospitals = cfg.privacy, len(context.slot_counts)
        if context.preprocessing:
            raise FedrayError("privacy=dpfedavg cannot charge per-record preprocessing statistics to a hospital-level "
                              "budget: use data.whitening=none")
        per_round = cfg.fl.clients_per_round or hospitals
        validate_privacy_params(epsilon=privacy.epsilon, delta=privacy.delta, max_grad_norm=privacy.clip_norm,
                                num_records=hospitals, units="hospitals (the unit of client-level DP)")
        q, rounds = per_round / hospitals, cfg.fl.rounds
        z = calibrate_noise(lambda s: compose_epsilon([round_event(s, q, rounds)], delta=privacy.delta),
                            target=privacy.epsilon)
        return cls(**cls.common(cfg, context), clip_norm=privacy.clip_norm, noise_multiplier=z, rounds=rounds,
                   colluders=privacy.colluders if cfg.fl.secure_aggregation else 0)

    @property
    def expected_clients(self) -> int:
        return self.clients_per_round or self.num_hospitals

    @property
    def honest_noise_multiplier(self) -> float:
        """z_h, what the honest shares carry against the driver and its colluders: z, or z/sqrt(t+1) when sampled
        cohorts are topped up to z by the driver (:mod:`fedray.privacy.secure_round`)."""
        return self.noise_multiplier / math.sqrt(self.colluders + 1) if self.sampled else self.noise_multiplier

    @property
    def sample_rate(self) -> float:
        return self.expected_clients / self.num_hospitals

    # -- hooks ---------------------------------------------------------------------------------------
    def declared_count(self, hospital, actual):
        return None  # a hospital's record count is its own data at hospital level: never sent

    def wrap_strategy(self, strategy, *, noise, insertions=()):
        from fedray.strategies.dp_fedavg import DPFedAvg  # pulls in the accountant: only when asked for

        return DPFedAvg(clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier, noise=noise,
                        expected_clients=self.expected_clients, server=strategy, insertions=insertions)

    def secure_round(self, global_params, *, weighted, max_abs, max_samples):
        from fedray.privacy.secure_round import SecureRound

        return SecureRound.for_dp_fedavg(global_params, clip_norm=self.clip_norm,
                                         noise_multiplier=self.honest_noise_multiplier,
                                         num_clients=self.expected_clients, colluders=self.colluders,
                                         sampled=self.sampled)

    def insertion_point(self):
        if self.secure_aggregation:
            return InsertionPoint(None, note="nothing is inserted under fl.secure_aggregation: the masked sum has "
                                             "no slot for a client outside the key agreement")
        return InsertionPoint("client_update", norm=self.clip_norm, sample_rate=self.sample_rate)

    # -- releases and events ---------------------------------------------------------------------------------
    def hospital_releases(self, hospital):
        event = round_event(self.noise_multiplier, self.sample_rate, self.rounds)
        where = "its noised, masked share of the sum" if self.secure_aggregation else \
            "its clipped update, to the trusted driver, which publishes only the noised mean"
        return Releases(f"hospital {hospital}'s message", (
            Release("update", ("params", "masked_payload"), "accounted", where, party=f"hospital {hospital}",
                    unit="hospital", event=event), *self.hospital_operations(hospital)))

    def output_releases(self):
        return Releases("run output", common_outputs(counts_public=False, clients_public=not self.sampled,
                                                       cross_validated=self.cross_validated))

    def events(self, hospital_states):
        return {"each hospital": [round_event(self.noise_multiplier, self.sample_rate, self.rounds)]}

    def trust_line(self):
        if self.secure_aggregation and self.sampled:
            return ("nobody: distributed DP over each round's sampled cohort; the epsilon holds against readers of "
                    "the outputs, who never learn a cohort; the driver relays the cohort's keys (and each hospital "
                    "of a cohort receives them), so against it, colluding with up to "
                    f"{self.colluders} hospital(s), sampling amplifies nothing and the honest shares carry "
                    f"z/sqrt({self.colluders + 1}): epsilon_against_driver")
        if self.secure_aggregation:
            return (f"nobody: distributed DP; the epsilon holds against the driver colluding with up to "
                    f"{self.colluders} hospital(s), whose noise shares it would know")
        return "the driver: it sees each hospital's un-noised update and adds the noise (central DP)"

    def hospital_schedule(self, hospital, state):
        """Every hospital's: taking part with probability q each round, noise multiplier z, every round accounted."""
        return {"sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier, "rounds": self.rounds}

    def details(self, hospital_states, epsilons):
        # The driver (and a cohort's hospitals) know each cohort: against it a hospital's rounds are plain Gaussian
        # releases, at most R.
        driver = {"epsilon_against_driver": self.compose([round_event(self.honest_noise_multiplier, 1.0,
                                                                       self.rounds)]),
                  "honest_noise_multiplier": self.honest_noise_multiplier} \
            if self.secure_aggregation and self.sampled else {}
        return {**driver, "clip_norm": self.clip_norm, "max_noise_multiplier": self.noise_multiplier,
                "clients_per_round": self.expected_clients, "colluders": self.colluders, "preprocessing": [],
                "note": (f"client-level DP: protects whether a whole hospital took part, not individual patients; "
                         f"with {self.num_hospitals} hospitals each taking part with probability "
                         f"q = {self.sample_rate:.3g} every round")}
