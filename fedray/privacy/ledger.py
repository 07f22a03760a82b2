r"""Declared releases, and the one place their privacy loss is composed (dp-accounting).

Everything that leaves a hospital or the run is a :class:`Release`, declared
once by the run's mechanism (:mod:`fedray.privacy.mechanisms`). A release
names the fields it carries (dotted names, ``*`` wildcards: ``metrics.local_steps``,
``summary.final_test.*``, ``rounds.clients``), who releases it, and what kind
of release it is:

- ``accounted``: computed from private records through a DP mechanism; it
  carries its dp-accounting ``DpEvent`` and its privacy unit, and its loss is
  composed into the run's ε.
- ``public``: fixed before any private record is read (the config, the
  declared schedule), or public under the run's adjacency; with the reason.
- ``post-processing``: a function of accounted releases and public data only
  (the global model's metrics on the held-out sets): free by the
  post-processing theorem.
- ``outside``: computed from private records and *not* covered by the
  guarantee (the audit's statistics on real training records, the
  cross-validation metrics of test folds that train the other folds). Such a
  release is allowed only as an audit or evaluation statistic and is labelled
  as outside the guarantee wherever it is published.

:class:`Releases` is the allowlist every boundary checks: the hospitals'
messages (:mod:`fedray.federation.proxy`), the run directory
(:mod:`fedray.results.run_dir`) and the sweep's frontier. A field no
declared release covers is refused at run time (:class:`UndeclaredRelease`),
so a combination of features nobody wrote a rule for fails loudly instead of
keeping a claim it no longer earns.

Composition. The events of one privacy unit (one record at hospital k; one
hospital under client-level DP) are composed by dp-accounting, adaptively and
in any order:

- ``accountant="rdp"``: Rényi DP (Mironov 2017; the Poisson-subsampled
  Gaussian of Mironov, Talwar & Zhang 2019), converted to (ε, δ) once at the
  end with Canonne, Kamath & Steinke's conversion, as dp-accounting does;
- ``accountant="prv"``: privacy-loss distributions (Koskela et al. 2020,
  dp-accounting's PLD accountant; numerically tighter);

and the other one is computed beside it as a cross-check. Because the
conversion to (ε, δ) happens once, a Gaussian release of colour statistics
and DP-SGD share one δ and compose at the RDP level, which is tighter than
adding their (ε, δ) pairs.

Adjacency (``NEIGHBOURING``): dp-accounting's name for the neighbouring
relation an event is analysed under. fedray's record-level mechanisms use
*zero-out* (dp-accounting's ``REPLACE_SPECIAL``): two datasets are
neighbours when one record is replaced by a null record that contributes
nothing. Under it the number of records (slots) is the same for neighbours,
so the per-hospital counts n_k that fix the DP-SGD schedule are public, while
each record's content and presence-versus-null are protected; for a
Poisson-sampled Gaussian it gives exactly the add/remove figures
(Ponomareva et al. 2023, "How to DP-fy ML", §3.1).

Record counts, read as a DP auditor reads them. A count is private unless
the adjacency or a declared release makes it public, and the ledger, itself
a public release, states a hospital's counts only where a public output
release covers them (:mod:`fedray.privacy.mechanisms.counts`):

- Record level (``dpsgd`` under zero-out; ``laplace_input`` and ``dp_tree``
  under replace-one): a neighbouring dataset nulls or replaces one record
  *in its slot*, so each hospital's slot count :math:`n_k` is the same for
  neighbours, public by the relation's definition, and DP-SGD could not hide
  it anyway (:math:`q_k = B/n_k` is in every event it publishes). The slots
  are the data's training records, dealt to the hospitals by the partition
  (:mod:`fedray.data.partition`; in a real federation, the hospitals' own
  sizes), plus the record slots an audit dealt by its public round-robin
  rule before its secret draw of which to fill. Both parts are public; the
  draw is not, and the ledger never says how many audit slots were filled.
  What the guarantee then covers: each record's content and its presence
  against a null record, not how many records a hospital holds. The
  partition's class-wise schemes (``equal_per_class``, ``dirichlet``) make
  :math:`n_k` a function of the class counts, which the relation makes
  public too. Where a hospital's size is itself sensitive, add/remove
  adjacency with a noised count is needed, which fedray does not offer.
- Hospital level (``dpfedavg``): the unit is a whole hospital, and its
  record count is part of its data. No release covers it: no hospital sends
  it, the summary withholds ``data.hospital_train_sizes``, and the ledger
  withholds :math:`n_k` and says why. Only the number of hospitals K is
  public, and it is the N of δ < 1/N there.

Calibration (:func:`calibrate_noise`) finds the smallest noise multiplier σ
whose composed ε meets the target. ε falls with σ and, once the noise
dominates, roughly as a power of it, so ε is close to linear in log σ
there: Brent's method on log σ (SciPy) needs 8 or 9 compositions where
bisection on σ needed 16 to 25 (``benchmarks/calibration.py``). Compositions of equal events are computed
once per process (:func:`compose_epsilon` is memoised: DpEvents are
immutable, and hospitals of equal size share one schedule).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedray.errors import FedrayError
from fedray.privacy.accounting import ACCOUNTANTS

KINDS = ("accounted", "public", "post-processing", "outside")
NEIGHBOURING = {"zero-out": "REPLACE_SPECIAL", "add/remove": "ADD_OR_REMOVE_ONE", "replace-one": "REPLACE_ONE"}


class UndeclaredRelease(FedrayError):
    """A field was about to cross a boundary that no declared release of the run's mechanism covers."""


