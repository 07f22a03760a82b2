r"""``privacy=dpsgd``: record-level DP-SGD at every hospital (Abadi et al. 2016; Opacus trains, dp-accounting counts).

Unit: one record (one image or table row) at one hospital. Neighbouring:
zero-out (:mod:`fedray.privacy.ledger`): the hospital's slot count
:math:`n_k` (its records plus the record slots an audit dealt to it) is
public, and is all the schedule depends on. Hospital k trains with Poisson
sampling at :math:`q_k = B / n_k` (B = ``train.batch_size``) for

.. math:: T_k = \text{rounds} \times \text{local\_epochs} \times \mathrm{round}(1/q_k)

steps, clipping each record's gradient to C (``max_grad_norm``) and adding
:math:`\mathcal N(0, \sigma_k^2C^2)` to the sum, which is divided by the
*expected* batch size :math:`q_kn_k = B` (never the realised one). Its events:

- each private statistic it released before training (colour moments:
  ``GaussianDpEvent``), and
- ``SelfComposedDpEvent(PoissonSampledDpEvent(q_k, GaussianDpEvent(σ_k)), T_k)``,
  with the steps actually taken;
- after the last round, the summed predictions of ``train.bias_calibration_rounds``
  (:mod:`fedray.privacy.bias_calibration`: ``GaussianDpEvent(z)`` each), as many as it released;

composed in one accountant. :math:`\sigma_k` is calibrated once, before the
run, so that this composition is at most the target ε at δ. Every record is
in exactly one hospital, and other hospitals see it only through released
models (post-processing), so the run is (max_k ε_k, δ)-DP per record.

What leaves a hospital: its noised parameters, its slot count and the fixed
step counters. The ledger's row for hospital k states :math:`n_k` as its
training records plus the audit's record slots, B, :math:`q_k`,
:math:`\sigma_k`, the planned and actual :math:`T_k`, and :math:`\varepsilon_k`
(:mod:`.counts`). δ defaults to a power of ten below 1/N for the N record slots
of all hospitals (:func:`fedray.privacy.accounting.default_delta`).

Void if: one patient has several records (the bound is per record; group
privacy for m records costs about mε); sampling is not Poisson; a
cross-record layer (BatchNorm) remains.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from fedray.errors import FedrayError
from fedray.privacy.bias_calibration import CALIBRATION_FIELD, RELEASES_COUNTER, calibration_events, noise_multipliers
from fedray.privacy.accounting import run_delta, validate_privacy_params
from fedray.privacy.ledger import Release, Releases, calibrate_noise, compose_epsilon
from fedray.privacy.mechanisms.base import InsertionPoint, PrivateMechanism, register
from fedray.privacy.mechanisms.releases import common_outputs
from fedray.privacy.mechanisms.statistics import released_statistics, statistic_event, statistic_events


@dataclass(frozen=True)
class HospitalSchedule:
    """One hospital's public DP-SGD schedule."""

    count: int  # record slots n_k: records plus an audit's record slots (zero-out: public)
    sample_rate: float
    planned_steps: int
    noise_multiplier: float


def _training_event(noise_multiplier: float, sample_rate: float, steps: int):
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)


@lru_cache(maxsize=256)  # hospitals of equal size share one calibration
def calibrate_sigma(*, epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str,
                    statistics: tuple[float, ...]) -> float:
    """The smallest σ whose training event, composed with the Gaussian ``statistics`` released before, is ≤ ε."""
    import dp_accounting

    before = [dp_accounting.GaussianDpEvent(z) for z in statistics]
    return calibrate_noise(lambda s: compose_epsilon([*before, _training_event(s, sample_rate, steps)], delta=delta,
                                                     accountant=accountant), target=epsilon)


