"""A sweep directory read back: its frontier, per-round curves, choices, figure and tables, for Python users.

    frontier = fedray.Frontier.load("sweeps/privacy_tradeoff/reference-cpu-2026-11-23")
    frontier.frame                      # frontier.parquet: one row per trial (docs/frontier.md)
    frontier.best(epsilon=1.0)          # the trial a sweep would choose at target ε = 1
    frontier.best(1.0, where={"hospitals": 500})  # ... among the trials of one federation size
    frontier.pareto()                   # the Pareto-optimal trials (utility up, ε spent down)
    frontier.plot()                     # frontier.png's figure, as a matplotlib Figure
    frontier.tables()                   # tables.md's Markdown, regenerated from the Parquet

Any sweep fedray wrote reads back, older schemas included: a frontier
without validation columns (schema versions 1-2) is chosen on its test
metric, as its ``tables.md`` says. The utility a sweep chose on is the
Parquet's ``fedray.utility`` metadata (``DEFAULT_UTILITY`` where absent).
``best`` picks like the sweep's report: among completed trials, the highest
utility; ``on`` names another column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fedray.errors import FedrayError
from fedray.sweep.plots import frontier_figure
from fedray.sweep.report import DEFAULT_UTILITY
from fedray.sweep.tables import render_tables, selection_column

ROUNDS_FILES = ("trial_rounds.parquet", "rounds.parquet")  # the latter in sweeps written before 2026-12-04


@dataclass(frozen=True)
class Frontier:
    """One sweep's results: ``frame`` (a row per trial), ``rounds`` (a row per trial and round, when written)."""

    path: Path
    frame: pd.DataFrame
    rounds: pd.DataFrame | None
    utility: str  # the column the sweep chose trials on
    name: str

    @classmethod
    def load(cls, path: str | Path) -> Frontier:
        """Read a sweep directory (or its ``frontier.parquet``); a missing one raises :class:`FedrayError`."""
        path = Path(path)
        parquet = path if path.suffix == ".parquet" else path / "frontier.parquet"
        if not parquet.is_file():
            raise FedrayError(f"{parquet} does not exist: give a sweep directory that holds frontier.parquet")
        metadata = {k.decode(): v.decode() for k, v in (pq.read_schema(parquet).metadata or {}).items()
                    if k.startswith(b"fedray.")}
        rounds = next((pd.read_parquet(parquet.parent / name) for name in ROUNDS_FILES
                       if (parquet.parent / name).is_file()), None)
        return cls(parquet.parent, pd.read_parquet(parquet), rounds,
                   metadata.get("fedray.utility", DEFAULT_UTILITY), metadata.get("fedray.sweep", parquet.parent.name))

    def completed(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "completed"]

    def best(self, epsilon: float | None = None, *, on: str | None = None, where: dict | None = None) -> pd.Series:
        """The completed trial with the highest ``on`` (default: the sweep's utility), at target ``epsilon`` when
        given (``math.inf`` for the non-private trials), among the trials whose columns equal ``where``'s values
        (``where={"hospitals": 500}``: one federation size of a sweep over several; a hospital-level ε of one
        federation says nothing of another)."""
        on = on or selection_column(self.frame, self.utility)  # an older frontier: its test counterpart
        if on not in self.frame:
            raise FedrayError(f"this frontier has no column {on!r}: choose one of "
                              f"{', '.join(c for c in self.frame.columns if c.startswith(('val_', 'test_')))}")
        trials = self.completed().dropna(subset=[on])
        for column, value in (where or {}).items():
            if column not in trials:
                raise FedrayError(f"this frontier has no column {column!r} to choose on")
            trials = trials[trials[column] == value]
        if epsilon is not None:
            target = trials["target_epsilon"].astype(float)
            trials = trials[target == epsilon] if not math.isinf(epsilon) else trials[target.map(math.isinf)]
        if trials.empty:
            targets = sorted(set(self.completed()["target_epsilon"].astype(float)))
            among = f" where {where}" if where else ""
            raise FedrayError(f"no completed trial at target epsilon {epsilon}{among}: this sweep has {targets}")
        return trials.loc[trials[on].idxmax()]

    def pareto(self) -> pd.DataFrame:
        """The trials no other beats on both utility and ε spent (the ringed points of ``frontier.png``)."""
        return self.frame[self.frame["pareto_overall"].fillna(False).astype(bool)]

    def plot(self):
        """``frontier.png``'s two panels, as a matplotlib Figure."""
        return frontier_figure(self.frame, utility=selection_column(self.frame, self.utility),
                               title=f"sweep {self.name}")

    def tables(self) -> str:
        """``tables.md``: the seed paper's tables, regenerated from the Parquet."""
        return render_tables(self.frame, utility=self.utility)
