"""Which trials sit on the privacy-utility frontier (pure numpy/pandas).

A trial is Pareto-optimal when no other trial is at least as useful *and* at
least as private, and strictly better in one of the two. Utility is maximised
(e.g. test balanced accuracy); epsilon is minimised. ``epsilon = inf`` is the
non-private baseline: any trial with utility >= its utility and a finite
epsilon dominates it, so it is optimal only when its utility is strictly the
best (or ties another non-private trial with that best utility).

The epsilon used is the one the accountant reports as *spent*
(``epsilon_spent``), not the target: the target is a request, the spent value
is the guarantee. A row without a spent epsilon or without a utility (a failed
trial) is never optimal and never dominates another row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_mask(utility: np.ndarray, epsilon: np.ndarray) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points (maximise ``utility``, minimise ``epsilon``).

    Identical (utility, epsilon) points do not dominate each other, so ties on
    the frontier are all optimal. Pairwise O(n^2): sweeps have at most a few
    thousand trials.

    >>> pareto_mask(np.array([0.8, 0.7, 0.9, 0.6]), np.array([1.0, 0.5, np.inf, 2.0])).tolist()
    [True, True, True, False]
    """
    u = np.asarray(utility, dtype=float)
    eps = np.asarray(epsilon, dtype=float)
    if u.shape != eps.shape or u.ndim != 1:
        raise ValueError(f"utility and epsilon must be 1-d arrays of one length, got {u.shape} and {eps.shape}")
    valid = ~np.isnan(u) & ~np.isnan(eps)
    # Row i, column j: does trial j dominate trial i?
    at_least_as_good = (u[None, :] >= u[:, None]) & (eps[None, :] <= eps[:, None])
    strictly_better = (u[None, :] > u[:, None]) | (eps[None, :] < eps[:, None])
    dominated = (at_least_as_good & strictly_better & valid[None, :]).any(axis=1)
    return valid & ~dominated


def mark_pareto(
    frame: pd.DataFrame, *, utility: str, epsilon: str = "epsilon_spent", group: str | None = None
) -> pd.Series:
    """Pareto-optimality of each row of ``frame``, within each privacy unit and each value of ``group``.

    An ε per record, per hospital or per record under local DP are different
    guarantees, so rows are only ever compared with rows of the same
    ``privacy_unit`` (a non-private row, whose unit is missing, competes in
    every unit). Rows whose ``group`` value is missing (failed trials have no
    backbone) are not optimal. The result is a bool Series aligned with ``frame.index``.
    """
    marked = pd.Series(False, index=frame.index, dtype=bool)
    keys = [k for k in ("privacy_unit", group) if k is not None and k in frame]
    units = frame["privacy_unit"].dropna().unique() if "privacy_unit" in frame else []
    if len(units) > 1:
        for unit in units:
            within = frame[(frame["privacy_unit"] == unit) | frame["privacy_unit"].isna()]
            marked |= mark_pareto(within.assign(privacy_unit=unit), utility=utility, epsilon=epsilon,
                                  group=group).reindex(frame.index, fill_value=False)
        return marked
    keys = [k for k in keys if k != "privacy_unit"]
    parts = [frame] if not keys else [part for _, part in frame.groupby(keys[0], dropna=True, sort=False)]
    for part in parts:
        marked.loc[part.index] = pareto_mask(_floats(part[utility]), _floats(part[epsilon]))
    return marked


def _floats(column: pd.Series) -> np.ndarray:
    return column.to_numpy(dtype=float, na_value=np.nan)