@dataclass(frozen=True)
class Release:
    """One declared release: the fields it carries, its kind, who releases it, and its DP event if accounted."""

    name: str
    fields: tuple[str, ...]
    kind: str
    reason: str
    party: str = "run"
    unit: str | None = None
    event: Any = field(default=None, compare=False)  # a dp_accounting.DpEvent, for kind "accounted"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"release {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "accounted" and self.event is None:
            raise ValueError(f"release {self.name!r} is accounted but carries no DpEvent")

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.fields)

    def as_dict(self) -> dict:
        out = {"name": self.name, "fields": list(self.fields), "kind": self.kind, "party": self.party,
               "reason": self.reason}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.event is not None:
            out["event"] = describe_event(self.event)
        return out


@dataclass(frozen=True)
class Releases:
    """The allowlist of one boundary: every field crossing it must be covered by one of these releases."""

    where: str
    releases: tuple[Release, ...]
    claim: bool = True  # False: the run makes no DP claim, and everything may cross

    def covering(self, name: str) -> Release | None:
        return next((r for r in self.releases if r.covers(name)), None)

    def covers(self, name: str) -> bool:
        return not self.claim or self.covering(name) is not None

    def check(self, names: Iterable[str], *, mechanism: str) -> None:
        """Raise :class:`UndeclaredRelease` for the first name that no release covers."""
        if not self.claim:
            return
        for name in names:
            if self.covering(name) is None:
                raise UndeclaredRelease(
                    f"{self.where}: {name!r} is not covered by any release declared under privacy={mechanism}, "
                    "so it cannot leave without voiding the reported epsilon; declare it in the mechanism's "
                    "releases (fedray/privacy/mechanisms/) or run without a DP claim")

    def outside(self) -> list[str]:
        return [r.name for r in self.releases if r.kind == "outside"]


def field_names(value: Mapping, prefix: str = "") -> list[str]:
    """The dotted names of a nested dict's leaves (lists are leaves): what a boundary checks."""
    names = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            names.extend(field_names(item, f"{name}."))
        else:
            names.append(name)
    return names


# -- composition --------------------------------------------------------------------


def pure_dp_event(epsilon: float):
    """An opaque ε-DP release (δ = 0) whose only known property is its ε: dp-accounting's
    ``UnsupportedDpEvent`` would refuse to compose, so fedray declares it with its ε (:class:`PureDpEvent`)."""
    return _pure_event_class()(epsilon=float(epsilon))


def _pure_event_class():
    global _PURE
    if _PURE is None:
        import attr
        import dp_accounting

        @attr.s(frozen=True, slots=True, auto_attribs=True)
        class PureDpEvent(dp_accounting.DpEvent):
            """An ε-DP release described by its ε alone (diffprivlib's accountant charged it)."""

            epsilon: float

        _PURE = PureDpEvent
    return _PURE


