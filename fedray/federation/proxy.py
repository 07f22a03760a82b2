"""The driver's view of the hospitals: a small protocol, in process or over Ray.

The round loop (:class:`~fedray.federation.driver.Driver`) talks to the
hospitals only through :class:`HospitalsProxy`, after Flower's
``ClientProxy``: train from given parameters, evaluate, run the two steps of
a masked round, and report or restore each accountant's state.

Hospitals are virtual (:mod:`fedray.federation.residency`): the proxy keeps
each one's ticket (set-up, accountant state, turns), and a hospital is built
in whichever process runs its turn, or reused there while its copy is
current. Transport is the proxy's business:

- :class:`InProcessHospitals` runs every turn in this process, so the round
  loop runs (and is unit-tested) without Ray.
- :class:`RayHospitals` queues each round's hospitals onto A pooled actors
  (:mod:`fedray.federation.pool`), a few in flight per actor, each actor
  taking first the hospitals it already holds. It owns everything that only
  exists over Ray: one object-store copy per distinct model, waiting for a
  restarted actor, the retries of a turn, and the test hook that kills a
  hospital's actor mid-round.

With ``fl.train_together`` > 1 a round's hospitals are split into groups
(:func:`~fedray.federation.residency.together_groups`: as many as there are
processes where that makes them smaller), each group trains in one turn, in
lockstep (:mod:`fedray.training.together`), and evaluates in one turn; a
masked round still trains one hospital after another, as its two steps are
per hospital.

Both return the same values for the same calls, whatever the number of
processes and whatever each keeps built, so a run is identical either way
(tests check it), and both check every hospital message against the privacy
plan's declared releases for that hospital
(:class:`~fedray.privacy.ledger.Releases`): a field no release covers is
refused before the driver can use it.

Faults: an actor that dies mid-round is restarted by Ray (``max_restarts``);
the proxy waits until it answers and queues again each turn it lost, which
any actor then runs from the hospital's ticket (its accountant resumes at the
steps last reported: spent privacy stays spent) from the same global
parameters. A run never continues with fewer hospitals: after
``max_round_retries`` failed tries of one turn it fails. A masked round
restarts the masking for everyone as a new attempt (fresh key pairs; no mask
is ever reused): hospitals that had trained keep their update, one whose
actor died retrains from the same global model.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import numpy as np

from fedray.federation.hospital import Hospital, HospitalError
from fedray.federation.residency import NotHeld, Residency, Ticket, run_turn, run_turn_together, together_groups
from fedray.privacy.bias_calibration import CALIBRATION_FIELD, RELEASES_COUNTER
from fedray.privacy.secure_round import SecureRound
from fedray.privacy.secure_aggregation import SecureAggregationSession
from fedray.strategies import ClientResult

Params = dict[str, np.ndarray]

IN_FLIGHT_PER_ACTOR = 2  # turns queued on an actor at once: the next one's transfer overlaps the current training


def message_fields(result: ClientResult) -> list[str]:
    """The fields of one hospital's message, as its declared releases name them."""
    counted = [] if result.num_samples is None else ["num_samples"]
    return ["params", *counted, *(f"metrics.{key}" for key in result.metrics),
            *(f"observations.{name}" for name in result.observations)]


def checked(plan, hospital: int, names: list[str]):
    """Refuse a hospital message carrying a field no release of ``plan`` declares for that hospital."""
    plan.hospital_releases(hospital).check(names, mechanism=plan.mechanism)


def checked_results(plan, results: list[ClientResult]) -> list[ClientResult]:
    for result in results:
        checked(plan, result.hospital, message_fields(result))
    return results


def checked_metrics(plan, metrics: dict[int, dict]) -> list[dict]:
    """Each hospital's validation metrics, checked, as ``{"hospital": k, **metrics}`` in hospital order."""
    for k, values in metrics.items():
        checked(plan, k, [f"validation.{key}" for key in values])
    return [{"hospital": k, **metrics[k]} for k in sorted(metrics)]


