r"""The privacy cost of the sweep's choice: the ε of publishing the best of K trials (pure, no Ray).

A sweep trains K models on the same private training records and publishes
the one whose validation score is best (``report.md``'s "best configuration
per target ε", the rows of ``tables.md``, the frontier's ``selected`` rows).
That choice is a function of all K runs, so the published model costs more
than one trial's ε. This module computes what it costs, for the two ways a
sweep can choose, and the frontier reports it beside each chosen row
(``selection_epsilon``, ``selection_delta``, ``selection_trials``,
``selection_rule``).

Notation. Trial :math:`i` is a mechanism :math:`M_i` on the training records
:math:`D`; its ledger says it is :math:`(\varepsilon_i, \delta_i)`-DP per
record (the ε spent, max over hospitals). The validation score of a model is
post-processing of that model with respect to the training records (the
validation records are not training records), so the output of trial
:math:`i` is :math:`(\theta_i, s_i) = M_i(D)`, covered by its ledger.

Grid composition (``tune.selection=null``: grid, random or adaptive search)
----------------------------------------------------------------------------

Publishing :math:`\theta_{i^*}` with :math:`i^* = \arg\max_i s_i` is
post-processing of the K outputs :math:`(M_1(D), \dots, M_K(D))`, so it is
covered by their composition:

* Basic composition (Dwork, Kenthapadi, McSherry, Mironov & Naor 2006;
  adaptive: Dwork, Rothblum & Vadhan 2010): the K outputs are
  :math:`(\sum_i \varepsilon_i, \sum_i \delta_i)`-DP, whatever the
  mechanisms, and also when each trial's configuration was chosen after
  seeing earlier results (optuna, a scheduler).
* RDP composition, when every one of the K ledgers gives its DP-SGD
  schedule: hospital :math:`k` of trial :math:`i` runs
  :math:`\mathrm{SelfComposed}(\mathrm{PoissonSampled}(q_{ik},
  \mathrm{Gaussian}(\sigma_{ik})), T_{ik})` (after any Gaussian release of
  preprocessing statistics, composed with it), which is
  :math:`(\alpha, \rho_{ik}(\alpha))`-RDP at every order :math:`\alpha`
  (Mironov, Talwar & Zhang 2019). A record lies in one hospital, so trial
  :math:`i` is :math:`(\alpha, \rho_i(\alpha))`-RDP with
  :math:`\rho_i(\alpha) = \max_k \rho_{ik}(\alpha)` for every record,
  whichever hospital holds it (also when trials partition the records
  differently). RDP composes additively, adaptively (Mironov 2017, Prop. 1):
  the K trials are :math:`(\alpha, \sum_i \rho_i(\alpha))`-RDP, converted
  once to ε at :math:`\delta = \sum_i \delta_i` by dp-accounting's
  ``compute_epsilon``. When the K trials run one schedule this is its K-fold
  self-composition (the rule says "one mechanism ×K").

The reported :math:`(\varepsilon, \delta)` is the smaller ε of the two at
that δ (both hold). Further:

* A non-private trial (:math:`\varepsilon_i = \infty`) among the K makes the
  selection's ε infinite; a trial whose ε is missing makes it unknown (null,
  never guessed).
* A trial with k > 1 cross-validation folds scores the mean over k fold
  models, and every record trains k − 1 of them; its ledger's ε is one
  model's. It counts :math:`(k-1)(\varepsilon_i, \delta_i)` and has no RDP
  path (its ledger keeps one fold's schedule).
* K = 1 compares nothing: the selection's ε is the trial's ("single trial").
* Which K: under grid or random search the configurations were fixed
  without looking at a result, and the choice at one target ε compares only
  the trials that share that target (``selection_scope = target_epsilon``).
  Under adaptive search (``tune.search=optuna`` or a ``tune.scheduler``) every
  trial's configuration or length depended on the others' results, so every
  completed trial of the sweep counts (``selection_scope = sweep``).
  Trials compared are the completed ones with a score; a failed trial was
  never compared.

Private selection (``tune.selection=poisson | negative_binomial``)
-------------------------------------------------------------------

Papernot & Steinke 2022, "Hyperparameter Tuning with Renyi Differential
Privacy" (ICLR; arXiv:2110.03620). Draw the number of trials
:math:`K \sim \mathcal D_\mu`, run K trials, each on a configuration drawn
uniformly from the sweep's space (grid axes become choices), and release only
the best one's model and score (:math:`K = 0` releases nothing). Let one
trial :math:`Q` (draw a configuration, train) be
:math:`(\lambda, \rho(\lambda))`-RDP for all :math:`\lambda > 1`. Then:

* :math:`K \sim \mathrm{Poisson}(\mu)` (their Thm. 6): the release is
  :math:`(\lambda, \rho(\lambda) + \mu\hat\delta + \log\mu/(\lambda-1))`-RDP,
  where :math:`\hat\delta` is the δ of :math:`Q` at
  :math:`\hat\varepsilon = \log(1 + 1/(\lambda - 1))`.
* :math:`K` truncated negative binomial with shape :math:`\eta \ge 0` and
  mean :math:`\mu` (their Thm. 2; :math:`\eta = 0` logarithmic,
  :math:`\eta = 1` geometric, :math:`P(K = k) \propto \binom{k+\eta-1}{k}
  (1-\gamma)^k` on :math:`k \ge 1`): it is :math:`(\lambda, \rho(\lambda) +
  (1+\eta)(1 - 1/\hat\lambda)\rho(\hat\lambda) + (1+\eta)\log(1/\gamma)/\hat\lambda
  + \log\mu/(\lambda-1))`-RDP for all :math:`\lambda, \hat\lambda > 1`.

dp-accounting's ``RepeatAndSelectDpEvent(event, mean, shape)`` (shape ∞:
Poisson, 0: logarithmic, otherwise truncated negative binomial) is composed
by ``RdpAccountant`` with exactly these formulas, and converted to ε at the
trials' δ. That ε covers the released model, tuning included.

The bound :math:`\rho` of one trial. :math:`Q` is a mixture, over the
configuration drawn, of trials; Rényi divergence is jointly quasi-convex
(van Erven & Harremoës 2014, Thm. 13), so :math:`\rho(\lambda) = \max_{c,k}
\rho_{ck}(\lambda)` over every configuration :math:`c` of the space and every
hospital :math:`k` bounds it. fedray takes that maximum over *every*
configuration of the space (each one's planned schedule, known before Ray
starts: a configuration that could have been drawn counts, not only the K
that were) and over the schedules the K trials' ledgers report. When every
configuration deals the records to hospitals identically (same data, seed,
mode, hospitals, partition, folds and audit), a record stays at one hospital
:math:`k` in every trial, and the ε is the maximum over hospitals of the ε
computed from :math:`\rho_k(\lambda) = \max_c \rho_{ck}(\lambda)`; otherwise
the maximum over hospitals is taken first. When one schedule attains the
maximum at every order, ``RepeatAndSelectDpEvent`` wraps its event directly;
otherwise the per-order maximum goes through dp-accounting's same formula
(``_compute_rdp_repeat_and_select``, the function the accountant calls).

Assumptions and refusals. The guarantee holds only if:

* K stays secret and nothing but the best trial is published: the theorem
  covers the best output alone. K and the configurations are drawn from the
  operating system's entropy (``numpy.random.default_rng()`` without a seed),
  never from the config. ``frontier.parquet``, ``rounds.parquet`` and
  ``report.md`` list all K trials: they are the operator's record, and
  publishing them (or K) voids the bound; each row's own ε and the grid
  composition then apply.
* every trial's event is recoverable: DP-SGD at a finite ε on a single split
  (``cv.folds=1``), any preprocessing a Gaussian release with its noise
  multiplier. DP-FedAvg, the pure local-DP mechanisms, non-private trials and
  cross-validation are refused before Ray starts, in one line.
* all trials share one target ε (a private selection is per ε target): the
  space must hold a single ε; run one sweep per ε.
* the search is not adaptive: ``tune.search=random``, no scheduler.
* the trials' noise is secret: with ``privacy.reproducible_noise=true`` the
  ε is no guarantee, and neither is the selection's.

Neighbouring relation: dp-accounting's default, add or remove one record; for
the Poisson-subsampled and plain Gaussian events used here it gives the same
RDP as zero-out (replace one record by a null one).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from fedray.errors import FedrayError

DISTRIBUTIONS = ("poisson", "negative_binomial")
SCOPES = ("target_epsilon", "sweep")
PRIVATE_RULE = "Papernot-Steinke"  # every private selection's rule starts with it
SINGLE = "single trial: nothing compared"
# The columns each chosen row gets, in the frontier's order.
SELECTION_COLUMNS = ("selection_trials", "selection_epsilon", "selection_delta", "selection_rule",
                     "selection_dp_guarantee")


def orders() -> list[float]:
    """The RDP orders: fedray's (``fedray.privacy.accounting.RDP_ORDERS``), so selections and ledgers agree."""
    from fedray.privacy.accounting import RDP_ORDERS

    return list(RDP_ORDERS)