_PURE = None


def _quiet_absl() -> None:
    # dp-accounting logs a warning for every fractional RDP order whose series it drops (harmless: the
    # order is excluded from the minimum), dozens per calibration.
    logging.getLogger("absl").setLevel(logging.ERROR)


def _relation(neighbouring: str):
    import dp_accounting

    if neighbouring not in NEIGHBOURING:
        raise FedrayError(f"neighbouring relation {neighbouring!r} is unknown: use one of {list(NEIGHBOURING)}")
    return getattr(dp_accounting.NeighboringRelation, NEIGHBOURING[neighbouring])


def compose_epsilon(events: Iterable, *, delta: float, accountant: str = "rdp",
                    neighbouring: str = "zero-out") -> float:
    r"""ε at ``delta`` of the adaptive composition of ``events`` (dp-accounting ``DpEvent``\ s) for one unit.

    No events (nothing released) is 0; a ``NonPrivateDpEvent`` makes it ∞.
    """
    events = tuple(events)
    try:
        hash(events)
    except TypeError:  # an event holding a list (a ComposedDpEvent): composed without the memo
        return _composed_epsilon.__wrapped__(events, delta, accountant, neighbouring)
    return _composed_epsilon(events, delta, accountant, neighbouring)


@functools.lru_cache(maxsize=4096)
def _composed_epsilon(events: tuple, delta: float, accountant: str, neighbouring: str) -> float:
    import dp_accounting

    from fedray.privacy.accounting import RDP_ORDERS

    _quiet_absl()
    if not events:
        return 0.0
    if any(isinstance(e, dp_accounting.NonPrivateDpEvent) for e in events):
        return math.inf
    composed = dp_accounting.ComposedDpEvent(list(events))
    if accountant == "rdp":
        acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS, neighboring_relation=_relation(neighbouring))
    elif accountant == "prv":
        acc = dp_accounting.pld.PLDAccountant(neighboring_relation=_relation(neighbouring),
                                              value_discretization_interval=1e-4)
    else:
        raise FedrayError(f"privacy.accountant={accountant!r} is unknown: use one of {ACCOUNTANTS}")
    if not acc.supports(composed):
        raise FedrayError(f"the {accountant} accountant cannot compose {describe_event(composed)} under "
                          f"{neighbouring} neighbouring: use privacy.accountant="
                          f"{'prv' if accountant == 'rdp' else 'rdp'}")
    acc.compose(composed)
    return float(acc.get_epsilon(delta))


def rdp_curve(events: Iterable, *, neighbouring: str = "zero-out") -> list[float]:
    """The RDP ε(α) of the composition of ``events`` at every order of ``RDP_ORDERS`` (dp-accounting).

    What a later composition needs of one release without knowing its mechanism: RDP curves add up
    over compositions and take a maximum over disjoint units (Mironov 2017). Memoised like
    :func:`compose_epsilon`: a federation of 1,000 hospitals has a handful of distinct schedules.
    """
    events = tuple(events)
    try:
        hash(events)
    except TypeError:
        return list(_rdp_curve.__wrapped__(events, neighbouring))
    return list(_rdp_curve(events, neighbouring))


@functools.lru_cache(maxsize=4096)
def _rdp_curve(events: tuple, neighbouring: str) -> tuple[float, ...]:
    import dp_accounting

    from fedray.privacy.accounting import RDP_ORDERS

    _quiet_absl()
    acc = dp_accounting.rdp.RdpAccountant(orders=RDP_ORDERS, neighboring_relation=_relation(neighbouring))
    if events:
        acc.compose(dp_accounting.ComposedDpEvent(list(events)))
    return tuple(float(v) for v in acc._rdp)  # noqa: SLF001 (dp-accounting exposes the curve only here)


