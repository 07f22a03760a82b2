r"""The privacy cost of the sweep's choice: the ε of publishing the best of K trials (pure, no Ray).

A sweep trains K models on the same private training records and publishes the best on validation
(``report.md``'s "best configuration per target ε", ``tables.md``'s rows, the frontier's ``selected``
rows). That choice is a function of all K runs; this module computes what it costs, from what every
mechanism declares (its ledger's and its plan's RDP curve, :mod:`fedray.privacy.mechanisms.base`), never
from which mechanism ran. The frontier reports it in its ``selection_*`` columns beside each chosen row.

Notation. Trial :math:`i` is a mechanism :math:`M_i` on the training records :math:`D`. Its ledger says it
is :math:`(\varepsilon_i, \delta_i)`-DP per unit and gives its RDP curve :math:`\rho_i(\alpha)` at the
orders ``fedray.privacy.accounting.RDP_ORDERS`` (``rdp``): dp-accounting's RDP of each unit's events, the
maximum over units. Units are disjoint (a record lies in one hospital), so :math:`\rho_i` bounds every unit
whichever holds it, also when trials deal the records differently. A pure ε-DP mechanism gives ε at every
order (ε-DP is (α, ε)-RDP: valid, loose). A validation score is post-processing of the model (validation
records are not training records), so trial i's output :math:`(\theta_i, s_i)` is covered by its ledger.

Grid composition (``tune.selection=null``: grid, random or adaptive search). Publishing
:math:`\theta_{i^*}`, :math:`i^* = \arg\max_i s_i`, is post-processing of the K outputs, so their adaptive
composition covers it (also when each configuration depended on earlier results: optuna, a scheduler):

* basic composition (Dwork et al. 2006; adaptive: Dwork, Rothblum & Vadhan 2010):
  :math:`(\sum_i \varepsilon_i, \sum_i \delta_i)`, whatever the mechanisms;
* RDP composition, when all K ledgers give a curve: RDP adds up under adaptive composition (Mironov 2017,
  Prop. 1), so the K trials are :math:`(\alpha, \sum_i \rho_i(\alpha))`-RDP, converted **once** to ε at
  :math:`\delta = \sum_i \delta_i` (dp-accounting's ``compute_epsilon``); "one mechanism ×K" when the K
  curves are equal.

The smaller ε of the two at that δ is reported (both hold; at :math:`\sum_i \delta_i = 0`, pure DP, basic
composition is exact and alone). A non-private trial among the K makes it ∞; a missing ε or δ unknown
(null, never guessed); a missing curve (``dp_rdp`` null, an old Parquet) leaves basic composition alone. A
trial with k > 1 cross-validation folds averages k fold models, each record training k − 1 of them: it
counts :math:`(k-1)(\varepsilon_i, \delta_i)`, with no RDP path (its curve is one fold's). K = 1 compares
nothing ("single trial"). Which K: under grid or random search the trials sharing the chosen row's target ε
(``selection_scope = target_epsilon``); under adaptive search every completed trial (``sweep``). Trials
compared are the completed ones with a score. Trials of different units compose for the finer unit (a
hospital-level guarantee covers each of its records). Assumed, not checked: the trials compared share one
neighbouring relation (their ledgers' ``neighbouring``; zero-out and replace-one figures differ).

Private selection (``tune.selection=poisson | negative_binomial``): Papernot & Steinke 2022,
"Hyperparameter Tuning with Renyi Differential Privacy" (ICLR; arXiv:2110.03620). Draw
:math:`K \sim \mathcal D_\mu`, run K trials on configurations drawn uniformly from the space, release only
the best (K = 0 releases nothing). If one trial :math:`Q` is :math:`(\lambda, \rho(\lambda))`-RDP:

* Poisson(μ) (their Thm. 6): :math:`(\lambda, \rho(\lambda) + \mu\hat\delta + \log\mu/(\lambda-1))`-RDP,
  :math:`\hat\delta` the δ of :math:`Q` at :math:`\hat\varepsilon = \log(1 + 1/(\lambda - 1))`;
* truncated negative binomial, shape :math:`\eta \ge 0` (0 logarithmic, 1 geometric), mean μ (Thm. 2):
  :math:`(\lambda, \rho(\lambda) + (1+\eta)(1 - 1/\hat\lambda)\rho(\hat\lambda) + (1+\eta)\log(1/\gamma)/
  \hat\lambda + \log\mu/(\lambda-1))`-RDP for all :math:`\lambda, \hat\lambda > 1`.

dp-accounting's ``RdpAccountant`` composes ``RepeatAndSelectDpEvent(event, mean, shape)`` (shape ∞:
Poisson) by applying ``_compute_rdp_repeat_and_select`` to the inner event's curve; fedray applies that
function to the bound ρ below and converts once at the trials' δ (the largest of their plans'). The bound:
:math:`Q` is a mixture over the configuration drawn, and Rényi divergence is jointly quasi-convex (van Erven
& Harremoës 2014, Thm. 13), so :math:`\rho = \max_c \rho_c` per order bounds it, over *every*
configuration c of the space (its plan's ``plan.rdp(plan.planned_states())``, before Ray starts: one that
could have been drawn counts) and over the K ledgers' curves.

Assumptions (what a config can break is refused before Ray starts, in one line, by
:func:`fedray.sweep.runner.check_selection_settings` and :func:`fedray.sweep.runner.private_selection`):

* K stays secret and only the best trial is published. K and the configurations come from the operating
  system's entropy (``numpy.random.default_rng()`` unseeded), never the config. ``frontier.parquet``,
  ``trial_rounds.parquet`` and ``report.md`` list all K trials: the operator's record; publishing them (or K)
  voids the bound, and each row's ε and the grid composition apply.
* every trial claims DP (its plan has a curve), on a single split (``cv.folds=1``), with δ > 0 to convert
  at (a space of pure-DP plans alone, δ = 0, is refused); one target ε (run one sweep per ε); a search that
  is not adaptive (``tune.search=random``, no scheduler); secret noise (with
  ``privacy.reproducible_noise=true`` no ε is a guarantee, nor the selection's).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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
Curve = tuple[float, ...]  # RDP ε(α) at every order of orders()


def orders() -> list[float]:
    """The RDP orders: fedray's (``fedray.privacy.accounting.RDP_ORDERS``), so selections and ledgers agree."""
    from fedray.privacy.accounting import RDP_ORDERS

    return list(RDP_ORDERS)