@dataclass(frozen=True)
class Schedule:
    """One hospital's per-record DP schedule in one trial.

    ``steps`` DP-SGD steps, each a Poisson sample at rate ``sample_rate`` with
    Gaussian noise of std ``noise_multiplier`` x the clipping norm, after
    Gaussian releases of preprocessing statistics (their noise multipliers,
    ``gaussians``).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    gaussians: tuple[float, ...] = ()

    def event(self):
        """The dp-accounting ``DpEvent`` of this schedule."""
        import dp_accounting

        parts = [dp_accounting.GaussianDpEvent(z) for z in self.gaussians]
        if self.steps > 0:
            if self.noise_multiplier == 0:
                return dp_accounting.NonPrivateDpEvent()
            parts.append(dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(self.sample_rate,
                                                    dp_accounting.GaussianDpEvent(self.noise_multiplier)),
                self.steps))
        if not parts:
            return dp_accounting.NoOpDpEvent()
        return parts[0] if len(parts) == 1 else dp_accounting.ComposedDpEvent(parts)

    def as_dict(self) -> dict:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate, "steps": self.steps,
                "gaussians": list(self.gaussians)}


@dataclass(frozen=True)
class Selection:
    """What a chosen row's selection cost: ε and δ over ``trials`` compared trials, by ``rule``.

    ``guarantee``: False when a trial compared had no guarantee (reproducible
    noise), True when every one had, None when some did not say.
    """

    epsilon: float | None
    delta: float | None
    trials: int
    rule: str
    guarantee: bool | None = None

    def columns(self) -> dict:
        return {"selection_trials": self.trials, "selection_epsilon": self.epsilon,
                "selection_delta": self.delta, "selection_rule": self.rule,
                "selection_dp_guarantee": self.guarantee}


@dataclass(frozen=True)
class TrialPrivacy:
    """What the grid composition needs of one trial: its ledger's ε and δ, folds, schedules, guarantee."""

    epsilon: float | None
    delta: float | None
    folds: int = 1
    schedules: tuple[Schedule, ...] | None = None
    guarantee: bool | None = None


