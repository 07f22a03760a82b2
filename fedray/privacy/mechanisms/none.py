"""``privacy=none``, and every mechanism's ε = ∞ baseline: no clipping, no noise, and no DP claim.

Every default of :class:`~fedray.privacy.mechanisms.base.Mechanism` is this
behaviour; the allowlists are open (``claim=False``) because the run claims
nothing, and the ledger says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedray.privacy.mechanisms.base import Mechanism, register


@register
@dataclass(frozen=True)
class NonPrivate(Mechanism):
    name = "none"