@dataclass(frozen=True)
class Selection:
    """What a chosen row's selection cost: ε and δ over ``trials`` compared trials, by ``rule``; ``guarantee``
    False when a trial compared had none (reproducible noise), True when every one had, None otherwise."""

    epsilon: float | None
    delta: float | None
    trials: int
    rule: str
    guarantee: bool | None = None

    def columns(self) -> dict:
        return {"selection_trials": self.trials, "selection_epsilon": self.epsilon, "selection_delta": self.delta,
                "selection_rule": self.rule, "selection_dp_guarantee": self.guarantee}


@dataclass(frozen=True)
class TrialPrivacy:
    """What the grid composition needs of one trial: its ledger's ε, δ and RDP curve, folds, guarantee."""

    epsilon: float | None
    delta: float | None
    folds: int = 1
    rdp: Curve | None = None
    guarantee: bool | None = None


# -- curves: from ledgers, plans and the frontier's dp_rdp column -----------------------------------


def as_curve(values) -> Curve | None:
    """``values`` as a curve at :func:`orders`; None unless one number >= 0 (or ∞) per order."""
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) != len(orders()):
        return None
    curve = tuple(_number(v) for v in values)
    return curve if all(v is not None and v >= 0 for v in curve) else None


def ledger_curve(privacy: Mapping | None) -> Curve | None:
    """A run ledger's RDP curve (``summary["privacy"]["rdp"]``); None without one, or cross-validated
    (``cv_note``: its curve is one fold model's)."""
    return None if not privacy or privacy.get("cv_note") else as_curve(privacy.get("rdp"))


