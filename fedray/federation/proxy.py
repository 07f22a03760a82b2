"""The driver's view of the hospitals: a small protocol, in process or over Ray.

The round loop (:class:`~fedray.federation.driver.Driver`) talks to the
hospitals only through :class:`HospitalsProxy`, after Flower's
``ClientProxy``: train from given parameters, evaluate, run the two steps of
a masked round, and report or restore each accountant's state. Transport is
the proxy's business:

- :class:`InProcessHospitals` calls :class:`~fedray.federation.hospital.Hospital`
  objects directly, so the round loop runs (and is unit-tested) without Ray.
- :class:`RayHospitals` calls hospital actors (:mod:`fedray.federation.pool`)
  and owns everything that only exists over Ray: one object-store copy per
  distinct model, waiting for a restarted actor, re-creating its hospital from
  the same set-up, restoring its accountant from the last state it reported,
  the retries of a round, and the test hook that kills a hospital mid-round.

Both return the same values for the same calls, so a run is identical either
way (a test checks it), and both check every hospital message against the
privacy plan's declared releases for that hospital
(:class:`~fedray.privacy.ledger.Releases`): a field no release covers is
refused before the driver can use it.

Faults: a hospital that dies mid-round is restarted by Ray (``max_restarts``);
the proxy waits until it answers, rebuilds its hospital from the set-up it was
given, restores its accountant from the last state it reported, and retries
its training for the same round from the same global parameters. A run never
continues with fewer hospitals: after ``max_round_retries`` failed tries it
fails. A masked round restarts the masking for everyone as a new attempt
(fresh key pairs; no mask is ever reused): hospitals that had trained keep
their update, a restarted one retrains from the same global model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from fedray.federation.hospital import Hospital, HospitalError
from fedray.privacy.secure_round import SecureRound
from fedray.privacy.secure_aggregation import SecureAggregationSession
from fedray.strategies import ClientResult

Params = dict[str, np.ndarray]


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


def checked_metrics(plan, metrics: list[dict]) -> list[dict]:
    for k, values in enumerate(metrics):
        checked(plan, k, [f"validation.{key}" for key in values])
    return metrics


def checked_reports(plan, reports: list[dict | None]) -> list[dict | None]:
    for k, report in enumerate(reports):
        checked(plan, k, [f"feature_cache.{key}" for key in report or {}])
    return reports


def checked_payloads(plan, masked: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    for k in masked:
        checked(plan, k, ["masked_payload"])
    return masked


def reported_privacy_state(result: ClientResult) -> dict:
    """The accountant's state a hospital reports with every update (record-independent ``dp_*`` counters)."""
    return {k: v for k, v in result.metrics.items() if k.startswith("dp_")}


class HospitalsProxy(Protocol):
    """What the round loop may ask of the hospitals of one experiment."""

    restarts: int

    def __len__(self) -> int: ...

    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        """Each participant trains from its start parameters; results in hospital order."""

    def start_evaluate(self, params: list[Params]) -> Callable[[], list[dict]]:
        """Ask hospital k for its metrics of ``params[k]`` on its own validation shard ({} under a DP mechanism);
        calling the result collects them, so the driver evaluates its own sets meanwhile."""

    def masked_payloads(self, params: Params, round_idx: int, session: SecureAggregationSession,
                        secure: SecureRound) -> tuple[SecureAggregationSession, dict[int, np.ndarray]]:
        """One masked round's payloads from every hospital, and the session (attempt) they were masked in."""

    def privacy_states(self) -> list[dict]:
        """Each accountant's state after the last completed round."""

    def restore_privacy_states(self, states: list[dict]) -> None: ...

    def feature_cache(self) -> list[dict | None]: ...

    def placement(self) -> list[dict]: ...


class InProcessHospitals:
    """Hospitals as plain objects in this process: the round loop without Ray (tests, a debugger)."""

    restarts = 0

    def __init__(self, setups: list[dict]):
        self.hospitals = [Hospital(**setup) for setup in setups]
        self.plan = setups[0]["plan"]

    def __len__(self) -> int:
        return len(self.hospitals)

    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        return checked_results(self.plan, [self.hospitals[k].fit(starts[k], round_idx) for k in sorted(participants)])

    def start_evaluate(self, params: list[Params]) -> Callable[[], list[dict]]:
        metrics = checked_metrics(self.plan, [h.evaluate(p) for h, p in zip(self.hospitals, params)])
        return lambda: metrics

    def masked_payloads(self, params, round_idx, session, secure):
        keys = {h.hospital_id: h.secure_fit(params, round_idx, session) for h in self.hospitals}
        return session, checked_payloads(self.plan, {h.hospital_id: h.secure_mask(keys, secure)
                                                     for h in self.hospitals})

    def privacy_states(self) -> list[dict]:
        return [h.privacy_state() for h in self.hospitals]

    def restore_privacy_states(self, states: list[dict]) -> None:
        for hospital, state in zip(self.hospitals, states):
            hospital.restore_privacy_state(state)

    def feature_cache(self) -> list[dict | None]:
        return checked_reports(self.plan, [h.feature_cache() for h in self.hospitals])

    def placement(self) -> list[dict]:
        return [{"node": None, "placement_group": None} for _ in self.hospitals]


