"""The private statistics each hospital released before the run, as the ledger charges them.

They are the plan's preprocessing entries that carry a ``noise_multiplier``:
colour moments (:mod:`fedray.privacy.preprocessing`), frozen-feature sums and
the prototype head's masked releases (:mod:`fedray.training.prototype_head`).
Each is one Gaussian mechanism on that hospital's records, at the entry's
noise multiplier (noise std over sensitivity), released once per run: a
``GaussianDpEvent``, which a mechanism composes with whatever else it releases.
Entries without a noise multiplier (exact sums of a run without a DP claim, or
a masked sum's values) charge nothing.
"""

from __future__ import annotations


def released_statistics(preprocessing, hospital: int) -> list[dict]:
    """The private statistics ``hospital`` released before the run."""
    return [e for e in preprocessing if e["hospital"] == hospital and "noise_multiplier" in e]


def statistic_event(entry: dict):
    import dp_accounting

    return dp_accounting.GaussianDpEvent(entry["noise_multiplier"])


def statistic_events(preprocessing, hospital: int) -> list:
    return [statistic_event(e) for e in released_statistics(preprocessing, hospital)]