def plan_curve(plan) -> Curve | None:
    """A resolved privacy plan's RDP curve if it takes every planned step; None if it claims no DP."""
    return as_curve(plan.rdp(plan.planned_states())) if getattr(plan, "claims_dp", False) else None


def curve_json(curve: Curve | None) -> str | None:
    """The frontier's ``dp_rdp`` cell: ``{"orders": [...], "rdp": [...]}``; None without a curve."""
    return None if curve is None else json.dumps({"orders": orders(), "rdp": list(curve)})


def curve_from_json(text) -> Curve | None:
    """A ``dp_rdp`` cell's curve; None when missing, malformed or at other orders than :func:`orders`."""
    try:
        cell = json.loads(text)
        same = np.allclose(np.asarray(cell["orders"], dtype=float), orders(), rtol=1e-12, atol=0)
    except (ValueError, KeyError, TypeError):
        return None
    return as_curve(cell["rdp"]) if same else None


def max_curve(curves: Iterable[Curve]) -> Curve:
    """The per-order maximum of ``curves``: an RDP bound of any mixture of them (quasi-convexity)."""
    return tuple(float(v) for v in np.max(np.asarray(list(curves), dtype=float), axis=0))


# -- grid composition ------------------------------------------------------------------------


def grid_selection(trials: Sequence[TrialPrivacy], *, adaptive: bool = False) -> Selection:
    """The (ε, δ) of choosing among ``trials`` on the same data: the module's grid composition rule."""
    kind = "adaptive-search composition" if adaptive else "grid composition"
    guarantee, k = combined_guarantee(t.guarantee for t in trials), len(trials)
    if k == 0:
        return Selection(None, None, 0, "no trial compared", guarantee)
    epsilons, deltas = [_number(t.epsilon) for t in trials], [_number(t.delta) for t in trials]
    if any(e is None for e in epsilons):
        return Selection(None, None, k, f"{kind}: a trial's ε is missing", guarantee)
    if k == 1:
        return Selection(epsilons[0], deltas[0] if math.isfinite(epsilons[0]) else None, 1, SINGLE, guarantee)
    if any(math.isinf(e) for e in epsilons):
        return Selection(math.inf, None, k, f"{kind}: a non-private trial among them", guarantee)
    if any(d is None for d in deltas):
        return Selection(None, None, k, f"{kind}: a trial's δ is missing", guarantee)
    copies = [max(1, int(t.folds or 1) - 1) for t in trials]
    basic_eps = sum(m * e for m, e in zip(copies, epsilons))
    basic_delta = sum(m * d for m, d in zip(copies, deltas))
    curves = [t.rdp for t in trials]
    if basic_delta > 0 and all(c is not None for c in curves) and all(m == 1 for m in copies):
        rdp_eps = _epsilon(np.sum(curves, axis=0), basic_delta)
        if rdp_eps < basic_eps:
            same = f" (one mechanism ×{k})" if len(set(curves)) == 1 else ""
            return Selection(rdp_eps, basic_delta, k, f"{kind}, RDP{same}", guarantee)
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
    """A private selection's settings, its per-trial RDP bound ``curve`` (the per-order maximum of every
    configuration's :func:`plan_curve`, before Ray starts) and the trials' ``delta``."""

    distribution: str
    mean: float
    shape: float
    curve: Curve
    delta: float

    @property
    def accountant_shape(self) -> float:
        return math.inf if self.distribution == "poisson" else float(self.shape)

    @property
    def rule(self) -> str:
        if self.distribution == "poisson":
            return f"{PRIVATE_RULE} poisson(mean={self.mean:g})"
        return f"{PRIVATE_RULE} negative_binomial(mean={self.mean:g}, shape={self.shape:g})"

    def selection(self, realized: Sequence[Curve | None], trials: int, guarantee: bool | None) -> Selection:
        """The Selection of the released best trial, the K trials' ledger curves (``realized``) included."""
        if any(c is None for c in realized):
            return Selection(None, None, trials, f"{self.rule}: a trial's ledger gives no RDP curve", guarantee)
        epsilon = repeat_and_select_epsilon(max_curve([self.curve, *realized]), mean=self.mean,
                                            shape=self.accountant_shape, delta=self.delta)
        return Selection(epsilon, self.delta, trials, self.rule, guarantee)


