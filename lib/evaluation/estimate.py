"""The one shape of a result that may be undefined: an `Estimate` (a value, or None with the reason),
collected by name into a `Section` (which may nest), which writes `metrics.json`'s values and its
`null_reasons` ("section.key": reason for every None leaf).

Undefined is never inf or NaN: a statistic with zero volatility, too few points or no trades is
`None` with a reason a user can read."""

from __future__ import annotations

import math
from typing import NamedTuple

UNDEFINED = "undefined"


class Estimate(NamedTuple):
    """A statistic that may be undefined: `value` is None exactly when `reason` is non-empty."""

    value: float | int | None
    reason: str = ""

    @classmethod
    def of(cls, value: float | None, reason: str = UNDEFINED) -> Estimate:
        """`value` as an Estimate: None, inf and NaN become None with `reason`; ints stay ints."""
        if value is None or not math.isfinite(value):
            return cls(None, reason or UNDEFINED)
        return cls(value if isinstance(value, int) else float(value))


Leaf = float | int | str | None


class Section:
    """Named results in the order they were put: Estimates, plain values (counts, dates) and nested Sections."""

    def __init__(self) -> None:
        self._items: dict[str, Estimate | Section | str] = {}

    def put(self, name: str, value: float | None, reason: str = "") -> None:
        """A number that may be undefined (None, inf, NaN: None with `reason`)."""
        self._items[name] = Estimate.of(value, reason)

    def add(self, name: str, item: Estimate | Section | str) -> None:
        """An Estimate, a nested Section or a plain string (a date, a name) under `name`."""
        self._items[name] = item

    def section(self, name: str) -> Section:
        """A new nested Section under `name`."""
        child = Section()
        self._items[name] = child
        return child

    def interval(self, name: str, ci: dict) -> None:
        """A bootstrap interval (resampling.bootstrap_ci's dict) as the nested pair `low`, `high`."""
        pair = self.section(name)
        reason = ci["reason"] or UNDEFINED
        pair.put("low", ci["low"], reason)
        pair.put("high", ci["high"], reason)

    def __getitem__(self, name: str) -> Estimate | Section | str:
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    @property
    def values(self) -> dict[str, Leaf | dict]:
        """The plain nested dict written to metrics.json (undefined values are None)."""
        return {k: v.values if isinstance(v, Section) else _plain(v) for k, v in self._items.items()}

    @property
    def reasons(self) -> dict[str, str]:
        """ "name.key" -> reason for every undefined leaf, nested names joined by dots, in order."""
        out: dict[str, str] = {}
        for k, v in self._items.items():
            if isinstance(v, Section):
                out |= {f"{k}.{name}": why for name, why in v.reasons.items()}
            elif isinstance(v, Estimate) and v.value is None:
                out[k] = v.reason
        return out


def _plain(item: Estimate | str) -> Leaf:
    return item.value if isinstance(item, Estimate) else item