class RayHospitals:
    """Hospitals in Ray actors (:class:`~fedray.federation.pool.Host`): hospital k in ``seats[k]``, one hospital
    per actor or several sharing one (``fl.actors``).

    ``setups`` are the hospitals' constructor arguments, kept to rebuild a
    restarted one; their shards are object references this proxy's owner
    keeps alive for the whole experiment. A host that dies takes every
    hospital it held: each is rebuilt when its own call fails.
    """

    def __init__(self, seats: list, setups: list[dict], *, max_round_retries: int,
                 kill_hospital: tuple[int, int] | None = None):
        self.seats, self.setups = seats, setups
        self.plan = setups[0]["plan"]
        self.max_round_retries = max_round_retries
        self.kill_hospital = kill_hospital  # test hook (run_experiment's): (k, r) kills hospital k in round r
        self.restarts = 0
        self.states: list[dict] = [{} for _ in seats]

    def __len__(self) -> int:
        return len(self.seats)

    def starting(self) -> list:
        """Build every hospital in its host (a reused host drops the previous experiment's first): the tasks."""
        return [seat.start(Hospital, setup) for seat, setup in zip(self.seats, self.setups)]

    # -- rounds --------------------------------------------------------------------
    def fit(self, starts: list[Params], round_idx: int, participants: list[int]) -> list[ClientResult]:
        param_refs = _put_once(starts)
        pending = {k: self.seats[k].apply(Hospital.fit, param_refs[k], round_idx) for k in participants}
        self._inject_fault(round_idx)
        results: dict[int, ClientResult] = {}
        for k, ref in pending.items():
            for attempt in range(self.max_round_retries + 1):
                try:
                    results[k] = self._get(ref, siblings=list(pending.values()))
                    break
                except _failures() as err:
                    if attempt == self.max_round_retries:
                        raise RuntimeError(f"hospital {k} failed {attempt + 1} times in round {round_idx}; "
                                           "refusing to continue with fewer hospitals") from err
                    self._rebuild(k)
                    ref = self.seats[k].apply(Hospital.fit, param_refs[k], round_idx)
        for k, result in results.items():
            self.states[k] = reported_privacy_state(result)
        return checked_results(self.plan, [results[k] for k in sorted(results)])

    def masked_payloads(self, params, round_idx, session, secure):
        import ray

        param_ref = ray.put(params)
        for attempt in range(self.max_round_retries + 1):
            try:
                pending = [h.apply(Hospital.secure_fit, param_ref, round_idx, session) for h in self.seats]
                self._inject_fault(round_idx)
                keys = dict(zip(session.participants, self._get(pending)))
                masked = self._get([h.apply(Hospital.secure_mask, keys, secure) for h in self.seats])
                break
            except _failures() as err:
                if attempt == self.max_round_retries:
                    raise RuntimeError(f"secure aggregation failed {attempt + 1} times in round {round_idx}; "
                                       "refusing to continue with fewer hospitals") from err
                for k in range(len(self.seats)):
                    self._rebuild(k)
                session = session.next_attempt()
        self.states = self._get([h.apply(Hospital.privacy_state) for h in self.seats])
        return session, checked_payloads(self.plan, dict(zip(session.participants, masked)))

    def start_evaluate(self, params: list[Params]) -> Callable[[], list[dict]]:
        pending = [h.apply(Hospital.evaluate, ref) for h, ref in zip(self.seats, _put_once(params))]
        return lambda: checked_metrics(self.plan, self._get(pending))

    # -- privacy state and reports -------------------------------------------------
    def privacy_states(self) -> list[dict]:
        return list(self.states)

    def restore_privacy_states(self, states: list[dict]) -> None:
        self.states = list(states)
        self._get([h.apply(Hospital.restore_privacy_state, s) for h, s in zip(self.seats, states)])

    def feature_cache(self) -> list[dict | None]:
        return checked_reports(self.plan, self._get([h.apply(Hospital.feature_cache) for h in self.seats]))

    def placement(self) -> list[dict]:
        return self._get([h.where() for h in self.seats])

    # -- faults --------------------------------------------------------------------
    def _inject_fault(self, round_idx: int) -> None:
        if self.kill_hospital is not None and self.kill_hospital[1] == round_idx and not self.restarts:
            import ray  # test hook: kill a hospital while its task is in flight; Ray restarts it

            ray.kill(self.seats[self.kill_hospital[0]].host, no_restart=False)

    def _rebuild(self, k: int) -> None:
        """Wait until hospital k's host answers; if Ray restarted it, rebuild the hospital and resume its accountant.

        The rebuilt hospital is the same set-up with the same release key, so
        no one-time release is redrawn, and its accountant resumes at the steps
        last reported: spent privacy stays spent. A host that survived keeps
        its hospital as it is (its accountant already counts what it trained).
        """
        seat = self.seats[k]
        self._wait_until_answering(seat)
        if self._get(seat.holds(Hospital)):
            return
        self.restarts += 1
        self._get(seat.start(Hospital, self.setups[k]))
        self._get(seat.apply(Hospital.restore_privacy_state, self.states[k]))

    @staticmethod
    def _wait_until_answering(seat) -> None:
        import ray

        deadline = time.monotonic() + 120
        while True:  # Ray restarts the actor asynchronously; wait until it answers.
            try:
                ray.get(seat.ping(), timeout=30)
                return
            except _failures() + (ray.exceptions.GetTimeoutError,):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    @staticmethod
    def _get(refs, siblings=()):
        from fedray.federation.runtime import get_in_one_line

        return get_in_one_line(refs, causes=(HospitalError,), siblings=siblings)


def _put_once(params: list[Params]) -> list:
    """An object reference per entry, with one object-store copy per distinct model (FedAvg sends one to all)."""
    import ray

    refs = {id(p): ray.put(p) for p in params}
    return [refs[id(p)] for p in params]


def _failures() -> tuple[type[BaseException], ...]:
    """The errors of a hospital actor that died or cannot be reached (Ray imported only on the Ray path)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return RayActorError, ActorDiedError, ActorUnavailableError