# -- per-trial events ----------------------------------------------------------------------


def schedules_of(privacy: Mapping | None) -> tuple[Schedule, ...] | None:
    """The per-hospital schedules of a DP-SGD ledger (``summary["privacy"]``) or plan (its ``resolved_cfg``).

    None when no event is recoverable: another mechanism, a cross-validated
    ledger (it keeps one fold's schedule), a hospital entry without its noise
    multiplier, sample rate or steps, or preprocessing other than a Gaussian
    release with a noise multiplier.
    """
    if not privacy or privacy.get("mechanism", privacy.get("name")) != "dpsgd" or privacy.get("cv_note"):
        return None
    hospitals = privacy.get("hospitals") or privacy.get("entries")
    if not hospitals:
        return None
    statistics = _gaussian_releases(privacy.get("preprocessing") or ())
    if statistics is None:
        return None
    schedules = []
    for k, hospital in enumerate(hospitals):
        if not isinstance(hospital, Mapping):
            return None
        steps = hospital.get("steps", hospital.get("planned_steps"))
        schedule = _schedule(hospital.get("noise_multiplier"), hospital.get("sample_rate"), steps,
                             _statistics_of(statistics, hospital.get("hospital", k)))
        if schedule is None:
            return None
        schedules.append(schedule)
    return tuple(schedules)


