"""The experiment's view of the driver: a typed protocol, in process or over Ray (as the hospitals' proxy).

:func:`fedray.federation.experiment.run_experiment` and
:func:`~fedray.federation.experiment.run_in_process` run one round loop
against :class:`DriverProxy`; only the transport differs:

- in process, the :class:`~fedray.federation.driver.Driver` itself is the
  proxy (it has every method);
- :class:`RayDriver` calls the driver hosted in a pooled actor
  (:class:`~fedray.federation.pool.Host`), passing each method as
  ``Driver.<method>`` (never a string), and turns a hospital's own error
  into one :class:`~fedray.errors.FedrayError` line.
"""

from __future__ import annotations

from typing import Protocol

from fedray.errors import FedrayError
from fedray.federation.driver import Driver
from fedray.federation.hospital import HospitalError
from fedray.federation.runtime import get_in_one_line, overdue_line


class DriverProxy(Protocol):
    def run_round(self, round_idx: int, evaluate: bool) -> dict: ...

    def snapshot(self) -> dict: ...

    def restore(self, snapshot: dict) -> None: ...

    def feature_cache(self) -> dict: ...

    def exported_params(self) -> tuple[list[dict], list[dict]]: ...

    def best_round(self) -> int | None: ...

    def validation_choices(self) -> dict: ...

    def hospital_privacy_states(self) -> list[dict]: ...

    def observer_reports(self) -> dict: ...

    def hospital_placement(self) -> list[dict]: ...


class RayDriver:
    """The driver in a pooled Ray actor: each call is one task on that actor, naming the method itself."""

    def __init__(self, host, *, seconds: float | None = None):
        self.host = host
        self.seconds = seconds  # each call's deadline (cluster.round_timeout_s)

    def _call(self, method, *args, what: str | None = None):
        what = what or f"the driver's {method.__name__}"
        return get_in_one_line(self.host.apply.remote(method, *args), causes=(FedrayError, HospitalError),
                               seconds=self.seconds, overdue=lambda: overdue_line(what, self.seconds))

    def run_round(self, round_idx: int, evaluate: bool) -> dict:
        return self._call(Driver.run_round, round_idx, evaluate, what=f"round {round_idx}")

    def snapshot(self) -> dict:
        return self._call(Driver.snapshot)

    def restore(self, snapshot: dict) -> None:
        self._call(Driver.restore, snapshot)

    def feature_cache(self) -> dict:
        return self._call(Driver.feature_cache)

    def exported_params(self) -> tuple[list[dict], list[dict]]:
        return self._call(Driver.exported_params)

    def best_round(self) -> int | None:
        return self._call(Driver.best_round)

    def validation_choices(self) -> dict:
        return self._call(Driver.validation_choices)

    def hospital_privacy_states(self) -> list[dict]:
        return self._call(Driver.hospital_privacy_states)

    def observer_reports(self) -> dict:
        return self._call(Driver.observer_reports)

    def hospital_placement(self) -> list[dict]:
        return self._call(Driver.hospital_placement)