def repeat_and_select_epsilon(curve: Sequence[float], *, mean: float, shape: float, delta: float) -> float:
    """ε at ``delta`` of repeat-and-select over a trial with RDP ``curve`` (shape ∞: Poisson): dp-accounting's
    ``_compute_rdp_repeat_and_select``, as ``RdpAccountant`` applies it to ``RepeatAndSelectDpEvent``."""
    from dp_accounting.rdp import rdp_privacy_accountant

    logging.getLogger("absl").setLevel(logging.ERROR)  # a warning per fractional order dropped: harmless
    curve = np.asarray(curve, dtype=float)
    if np.isinf(curve).all():
        return math.inf
    return _epsilon(np.asarray(rdp_privacy_accountant._compute_rdp_repeat_and_select(
        orders(), curve, float(mean), float(shape))), delta)


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

    Poisson(mean) may give 0. The truncated negative binomial (shape η > 0) and the logarithmic distribution
    (η = 0) give K >= 1, with dp-accounting's γ for that mean (the γ its accountant uses).
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


def random_points(space: dict, k: int, rng: np.random.Generator | None = None) -> list[dict]:
    """``k`` configurations drawn uniformly and independently from ``space`` (each axis a choice), from OS
    entropy (``rng`` only for tests)."""
    rng = np.random.default_rng() if rng is None else rng
    return [{axis: values[int(rng.integers(len(values)))] for axis, values in space.items()} for _ in range(k)]


# -- the chosen rows of a frontier frame -------------------------------------------------------


def with_selection(best: pd.DataFrame, completed: pd.DataFrame, *, utility: str, by: Sequence[str] = (),
                   scope: str | None = None) -> pd.DataFrame:
    """``best`` (chosen rows of ``completed``) with the selection columns of :data:`SELECTION_COLUMNS`.

    Each chosen row gets the grid composition over the trials it was compared with: the scored completed
    trials sharing its ``by`` values and target ε (scope ``target_epsilon``), or every scored completed trial
    (scope ``sweep``). A row that already holds a private selection keeps it. ``scope`` defaults to the
    frame's ``selection_scope`` (``target_epsilon`` for frontiers written before it was recorded).
    """
    scope = scope or frame_scope(completed)
    out = best.copy()
    for column, dtype in (("selection_trials", "Int64"), ("selection_epsilon", "float64"),
                          ("selection_delta", "float64"), ("selection_rule", "object"),
                          ("selection_dp_guarantee", "object")):
        if column not in out:
            out[column] = pd.Series(pd.NA if dtype == "Int64" else None, index=out.index, dtype=dtype)
    scored = completed[completed[utility].notna()]
    for index, row in best.iterrows():
        if is_private_rule(row.get("selection_rule")):
            continue
        group = scored
        if scope != "sweep":
            mask = pd.Series(True, index=scored.index)
            for key in [*by, "target_epsilon"]:
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
    """A frontier row's ledger as the grid composition reads it (no ``dp_rdp``: basic composition only)."""
    folds = _number(row.get("cv_folds"))
    guarantee = row.get("dp_guarantee")
    return TrialPrivacy(epsilon=_number(row.get("epsilon_spent")), delta=_number(row.get("delta")),
                        folds=int(folds) if folds is not None and folds >= 1 else 1,
                        rdp=curve_from_json(row.get("dp_rdp")),
                        guarantee=bool(guarantee) if isinstance(guarantee, (bool, np.bool_)) else None)


def is_private_rule(rule) -> bool:
    return isinstance(rule, str) and rule.startswith(PRIVATE_RULE)


# -- helpers -------------------------------------------------------------------------------------


def _epsilon(rdp: np.ndarray, delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    return math.inf if np.isinf(rdp).all() else float(rdp_privacy_accountant.compute_epsilon(orders(), rdp, delta)[0])


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
