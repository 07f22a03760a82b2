"""Every numeric and enum config field's constraint, and one walk that checks them all before Ray starts.

A constraint lives beside its field in :mod:`fedray.config.schema`
(``lr: float = positive()``). :func:`validate` walks the typed config and
raises one :class:`~fedray.errors.FedrayError` naming the key, the bad value
and an allowed example. The rules:

- numbers are finite (ε alone may be ``.inf``, the non-private baseline);
- counts are positive integers (``nonnegative_count`` allows 0);
- fractions lie in [0, 1] (``open_fraction``: in (0, 1));
- rates and scales (learning rate, clip norms) are > 0;
- enums take one of their listed values;
- ``off_or_at_least(m)`` counts are 0 (off) or at least m (a component
  states why its m, e.g. :mod:`fedray.audit.settings`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from fedray.errors import FedrayError


@dataclass(frozen=True)
class Spec:
    """What one field accepts; ``check`` names a rule in :data:`RULES`."""

    check: str
    choices: tuple = ()
    minimum: float = 0
    nullable: bool = False

    @staticmethod
    def make(**kwargs):
        return field(default=MISSING, metadata={"spec": Spec(**kwargs)})


def free():
    """No constraint beyond the field's type (structure, paths, free text)."""
    return field(default=MISSING)


def text():
    return Spec.make(check="text")


def path(nullable: bool = False):
    """A file or folder: a non-empty string that composition resolves to an absolute path (:func:`path_fields`)."""
    return field(default=MISSING, metadata={"spec": Spec(check="text", nullable=nullable), "path": True})


def is_path(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("path"))


def boolean():
    return Spec.make(check="boolean")


def choice(*choices: str, nullable: bool = False):
    return Spec.make(check="choice", choices=choices, nullable=nullable)


def count(*, minimum: int = 1, nullable: bool = False):
    return Spec.make(check="count", minimum=minimum, nullable=nullable)


def nonnegative_count():
    return Spec.make(check="count", minimum=0)


def positive(*, nullable: bool = False):
    return Spec.make(check="positive", nullable=nullable)


def nonnegative(*, nullable: bool = False):
    return Spec.make(check="nonnegative", nullable=nullable)


def fraction():
    return Spec.make(check="fraction")


def open_fraction():
    return Spec.make(check="open_fraction", nullable=True)


def epsilon():
    return Spec.make(check="epsilon")


def off_or_at_least(minimum: int):
    """0 (off) or an integer of at least ``minimum``."""
    return Spec.make(check="off_or_at_least", minimum=minimum)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _number(value) and math.isfinite(float(value))


# rule -> (accepts(value, spec), what it wants, an example value)
RULES = {
    "text": (lambda v, s: isinstance(v, str) and v.strip() != "", "a non-empty string", "name"),
    "boolean": (lambda v, s: isinstance(v, bool), "true or false", "true"),
    "choice": (lambda v, s: v in s.choices, "one of {choices}", "{first}"),
    "count": (lambda v, s: isinstance(v, int) and not isinstance(v, bool) and v >= s.minimum,
              "an integer >= {minimum}", "{minimum_example}"),
    "positive": (lambda v, s: _finite(v) and v > 0, "a finite number > 0", "0.1"),
    "nonnegative": (lambda v, s: _finite(v) and v >= 0, "a finite number >= 0", "0"),
    "fraction": (lambda v, s: _finite(v) and 0 <= v <= 1, "a number in [0, 1]", "0.5"),
    "open_fraction": (lambda v, s: _finite(v) and 0 < v < 1, "a number in (0, 1)", "0.001"),
    "momentum": (lambda v, s: _finite(v) and 0 <= v < 1, "a number in [0, 1)", "0.9"),
    "epsilon": (lambda v, s: _number(v) and not math.isnan(v) and v > 0,
                "a number > 0, or .inf for the non-private baseline", "1.0"),
    "off_or_at_least": (lambda v, s: isinstance(v, int) and not isinstance(v, bool) and (v == 0 or v >= s.minimum),
                        "0 (off) or an integer >= {minimum}", "{minimum_example}"),
}


def check_value(key: str, value: Any, spec: Spec) -> None:
    """One field against its :class:`Spec`; a violation is one FedrayError line."""
    if value is None and spec.nullable:
        return
    accepts, wants, example = RULES[spec.check]
    if accepts(value, spec):
        return
    fill = {"choices": ", ".join(map(str, spec.choices)), "first": spec.choices[0] if spec.choices else "",
            "minimum": int(spec.minimum), "minimum_example": max(int(spec.minimum), 1)}
    null = " (or null)" if spec.nullable else ""
    raise FedrayError(f"{key}={value!r} is not valid: use {wants.format(**fill)}{null}, "
                      f"e.g. {key}={example.format(**fill)}")


def validate(node: Any, prefix: str = "") -> None:
    """Check every constrained field of a typed config (sub)tree, depth first, in declaration order."""
    if not dataclasses.is_dataclass(node):
        return
    for f in dataclasses.fields(node):
        key = f"{prefix}{f.name}"
        value = getattr(node, f.name)
        spec = f.metadata.get("spec")
        if spec is not None:
            check_value(key, value, spec)
        validate(value, prefix=f"{key}.")
    _cross_field_checks(node, prefix)


def _cross_field_checks(node: Any, prefix: str) -> None:
    names = {f.name for f in dataclasses.fields(node)}
    if {"train", "val", "test"} <= names and prefix.endswith("split."):
        total = node.train + node.val + node.test
        if not math.isclose(total, 1.0, abs_tol=1e-6) or node.train <= 0:
            raise FedrayError(f"{prefix[:-1]}={{train: {node.train}, val: {node.val}, test: {node.test}}} must be "
                              f"fractions summing to 1 with train > 0, e.g. {prefix}train=0.7 {prefix}val=0.1 "
                              f"{prefix}test=0.2")
