"""Sizes and durations as users write them (8GiB, 16GB, 2h) and as the harness prints them, and the budget that
rules cells out of a recommendation (``--budget memory=16GiB,time=2h``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.core.errors import ConfigError

KIB, MIB, GIB = 2**10, 2**20, 2**30
UNITS = {"": 1, "b": 1, "k": KIB, "kb": 10**3, "kib": KIB, "m": MIB, "mb": 10**6, "mib": MIB,
         "g": GIB, "gb": 10**9, "gib": GIB, "t": 2**40, "tb": 10**12, "tib": 2**40}
TIME_UNITS = {"s": 1, "m": 60, "h": 3600}
BUDGET_EXAMPLE = "e.g. memory=16GiB,time=2h"


def parse_bytes(text: str, what: str = "size") -> int:
    """'8GiB' -> 8589934592, '16GB' -> 16e9, '512M' -> 512 MiB; one-line error otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} {text!r} is not a size; write e.g. 8GiB, 16GB or 512MiB")
    return int(float(m.group(1)) * UNITS[unit])


def parse_duration(text: str, what: str) -> float:
    """'90s', '30m', '2h' -> seconds; one-line error otherwise."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*([smh])", str(text).strip().lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} {text!r} is not a duration; write e.g. 90s, 30m or 2h")
    return float(m.group(1)) * TIME_UNITS[m.group(2)]


def size(n: float) -> str:
    """Three significant figures or so, enough to tell a peak from a budget near it."""
    return f"{n / GIB:.1f} GiB" if n >= 10 * GIB else f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / MIB:,.0f} MiB"


def duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"


@dataclass(frozen=True)
class Budget:
    """The most memory and wall time a cell may take to be recommended (``--budget``)."""

    memory_bytes: int | None = None
    time_s: float | None = None
    text: str = ""

    def over(self, peak: float | None, wall: float | None) -> str | None:
        """Why a cell with this peak memory and wall time is over the budget, or None when it fits."""
        why = []
        if self.memory_bytes is not None and peak is not None and peak > self.memory_bytes:
            why.append(f"peak {size(peak)} > {size(self.memory_bytes)}")
        if self.time_s is not None and wall is not None and wall > self.time_s:
            why.append(f"wall time {duration(wall)} > {duration(self.time_s)}")
        return " and ".join(why) or None


def parse_budget(text: str | None) -> Budget | None:
    """'memory=16GiB,time=2h' -> Budget; either key may be left out. One-line ConfigError when malformed."""
    if text is None:
        return None
    values: dict[str, str] = {}
    for item in str(text).split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"--budget {text!r} must be KEY=VALUE pairs, {BUDGET_EXAMPLE}")
        if key not in ("memory", "time"):
            raise ConfigError(f"--budget key {key!r} is not known; use memory= and/or time=, {BUDGET_EXAMPLE}")
        if key in values:
            raise ConfigError(f"--budget names {key} twice; give each of memory= and time= once")
        values[key] = value
    memory = parse_bytes(values["memory"], "--budget memory") if "memory" in values else None
    time_s = parse_duration(values["time"], "--budget time") if "time" in values else None
    return Budget(memory, time_s, str(text).strip())