def plan_schedules(plan) -> tuple[Schedule, ...] | None:
    """The planned per-hospital schedules of a resolved privacy plan, before anything runs; None if not DP-SGD.

    Reads either a plan whose ``resolved_cfg`` is a dict (``hospitals`` with
    ``noise_multiplier``, ``sample_rate``, ``steps``) or a resolved mechanism
    object with ``hospitals`` (``noise_multiplier``, ``sample_rate``,
    ``planned_steps``) and ``preprocessing``.
    """
    resolved = getattr(plan, "resolved_cfg", None)
    if isinstance(resolved, Mapping):
        return schedules_of(resolved)
    if getattr(plan, "mechanism", getattr(plan, "name", None)) != "dpsgd" or not getattr(plan, "hospitals", None):
        return None
    statistics = _gaussian_releases(getattr(plan, "preprocessing", ()) or ())
    if statistics is None:
        return None
    schedules = []
    for k, hospital in enumerate(plan.hospitals):
        schedule = _schedule(getattr(hospital, "noise_multiplier", None), getattr(hospital, "sample_rate", None),
                             getattr(hospital, "planned_steps", getattr(hospital, "steps", None)),
                             _statistics_of(statistics, k))
        if schedule is None:
            return None
        schedules.append(schedule)
    return tuple(schedules)


def plan_delta(plan) -> float | None:
    """The δ of a resolved privacy plan (either shape :func:`plan_schedules` reads)."""
    resolved = getattr(plan, "resolved_cfg", None)
    return _number(resolved.get("delta") if isinstance(resolved, Mapping) else getattr(plan, "delta", None))


def _gaussian_releases(entries) -> list[tuple[object, float]] | None:
    """(hospital or None, noise multiplier) of each preprocessing release; None if one is not Gaussian."""
    out = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            return None
        z = _number(entry.get("noise_multiplier"))
        if entry.get("mechanism") != "gaussian" or z is None or not 0 < z < math.inf:
            return None
        out.append((entry.get("hospital"), z))
    return out


def _statistics_of(statistics: list[tuple[object, float]], hospital) -> tuple[float, ...]:
    """The releases about ``hospital``'s records: its own, and every one that names no hospital (conservative)."""
    return tuple(z for owner, z in statistics if owner is None or owner == hospital)


def _schedule(noise_multiplier, sample_rate, steps, gaussians: tuple[float, ...]) -> Schedule | None:
    z, q, t = _number(noise_multiplier), _number(sample_rate), _number(steps)
    if None in (z, q, t) or not (0 <= z < math.inf and 0 < q <= 1 and 0 <= t < math.inf) or not t.is_integer():
        return None
    return Schedule(z, q, int(t), gaussians)


def schedules_json(schedules: Sequence[Schedule] | None) -> str | None:
    """The frontier's ``dp_event`` cell: one JSON object per hospital; None without a schedule."""
    return None if schedules is None else json.dumps([s.as_dict() for s in schedules])


def schedules_from_json(text) -> tuple[Schedule, ...] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return tuple(Schedule(float(s["noise_multiplier"]), float(s["sample_rate"]), int(s["steps"]),
                              tuple(float(z) for z in s.get("gaussians") or ())) for s in json.loads(text))
    except (ValueError, KeyError, TypeError):
        return None


