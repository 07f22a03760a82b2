"""The audit's typed settings (``audit.*``), registered as ``schema/audit/audit`` for ``conf/audit/default.yaml``.

Light on purpose (no torch, no scipy): :mod:`fedray.config.schema` imports it,
through ``COMPONENT_PACKAGES``, before any config is composed.

Why :data:`MIN_CANARIES`: a one-run audit of m canaries certifies an ε > 0 at
95% only if its guesses could all be right by chance with probability below
5%; with m < 10 even m/2 correct guesses have p = 2^(-m/2) > 5%, so fewer
canaries are refused, not run for a bound that can only be 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedray.config.checks import Spec, boolean, choice, count, nonnegative_count, off_or_at_least, positive
from fedray.config.schema import ReadOnly, register_schema

MIN_CANARIES = 10


@register_schema("audit", "audit")
@dataclass
class AuditSettings(ReadOnly):
    enabled: bool = boolean()
    confidence: float = Spec.make(check="open_fraction")
    observer: str = choice("round", "step")
    canaries: int = off_or_at_least(MIN_CANARIES)
    input_canaries: int = off_or_at_least(MIN_CANARIES)
    gradient_canary_norm: float = positive()
    reference_models: int = nonnegative_count()
    max_records: int = count()


def inserted_record_slots(audit: AuditSettings) -> int:
    """The record slots the audit adds to the run (its input canaries), included or not: public, like a count."""
    return audit.input_canaries if audit.enabled else 0