def checked_reports(plan, reports: list[dict | None]) -> list[dict | None]:
    for k, report in enumerate(reports):
        checked(plan, k, [f"feature_cache.{key}" for key in report or {}])
    return reports


def checked_payloads(plan, masked: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    for k in masked:
        checked(plan, k, ["masked_payload"])
    return masked


def calibrated_sums(plan, tickets, sums: dict[int, dict], calibration_round: int) -> list[np.ndarray]:
    """Each hospital's checked calibration sum, in hospital order; its ticket counts the release (the ledger's)."""
    for k, message in sums.items():
        checked(plan, k, list(message))
        tickets.states[k] = {**tickets.states[k], RELEASES_COUNTER: calibration_round + 1}
    return [sums[k][CALIBRATION_FIELD] for k in sorted(sums)]


def reported_privacy_state(result: ClientResult) -> dict:
    """The accountant's state a hospital reports with every update (record-independent ``dp_*`` counters)."""
    return {k: v for k, v in result.metrics.items() if k.startswith("dp_")}


class Tickets:
    """The hospitals' state outside any process: set-ups, accountant states as last reported, turns taken."""

    def __init__(self, setups: list[dict]):
        self.setups = setups
        self.states: list[dict] = [{} for _ in setups]
        self.turns = [0] * len(setups)

    def __len__(self) -> int:
        return len(self.setups)

    def __getitem__(self, k: int) -> Ticket:
        return Ticket(k, self.setups[k], self.states[k], self.turns[k])

    def took_turn(self, k: int) -> None:
        self.turns[k] += 1

    def restore(self, states: list[dict]) -> None:
        """Resume every accountant at ``states`` (a checkpoint): each hospital is rebuilt at its next turn."""
        self.states = [dict(s) for s in states]
        self.turns = [t + 1 for t in self.turns]  # no copy built before the restore is current any more


class HospitalsProxy(Protocol):
    """What the round loop may ask of the hospitals of one experiment."""

    restarts: int

    def __len__(self) -> int: ...

    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        """Each participant trains from its start parameters; results in hospital order."""

    def start_evaluate(self, params: dict[int, Params]) -> Callable[[], list[dict]]:
        """Ask each hospital k of ``params`` for its metrics of ``params[k]`` on its own validation shard ({} under
        a DP mechanism); calling the result collects them (``{"hospital": k, **metrics}`` in hospital order), so
        the driver evaluates its own sets meanwhile."""

    def masked_payloads(self, params: Params, round_idx: int, session: SecureAggregationSession,
                        secure: SecureRound) -> tuple[SecureAggregationSession, dict[int, np.ndarray]]:
        """One masked round's payloads from every participant of ``session``, and the session (attempt) they
        were masked in."""

    def calibration_sums(self, params: Params, calibration_round: int) -> list[np.ndarray]:
        """Every hospital's summed predictions of ``params`` on its training records, as its plan releases them
        (:mod:`fedray.privacy.bias_calibration`), in hospital order."""

    def privacy_states(self) -> list[dict]:
        """Each accountant's state after the last completed round."""

    def restore_privacy_states(self, states: list[dict]) -> None: ...

    def feature_cache(self) -> list[dict | None]: ...

    def placement(self) -> list[dict]: ...


class InProcessHospitals:
    """Every hospital's turn in this process: the round loop without Ray (tests, a debugger)."""

    restarts = 0

    def __init__(self, setups: list[dict], *, plan, capacity: int, together: int = 1):
        self.tickets, self.plan, self.capacity, self.together = Tickets(setups), plan, capacity, together
        self.residency = Residency()

    def __len__(self) -> int:
        return len(self.tickets)

    def _turn(self, k: int, method, *args, advances: bool = False, pin: bool | None = None):
        value = run_turn(self.residency, self.tickets[k], method, args, capacity=self.capacity, advances=advances,
                         pin=pin)
        if advances:
            self.tickets.took_turn(k)
        return value

    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        results = []
        for group in together_groups(participants, self.together, processes=1):
            if len(group) == 1:
                results.append(self._turn(group[0], Hospital.fit, starts[group[0]], round_idx, advances=True))
            else:
                results += run_turn_together(self.residency, [self.tickets[k] for k in group], Hospital.fit_together,
                                             ([starts[k] for k in group], round_idx), capacity=self.capacity)
                for k in group:
                    self.tickets.took_turn(k)
        for result in results:
            self.tickets.states[result.hospital] = reported_privacy_state(result)
        return checked_results(self.plan, results)

    def start_evaluate(self, params: dict[int, Params]) -> Callable[[], list[dict]]:
        metrics = checked_metrics(self.plan, {k: self._turn(k, Hospital.evaluate, p) for k, p in params.items()})
        return lambda: metrics

    def masked_payloads(self, params, round_idx, session, secure):
        cohort = session.participants
        keys = {k: self._turn(k, Hospital.secure_fit, params, round_idx, session, advances=True, pin=True)
                for k in cohort}
        masked = {k: self._turn(k, Hospital.secure_mask, keys, secure, pin=False) for k in cohort}
        for k in cohort:
            self.tickets.states[k] = self._turn(k, Hospital.privacy_state)
        return session, checked_payloads(self.plan, masked)

    def calibration_sums(self, params: Params, calibration_round: int) -> list[np.ndarray]:
        sums = {k: self._turn(k, Hospital.calibration_sum, params, calibration_round) for k in range(len(self))}
        return calibrated_sums(self.plan, self.tickets, sums, calibration_round)

    def privacy_states(self) -> list[dict]:
        return list(self.tickets.states)

    def restore_privacy_states(self, states: list[dict]) -> None:
        self.tickets.restore(states)

    def feature_cache(self) -> list[dict | None]:
        return checked_reports(self.plan, [self._turn(k, Hospital.feature_cache) for k in range(len(self))])

    def placement(self) -> list[dict]:
        return [{"node": None, "placement_group": None} for _ in range(len(self))]


class RayHospitals:
    """Virtual hospitals on pooled Ray actors (:class:`~fedray.federation.pool.Host`): each round's turns are
    queued onto the actors, at most :data:`IN_FLIGHT_PER_ACTOR` on one at a time, and an actor takes first the
    hospitals whose current copy it holds, then those nobody holds, then any.

    ``setups`` are the hospitals' constructor arguments with their shards as object references, which this
    proxy's owner keeps alive for the whole experiment.
    """

    def __init__(self, hosts: list, setups: list[dict], *, plan, capacity: int, max_round_retries: int,
                 together: int = 1, kill_hospital: tuple[int, int] | None = None):
        self.hosts, self.tickets, self.plan, self.capacity = list(hosts), Tickets(setups), plan, capacity
        self.together = together
        self.max_round_retries = max_round_retries
        self.kill_hospital = kill_hospital  # test hook (run_experiment's): (k, r) kills hospital k's actor in round r
        self.restarts = 0
        self.holder: list[int | None] = [None] * len(setups)  # the actor holding each hospital's current copy
        self.ran_on = [k % len(self.hosts) for k in range(len(setups))]  # where each hospital last took a turn

    def __len__(self) -> int:
        return len(self.tickets)

    # -- rounds --------------------------------------------------------------------
    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        param_refs = _put_once({k: starts[k] for k in participants})
        calls = {group: (Hospital.fit_together, [param_refs[k] for k in group], round_idx) if len(group) > 1 else
                 (Hospital.fit, param_refs[group[0]], round_idx)
                 for group in together_groups(participants, self.together, len(self.hosts))}
        done = self._turns(calls, advances=True, round_idx=round_idx)
        results = sorted((r for group, value in done.items() for r in _values(group, value)),
                         key=lambda result: result.hospital)
        for result in results:
            self.tickets.states[result.hospital] = reported_privacy_state(result)
        return checked_results(self.plan, results)

    def masked_payloads(self, params, round_idx, session, secure):
        import ray

        param_ref, cohort = ray.put(params), list(session.participants)
        for attempt in range(self.max_round_retries + 1):
            try:
                keys = self._turns({k: (Hospital.secure_fit, param_ref, round_idx, session) for k in cohort},
                                   advances=True, pin=True, round_idx=round_idx)
                masked = self._on_holders({k: (Hospital.secure_mask, keys, secure) for k in cohort}, pin=False)
                states = self._on_holders({k: (Hospital.privacy_state,) for k in cohort})
                break
            except _failures() + (NotHeld,) as err:
                if attempt == self.max_round_retries:
                    raise RuntimeError(f"secure aggregation failed {attempt + 1} times in round {round_idx}; "
                                       "refusing to continue with fewer hospitals") from err
                session = session.next_attempt()
        for k in cohort:
            self.tickets.states[k] = states[k]
        return session, checked_payloads(self.plan, masked)

    def start_evaluate(self, params: dict[int, Params]) -> Callable[[], list[dict]]:
        refs, pending = _put_once(params), {}
        for group in together_groups(list(params), self.together, len(self.hosts)):  # as the round trained them
            call = (Hospital.evaluate_together, [refs[k] for k in group]) if len(group) > 1 else \
                (Hospital.evaluate, refs[group[0]])
            pending[group] = self._visit(self._home(group[0]), group, *call)

        def collect() -> list[dict]:
            got = dict(zip(pending, self._get(list(pending.values()))))
            return checked_metrics(self.plan, {k: value for group, values in got.items()
                                               for k, value in zip(group, _values(group, values))})
        return collect

    def calibration_sums(self, params: Params, calibration_round: int) -> list[np.ndarray]:
        import ray

        ref = ray.put(params)
        sums = self._turns({k: (Hospital.calibration_sum, ref, calibration_round) for k in range(len(self))})
        return calibrated_sums(self.plan, self.tickets, sums, calibration_round)

    # -- privacy state and reports -------------------------------------------------
    def privacy_states(self) -> list[dict]:
        return list(self.tickets.states)

    def restore_privacy_states(self, states: list[dict]) -> None:
        self.tickets.restore(states)
        self.holder = [None] * len(self.tickets)

    def feature_cache(self) -> list[dict | None]:
        done = self._turns({k: (Hospital.feature_cache,) for k in range(len(self))})
        return checked_reports(self.plan, [done[k] for k in range(len(self))])

    def placement(self) -> list[dict]:
        """Where each hospital last took a turn: its actor's node and placement group."""
        places = self._get([host.where.remote() for host in self.hosts])
        return [places[a] for a in self.ran_on]

    # -- the queue -----------------------------------------------------------------
    def _turns(self, calls: dict[int, tuple], *, advances: bool = False, pin: bool | None = None,
               round_idx: int | None = None) -> dict:
        """Hospital k's turn ``calls[k] = (method, *args)`` for every k, queued onto the actors; values by k. A key
        may be a group of hospitals (:func:`~fedray.federation.residency.together_groups`), which take one turn
        at once on one actor.

        A turn lost with its actor is queued again (any actor runs it from the ticket), up to
        ``max_round_retries`` times.
        """
        from fedray.federation.runtime import first_ready

        queue, in_flight, done = sorted(calls), {}, {}
        load, failures = [0] * len(self.hosts), Counter()
        while queue or in_flight:
            for depth in range(IN_FLIGHT_PER_ACTOR):  # one turn on every idle actor before a second on any
                for a in range(len(self.hosts)):
                    if queue and load[a] <= depth:
                        k = self._take(queue, a)
                        in_flight[self._visit(a, k, *calls[k], advances=advances, pin=pin)] = (k, a)
                        load[a] += 1
                        self._inject_fault(round_idx, k, a)
            for ref in first_ready(list(in_flight)):
                k, a = in_flight.pop(ref)
                load[a] -= 1
                try:
                    done[k] = self._get(ref, siblings=list(in_flight))
                except _failures() as err:
                    failures[k] += 1
                    if failures[k] > self.max_round_retries:
                        where = "" if round_idx is None else f" in round {round_idx}"
                        who = ("hospitals " if len(_members(k)) > 1 else "hospital ") + ", ".join(map(str, _members(k)))
                        raise RuntimeError(f"{who} failed {failures[k]} times{where}; refusing to continue "
                                           "with fewer hospitals") from err
                    self.restarts += 1
                    self._lost(a)
                    queue.insert(0, k)
                else:
                    for member in _members(k):
                        self.holder[member] = self.ran_on[member] = a
                        if advances:
                            self.tickets.took_turn(member)
        return done

    def _on_holders(self, calls: dict[int, tuple], *, pin: bool | None = None) -> dict:
        """Turns that continue the copies the last :meth:`_turns` left (a masked round's later steps), at once."""
        pending = {k: self._visit(self.holder[k], k, *call, pin=pin, held_only=True) for k, call in calls.items()}
        return dict(zip(pending, self._get(list(pending.values()))))

    def _visit(self, a: int, key, method, *args, **flags):
        """Actor ``a`` runs the turn of hospital ``key``, or of the group ``key`` at once."""
        members = _members(key)
        if len(members) > 1:
            return self.hosts[a].visit_together.remote([self.tickets[k] for k in members], method, *args,
                                                       capacity=self.capacity, advances=flags.get("advances", False))
        return self.hosts[a].visit.remote(self.tickets[members[0]], method, *args, capacity=self.capacity, **flags)

    def _take(self, queue: list, a: int):
        """The next turn for actor ``a``: a hospital (group) it holds, else one nobody holds, else the queue's
        first."""
        for wanted in (a, None):
            for i, key in enumerate(queue):
                if self.holder[_members(key)[0]] == wanted:
                    return queue.pop(i)
        return queue.pop(0)

    def _home(self, k: int) -> int:
        return self.ran_on[k] if self.holder[k] is None else self.holder[k]

    # -- faults --------------------------------------------------------------------
    def _inject_fault(self, round_idx: int | None, key, a: int) -> None:
        if self.kill_hospital is not None and self.kill_hospital[1] == round_idx and \
                self.kill_hospital[0] in _members(key):
            import ray  # test hook: kill the actor running hospital k's turn while it is in flight; Ray restarts it

            self.kill_hospital = None
            ray.kill(self.hosts[a], no_restart=False)

    def _lost(self, a: int) -> None:
        """Actor ``a`` died: wait until Ray has restarted it; every copy it held is gone."""
        self.holder = [None if held == a else held for held in self.holder]
        _wait_until_answering(self.hosts[a])

    def _get(self, refs, siblings=()):
        from fedray.federation.runtime import get_in_one_line

        try:
            return get_in_one_line(refs, causes=(HospitalError,), siblings=siblings)
        except Exception as err:  # a NotHeld raised in an actor arrives wrapped in Ray's task error
            if isinstance(getattr(err, "cause", None), NotHeld):
                raise NotHeld(str(err.cause)) from None
            raise


def _members(key) -> tuple[int, ...]:
    """The hospitals of a turn's key: one hospital, or a group that trains together."""
    return key if isinstance(key, tuple) else (key,)


def _values(key, value) -> list:
    """A turn's value per hospital of its key: a group's turn returns a list, a single hospital's one value."""
    return value if len(_members(key)) > 1 else [value]


def _wait_until_answering(host) -> None:
    import ray

    deadline = time.monotonic() + 120
    while True:  # Ray restarts the actor asynchronously; wait until it answers.
        try:
            ray.get(host.ping.remote(), timeout=30)
            return
        except _failures() + (ray.exceptions.GetTimeoutError,):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _put_once(params: dict[int, Params]) -> dict:
    """An object reference per hospital, with one object-store copy per distinct model (FedAvg sends one to all)."""
    import ray

    refs = {id(p): ray.put(p) for p in params.values()}
    return {k: refs[id(p)] for k, p in params.items()}


def _failures() -> tuple[type[BaseException], ...]:
    """The errors of a hospital actor that died or cannot be reached (Ray imported only on the Ray path)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return RayActorError, ActorDiedError, ActorUnavailableError