@lru_cache(maxsize=1024)
def schedule_rdp(schedule: Schedule) -> tuple[float, ...]:
    """RDP of ``schedule``'s event at every order of :func:`orders` (dp-accounting's ``RdpAccountant``)."""
    import dp_accounting

    _quiet_absl()
    accountant = dp_accounting.rdp.RdpAccountant(orders=orders())
    accountant.compose(schedule.event())
    return tuple(float(x) for x in accountant._rdp)  # the accountant keeps its curve here; no public getter


# -- grid composition ------------------------------------------------------------------------


def grid_selection(trials: Sequence[TrialPrivacy], *, adaptive: bool = False) -> Selection:
    """The (ε, δ) of choosing among ``trials`` on the same data: the module's grid composition rule."""
    kind = "adaptive-search composition" if adaptive else "grid composition"
    guarantee = combined_guarantee(t.guarantee for t in trials)
    k = len(trials)
    if k == 0:
        return Selection(None, None, 0, "no trial compared", guarantee)
    epsilons = [_number(t.epsilon) for t in trials]
    if any(e is None for e in epsilons):
        return Selection(None, None, k, f"{kind}: a trial's ε is missing", guarantee)
    deltas = [_number(t.delta) for t in trials]
    if k == 1:
        return Selection(epsilons[0], deltas[0] if math.isfinite(epsilons[0]) else None, 1, SINGLE, guarantee)
    if any(math.isinf(e) for e in epsilons):
        return Selection(math.inf, None, k, f"{kind}: a non-private trial among them", guarantee)
    if any(d is None for d in deltas):
        return Selection(None, None, k, f"{kind}: a trial's δ is missing", guarantee)
    copies = [max(1, int(t.folds or 1) - 1) for t in trials]
    basic_eps = sum(m * e for m, e in zip(copies, epsilons))
    basic_delta = sum(m * d for m, d in zip(copies, deltas))
    schedules = [t.schedules for t in trials]
    if basic_delta > 0 and all(s for s in schedules) and all(m == 1 for m in copies):
        curve = np.sum([_max_curve(s) for s in schedules], axis=0)
        rdp_eps = _epsilon(curve, basic_delta)
        if rdp_eps < basic_eps:
            same = len({tuple(sorted(set(s), key=repr)) for s in schedules}) == 1
            return Selection(rdp_eps, basic_delta, k, f"{kind}, RDP" + (f" (one mechanism ×{k})" if same else ""),
                             guarantee)
    return Selection(basic_eps, basic_delta, k, f"{kind}, basic", guarantee)


def combined_guarantee(guarantees: Iterable[bool | None]) -> bool | None:
    """False if any is False; True if all are True; None otherwise (something did not say)."""
    values = [g if isinstance(g, (bool, np.bool_)) else None for g in guarantees]
    if any(v is not None and not v for v in values):
        return False
    return True if values and all(v is not None for v in values) else None


# -- private selection (Papernot & Steinke 2022) -----------------------------------------------


@dataclass(frozen=True)
class PrivateSelection:
    """A private selection's settings and the planned schedules of every configuration of its space.

    ``candidates``: per configuration, its per-hospital schedules (the plan
    before Ray starts). ``same_partition``: every configuration deals the
    records to hospitals identically. ``delta``: the trials' δ.
    """

    distribution: str
    mean: float
    shape: float
    candidates: tuple[tuple[Schedule, ...], ...]
    same_partition: bool
    delta: float

    @property
    def accountant_shape(self) -> float:
        return math.inf if self.distribution == "poisson" else float(self.shape)

    @property
    def rule(self) -> str:
        if self.distribution == "poisson":
            return f"{PRIVATE_RULE} poisson(mean={self.mean:g})"
        return f"{PRIVATE_RULE} negative_binomial(mean={self.mean:g}, shape={self.shape:g})"

    def selection(self, realized: Sequence[tuple[Schedule, ...] | None], trials: int,
                  guarantee: bool | None) -> Selection:
        """The Selection of the released best trial, the K trials' ledgers (``realized``) included."""
        if any(s is None for s in realized):
            return Selection(None, None, trials, f"{self.rule}: a trial's ledger gives no DP-SGD schedule",
                             guarantee)
        epsilon = private_selection_epsilon([*self.candidates, *realized], mean=self.mean,
                                            shape=self.accountant_shape, delta=self.delta,
                                            per_hospital=self.same_partition)
        return Selection(epsilon, self.delta, trials, self.rule, guarantee)


