"""Round observers: parties that see exactly what the driver receives each round, and report after the last.

The driver holds a tuple of observers (an audit's adversary is one) and
hands each of them, every round, what it received itself, never more:

- :meth:`RoundObserver.observe_updates`: each participating hospital's
  parameters and the parameters it started the round from (plain
  aggregation: the driver sees every hospital's update);
- :meth:`RoundObserver.observe_sum`: under secure aggregation only the round's
  start and the mean the masked sum unmasks to;
- :meth:`RoundObserver.observe_reports`: what each participating hospital's
  attachments reported with its update (``ClientResult.observations``: an
  audit's step-level view), as its mechanism's releases let it through.

After the rounds :meth:`RoundObserver.report` receives the run's initial and
final global parameters; its result reaches the caller through
``Driver.observer_reports`` under the observer's ``name``. An observer's
state is part of the driver's checkpoint (``state_dict``), so a resumed run
continues its observations instead of restarting them.

An observer sees what the driver sees, so it adds nothing the driver's trust
assumptions do not already grant: whatever it reports is the driver's view.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Params = dict[str, np.ndarray]


class RoundObserver(Protocol):
    name: str

    def observe_updates(self, starts: dict[int, Params], updates: dict[int, Params]) -> None: ...

    def observe_sum(self, start: Params, mean: Params) -> None: ...

    def observe_reports(self, reports: dict[int, dict]) -> None: ...

    def report(self, initial: Params, final: Params) -> Any: ...

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...