@register
@dataclass(frozen=True)
class DpSgd(PrivateMechanism):
    name = "dpsgd"
    families = ("image", "table")
    unit = "record"
    trust = "nobody for the records' DP: each hospital runs its own DP-SGD"
    per_sample_gradients = True
    calibrates_bias = True

    hospitals: tuple[HospitalSchedule, ...] = ()
    max_grad_norm: float = 1.0
    grad_sample_mode: str | None = None
    delta_note: str = ""

    @classmethod
    def resolve(cls, cfg, context):
        privacy, counts = cfg.privacy, context.slot_counts
        total, audit = sum(counts), sum(context.audit_slots)
        delta = run_delta(privacy, total)
        slots = f"N={total} record slots ({total - audit} training records + {audit} audit record slots)"
        delta_note = (f"delta given in config; the hospitals hold {slots} in all" if privacy.delta is not None else
                      f"default delta={delta:g} < 1/N={1 / total:.2g} for the {slots} of all hospitals")
        validate_privacy_params(epsilon=privacy.epsilon, delta=delta, max_grad_norm=privacy.max_grad_norm,
                                num_records=total)
        batch, schedules = cfg.train.batch_size, []
        for k, n in enumerate(counts):
            if batch >= n:
                raise FedrayError(f"train.batch_size={batch} is not below a hospital's {n} records: "
                                  "DP-SGD needs a sampling rate below 1; lower train.batch_size")
            q = batch / n
            steps = cfg.fl.rounds * cls.steps_per_round(cfg, q)
            statistics = (*(e["noise_multiplier"] for e in released_statistics(context.preprocessing, k)),
                          *noise_multipliers(cfg.train))  # released before training, and the calibration's after
            sigma = calibrate_sigma(epsilon=privacy.epsilon, delta=delta, sample_rate=q, steps=steps,
                                    accountant=privacy.accountant, statistics=statistics)
            schedules.append(HospitalSchedule(count=n, sample_rate=q, planned_steps=steps, noise_multiplier=sigma))
        return cls(**{**cls.common(cfg, context), "delta": delta}, accountant=privacy.accountant,
                   hospitals=tuple(schedules), max_grad_norm=privacy.max_grad_norm,
                   grad_sample_mode=privacy.grad_sample_mode, delta_note=delta_note)

    @classmethod
    def steps_per_round(cls, cfg, sample_rate: float) -> int:
        """A hospital's DP-SGD steps in one round: round(1/q) an epoch."""
        return cfg.fl.local_epochs * round(1 / sample_rate)

    # -- training -------------------------------------------------------------------------------------
    def prepare_model(self, model):
        from fedray.privacy.opacus_wiring import make_dp_compatible

        return make_dp_compatible(model)

    def trainer(self, common: dict, hospital: int):
        from fedray.training.private import DPSGDTrainer  # Opacus costs seconds to import; only DP runs pay it

        schedule = self.hospitals[hospital]
        return DPSGDTrainer(**common, noise_multiplier=schedule.noise_multiplier, sample_rate=schedule.sample_rate,
                            max_grad_norm=self.max_grad_norm, accountant=self.accountant,
                            grad_sample_mode=self.grad_sample_mode, num_slots=schedule.count)

    def insertion_point(self):
        return InsertionPoint("record_gradient", norm=self.max_grad_norm)

    # -- releases and events ------------------------------------------------------------------------------
    def hospital_releases(self, hospital: int) -> Releases:
        s = self.hospitals[hospital]
        return Releases(f"hospital {hospital}'s message", (
            Release("update", ("params", "masked_payload"), "accounted",
                    "DP-SGD's noised parameters (or their masked share of the sum)", party=f"hospital {hospital}",
                    unit="record", event=_training_event(s.noise_multiplier, s.sample_rate, s.planned_steps)),
            Release("slot count", ("num_samples",), "public", "zero-out neighbouring: the slot count is public",
                    party=f"hospital {hospital}"),
            Release("step counters", ("metrics.local_steps", "metrics.dp_steps"), "public",
                    "fixed before the run: round(1/q) steps an epoch", party=f"hospital {hospital}"),
            Release("audit step view", ("observations.gradient_step",), "post-processing",
                    "the auditor's statistics of the coordinates it inserted into on each noised step (every "
                    "step is charged as released), from public sigma and q and the auditor's own draws "
                    "(fedray.audit.step_view)", party=f"hospital {hospital}"),
            *(Release(entry["statistic"], (entry.get("field", "colour_moments"),), "accounted",
                      f"noised {entry['statistic']}, released once before training", party=f"hospital {hospital}",
                      unit="record", event=statistic_event(entry))
              for entry in released_statistics(self.preprocessing, hospital)),
            *([Release("bias calibration", (CALIBRATION_FIELD,), "accounted",
                       "the summed predicted class probabilities of its training records, noised, once per "
                       "calibration round after the last", party=f"hospital {hospital}", unit="record",
                       event=calibration_events(self.bias_calibration_noise_multiplier,
                                                self.bias_calibration_rounds)[0])]
              if self.bias_calibration_rounds else []),
            *self.hospital_operations(hospital),
        ))

    def output_releases(self) -> Releases:
        return Releases("run output", common_outputs(counts_public=True, clients_public=True,
                                                       cross_validated=self.cross_validated))

    def planned_states(self):
        return [{"dp_steps": s.planned_steps, RELEASES_COUNTER: self.bias_calibration_rounds} for s in self.hospitals]

    def events(self, hospital_states):
        """Per hospital: its statistics, then its steps actually taken (none when client sampling never drew it)."""
        return {f"hospital {k}": [*statistic_events(self.preprocessing, k),
                                  *([_training_event(s.noise_multiplier, s.sample_rate, steps)]
                                    if (steps := _steps(state)) else []),
                                  *calibration_events(self.bias_calibration_noise_multiplier,
                                                      int(state.get(RELEASES_COUNTER, 0)))]
                for k, (s, state) in enumerate(zip(self.hospitals, hospital_states))}

    def hospital_schedule(self, hospital, state):
        """q = expected batch / record slots, σ, the planned and actual steps, the statistics released before."""
        s = self.hospitals[hospital]
        return {"expected_batch_size": round(s.sample_rate * s.count), "sample_rate": s.sample_rate,
                "noise_multiplier": s.noise_multiplier, "planned_steps": s.planned_steps, "steps": _steps(state),
                "statistics_released": len(statistic_events(self.preprocessing, hospital)),
                "calibration_releases": int(state.get(RELEASES_COUNTER, 0))}

    def details(self, hospital_states, epsilons):
        return {"delta_note": self.delta_note, "max_grad_norm": self.max_grad_norm,
                "max_noise_multiplier": max(s.noise_multiplier for s in self.hospitals),
                "preprocessing": [{key: value for key, value in e.items() if key != "released"}  # the sums' values
                                  for e in self.preprocessing]}  # stay in the run's state, not its summary


def _steps(state: dict) -> int:
    steps = int(state.get("dp_steps", 0))
    if steps < 0:
        raise FedrayError(f"a hospital reported {steps} DP-SGD steps")
    return steps