def check_distribution(distribution: str, mean: float, shape: float) -> None:
    """One line naming the bad setting and a fix."""
    if distribution not in DISTRIBUTIONS:
        raise FedrayError(f"tune.selection={distribution!r} is unknown: use one of {', '.join(DISTRIBUTIONS)} "
                          "(or null for no private selection)")
    if not (isinstance(mean, (int, float)) and math.isfinite(mean) and mean >= 1):
        raise FedrayError(f"tune.selection_mean={mean!r} must be a finite number >= 1 (the mean number of trials), "
                          "e.g. tune.selection_mean=10")
    if distribution == "negative_binomial" and not (isinstance(shape, (int, float)) and 0 <= shape < math.inf):
        raise FedrayError(f"tune.selection_shape={shape!r} must be a finite number >= 0 (0 logarithmic, "
                          "1 geometric), e.g. tune.selection_shape=1")


def draw_trial_count(distribution: str, mean: float, shape: float, rng: np.random.Generator | None = None) -> int:
    """K for a private selection, drawn from OS entropy (``rng`` only for tests of the distribution).

    Poisson(mean) may give 0. The truncated negative binomial (shape η > 0)
    and the logarithmic distribution (η = 0) give K >= 1, with dp-accounting's
    γ for that mean (the γ its accountant uses).
    """
    check_distribution(distribution, mean, shape)
    rng = np.random.default_rng() if rng is None else rng  # no seed: 128+ bits from the operating system
    if distribution == "poisson":
        return int(rng.poisson(mean))
    gamma = truncated_negative_binomial_gamma(shape, mean)
    if gamma >= 1:  # mean 1: exactly one trial
        return 1
    if shape == 0:
        return int(rng.logseries(1 - gamma))
    while True:  # rejection of 0 gives exactly the distribution conditioned on K >= 1
        k = int(rng.negative_binomial(shape, gamma))
        if k >= 1:
            return k


def truncated_negative_binomial_gamma(shape: float, mean: float) -> float:
    """γ of the truncated negative binomial with this shape and mean, as dp-accounting's accountant computes it."""
    from dp_accounting.rdp import rdp_privacy_accountant

    return float(rdp_privacy_accountant._gamma_truncated_negative_binomial(shape, mean))


def private_selection_epsilon(candidates: Sequence[Sequence[Schedule]], *, mean: float, shape: float,
                              delta: float, per_hospital: bool) -> float:
    """ε at ``delta`` of releasing the best of K ~ (mean, shape) trials, each one of ``candidates``.

    ``per_hospital``: a record stays at one hospital index in every candidate
    (the max over hospitals of each hospital's selection ε); otherwise every
    hospital's schedule bounds every record.
    """
    if not candidates:
        raise FedrayError("a private selection needs the schedule of at least one configuration")
    widths = {len(c) for c in candidates}
    if per_hospital and len(widths) == 1:
        return max(repeat_and_select_epsilon([c[k] for c in candidates], mean=mean, shape=shape, delta=delta)
                   for k in range(widths.pop()))
    return repeat_and_select_epsilon([s for c in candidates for s in c], mean=mean, shape=shape, delta=delta)