def pure_epsilon(events: Iterable) -> float:
    r"""ε of pure-DP (δ = 0) events by basic composition: Laplace :math:`1/b`, k-ary randomised response
    :math:`\ln((1-p+p/k)/(p/k))` with p the probability of answering a uniform bucket, and a
    :func:`pure_dp_event`. Valid for any composition; exact for the worst case of pure DP.
    """
    import dp_accounting

    total = 0.0
    for event in events:
        if isinstance(event, dp_accounting.LaplaceDpEvent):
            total += 1.0 / event.noise_multiplier
        elif isinstance(event, dp_accounting.RandomizedResponseDpEvent):
            p, k = event.noise_parameter, event.num_buckets  # with probability p, a uniform bucket
            total += math.log((1 - p + p / k) / (p / k))
        elif isinstance(event, _pure_event_class()):
            total += event.epsilon
        elif isinstance(event, dp_accounting.SelfComposedDpEvent):
            total += event.count * pure_epsilon([event.event])
        elif isinstance(event, dp_accounting.ComposedDpEvent):
            total += pure_epsilon(event.events)
        else:
            raise FedrayError(f"{describe_event(event)} is not a pure-DP event: account it with delta > 0")
    return total


def calibrate_noise(epsilon_of, *, target: float, low: float = 0.05, high: float = 1e4,
                    tolerance: float | None = None) -> float:
    """The smallest noise multiplier with ``epsilon_of(σ) <= target``, ε falling with σ, to within ``tolerance``
    of the target (default 1 % of it, at most 0.01), so a small target is met as closely as a large one.

    Brent's method on log σ aims at the middle of [target − tolerance, target]; every σ it tries is kept, and the
    one returned is the feasible σ (ε ≤ target) whose ε is nearest the target. Should Brent's iterates miss the
    band (ε not smooth enough), bisection on log σ between the nearest feasible and infeasible σ finishes; where
    ε jumps over the band, it returns the least noise found within the target. Never a σ whose ε exceeds it.
    """
    import scipy.optimize  # here, not at import: the parties import this module and never calibrate

    tolerance = min(0.01, 0.01 * target) if tolerance is None else tolerance
    if not target > 0:
        raise FedrayError(f"a DP budget of epsilon={target} leaves nothing for training: raise privacy.epsilon")
    tried: dict[float, float] = {}

    def gap(log_sigma: float) -> float:  # > 0: too little noise
        tried[log_sigma] = epsilon_of(math.exp(log_sigma))
        return tried[log_sigma] - (target - tolerance / 2)

    def log_gap_until_within(log_sigma: float) -> float:  # log ε is close to linear in log σ: Brent's secant steps
        if abs(gap(log_sigma)) <= tolerance / 2:
            raise _WithinTolerance
        return math.log(min(max(tried[log_sigma], 1e-300), 1e300)) - math.log(target - tolerance / 2)

    def least_noise_within_target() -> float:  # the largest ε tried within the target, at the least σ
        return max((u for u, eps in tried.items() if eps <= target), key=lambda u: (tried[u], -u))

    at_high = gap(math.log(high))
    if at_high > tolerance / 2:
        raise FedrayError(f"epsilon={target} is unreachable even with noise multiplier {high:g}: raise "
                          "privacy.epsilon or train fewer rounds/epochs")
    if at_high >= -tolerance / 2:  # the most noise tried is already within the tolerance
        return high
    while gap(math.log(low)) <= tolerance / 2:
        if low < 1e-6:
            return low  # checked: within the target with next to no noise
        low /= 2
    with contextlib.suppress(_WithinTolerance):
        scipy.optimize.brentq(log_gap_until_within, math.log(low), math.log(high), xtol=1e-6, maxiter=60, disp=False)
    for _ in range(100):
        best = least_noise_within_target()
        too_little = max(u for u, eps in tried.items() if eps > target)  # the most noise that was not enough
        middle = (best + too_little) / 2
        if target - tried[best] <= tolerance or middle in (best, too_little):
            break  # within the tolerance, or ε jumps over the band: the least noise found within the target
        gap(middle)
    return math.exp(least_noise_within_target())


class _WithinTolerance(Exception):
    """Brent's iterate met the target to within the tolerance: stop there."""


def describe_event(event) -> str:
    """A short, stable text of a DpEvent for the ledger (dp-accounting's repr, less its module paths)."""
    return repr(event).replace("dp_accounting.dp_event.", "")


__all__ = ["Release", "Releases", "UndeclaredRelease", "calibrate_noise", "compose_epsilon", "describe_event",
           "field_names", "pure_dp_event", "pure_epsilon", "rdp_curve"]