def repeat_and_select_epsilon(schedules: Iterable[Schedule], *, mean: float, shape: float, delta: float) -> float:
    """ε at ``delta`` of Papernot & Steinke's repeat-and-select over a trial bounded by every one of ``schedules``.

    One dominating schedule (its RDP at least every other's at every order):
    ``RdpAccountant`` composes ``RepeatAndSelectDpEvent(its event, mean,
    shape)``. Otherwise the per-order maximum goes through the accountant's
    formula directly.
    """
    import dp_accounting
    from dp_accounting.rdp import rdp_privacy_accountant

    _quiet_absl()
    distinct = list(dict.fromkeys(schedules))
    curves = np.array([schedule_rdp(s) for s in distinct])
    top = curves.max(axis=0)
    if np.isinf(top).all():
        return math.inf
    dominant = next((s for s, c in zip(distinct, curves) if np.all(c >= top)), None)
    if dominant is not None:
        accountant = dp_accounting.rdp.RdpAccountant(orders=orders())
        accountant.compose(dp_accounting.dp_event.RepeatAndSelectDpEvent(dominant.event(), float(mean), float(shape)))
        return float(accountant.get_epsilon(delta))
    rdp = rdp_privacy_accountant._compute_rdp_repeat_and_select(orders(), top, float(mean), float(shape))
    return _epsilon(np.asarray(rdp), delta)


# -- the sweep's settings ---------------------------------------------------------------------------


def selection_scope(tune_cfg) -> str:
    """Which trials a choice compares: those at its target ε, or (adaptive search) every trial of the sweep."""
    return "sweep" if tune_cfg.search == "optuna" or tune_cfg.scheduler is not None else "target_epsilon"


def check_selection_settings(tune_cfg, trial_cfgs: Sequence) -> None:
    """Refuse, in one line, a private selection whose ε would not hold (fedray.sweep.selection's assumptions)."""
    if not tune_cfg.selection:
        return
    name = f"tune.selection={tune_cfg.selection}"
    check_distribution(tune_cfg.selection, tune_cfg.selection_mean, tune_cfg.selection_shape)
    if tune_cfg.search != "random":
        raise FedrayError(f"{name} with tune.search={tune_cfg.search}: a private selection runs configurations "
                          "drawn uniformly from the space; set tune.search=random")
    if tune_cfg.scheduler is not None:
        raise FedrayError(f"{name} with tune.scheduler={tune_cfg.scheduler}: stopping trials on their results is "
                          "an adaptive selection the bound does not cover; set tune.scheduler=null")
    if tune_cfg.num_samples != 1:
        raise FedrayError(f"{name} with tune.num_samples={tune_cfg.num_samples}: the number of trials is drawn "
                          f"(mean tune.selection_mean={tune_cfg.selection_mean:g}); leave tune.num_samples=1")
    mechanisms = sorted({c.privacy.name for c in trial_cfgs})
    if mechanisms != ["dpsgd"]:
        raise FedrayError(f"{name} with privacy={'|'.join(mechanisms)}: only DP-SGD trials give the per-trial "
                          "dp-accounting event the selection repeats (DP-FedAvg, the pure local-DP mechanisms and "
                          "non-private runs do not); use privacy=dpsgd, or tune.selection=null to have the grid "
                          "composition reported")
    epsilons = sorted({float(c.privacy.epsilon) for c in trial_cfgs})
    if len(epsilons) != 1 or not math.isfinite(epsilons[0]):
        shown = ", ".join("inf" if math.isinf(e) else f"{e:g}" for e in epsilons)
        raise FedrayError(f"{name} needs one finite target ε (a private selection is per ε target); the space "
                          f"holds ε in {{{shown}}}: run one sweep per ε, e.g. sweep.space.epsilon=[1.0]")
    folds = sorted({c.cv.folds for c in trial_cfgs if c.cv.folds > 1})
    if folds:
        raise FedrayError(f"{name} with cv.folds={folds[0]}: a cross-validated trial scores k fold models trained "
                          "on overlapping records, which one DP-SGD event does not describe; set cv.folds=1")


def random_points(space: dict, k: int, rng: np.random.Generator | None = None) -> list[dict]:
    """``k`` configurations drawn uniformly and independently from ``space`` (each axis a choice), from OS
    entropy (``rng`` only for tests)."""
    rng = np.random.default_rng() if rng is None else rng
    return [{axis: values[int(rng.integers(len(values)))] for axis, values in space.items()} for _ in range(k)]


# -- the chosen rows of a frontier frame -------------------------------------------------------


def with_selection(best: pd.DataFrame, completed: pd.DataFrame, *, utility: str, by: Sequence[str] = (),
                   scope: str | None = None) -> pd.DataFrame:
    """``best`` (chosen rows of ``completed``) with the selection columns of :data:`SELECTION_COLUMNS`.

    Each chosen row gets the grid composition over the trials it was compared
    with: the scored completed trials sharing its ``by`` values and target ε
    (scope ``target_epsilon``), or every scored completed trial (scope
    ``sweep``). A row that already holds a private selection keeps it.
    ``scope`` defaults to the frame's ``selection_scope`` (``target_epsilon``
    for frontiers written before it was recorded).
    """
    scope = scope or frame_scope(completed)
    out = best.copy()
    for column, dtype in (("selection_trials", "Int64"), ("selection_epsilon", "float64"),
                          ("selection_delta", "float64"), ("selection_rule", "object"),
                          ("selection_dp_guarantee", "object")):
        if column not in out:
            out[column] = pd.Series(pd.NA if dtype == "Int64" else None, index=out.index, dtype=dtype)
    scored = completed[completed[utility].notna()]
    keys = [*by, "target_epsilon"]
    for index, row in best.iterrows():
        if is_private_rule(row.get("selection_rule")):
            continue
        group = scored
        if scope != "sweep":
            mask = pd.Series(True, index=scored.index)
            for key in keys:
                mask &= _same(scored[key], row[key])
            group = scored[mask]
        selection = grid_selection([trial_privacy(r) for _, r in group.iterrows()], adaptive=scope == "sweep")
        for column, value in selection.columns().items():
            out.at[index, column] = pd.NA if value is None and column == "selection_trials" else value
    return out


def frame_scope(frame: pd.DataFrame) -> str:
    scopes = frame["selection_scope"].dropna().unique() if "selection_scope" in frame else []
    return "sweep" if "sweep" in set(scopes) else "target_epsilon"


def trial_privacy(row: pd.Series) -> TrialPrivacy:
    """A frontier row's ledger as the grid composition reads it."""
    folds = _number(row.get("cv_folds"))
    return TrialPrivacy(epsilon=_number(row.get("epsilon_spent")), delta=_number(row.get("delta")),
                        folds=int(folds) if folds is not None and folds >= 1 else 1,
                        schedules=schedules_from_json(row.get("dp_event")), guarantee=_bool(row.get("dp_guarantee")))


def is_private_rule(rule) -> bool:
    return isinstance(rule, str) and rule.startswith(PRIVATE_RULE)


# -- helpers -------------------------------------------------------------------------------------


def _max_curve(schedules: Sequence[Schedule]) -> np.ndarray:
    return np.max([schedule_rdp(s) for s in schedules], axis=0)


def _epsilon(rdp: np.ndarray, delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    if np.isinf(rdp).all():
        return math.inf
    epsilon, _ = rdp_privacy_accountant.compute_epsilon(orders(), rdp, delta)
    return float(epsilon)


def _same(column: pd.Series, value) -> pd.Series:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return column.isna()
    return (column == value).fillna(False).astype(bool)


def _number(value) -> float | None:
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _bool(value) -> bool | None:
    return bool(value) if isinstance(value, (bool, np.bool_)) else None


def _quiet_absl() -> None:
    # dp-accounting warns for every fractional order whose series it drops (harmless), dozens per curve.
    logging.getLogger("absl").setLevel(logging.ERROR)
