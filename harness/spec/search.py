"""What a tuned method searches: each setting's range, grid or choices, written as data.

``--tune lr,lora_r`` names the settings; ``METHOD:lr=1e-4..1e-2`` writes a range and ``METHOD:lr=a|b|c`` a grid, on
the command line and in YAML. A setting a method does not have (``lora_r`` for ``full``) is left out of that method's
search, with the reason. The defaults:

* ``lr``: log-uniform over two decades around the method's own rate (a tenth of it to ten times it);
* ``lora_r``: 4, 8, 16, 32 or 64; ``lora_alpha``: 1 or 2 times the rank (the scale alpha / r that LoRA's authors
  and peft's rsLoRA notes discuss; 2x is the common default of 16/32);
* ``epochs``: 1 to 3;
* ``shots`` and ``retrieve``: 1 to twice the method's own count, where the method has them.

The search engine (harness/execute/search.py, Optuna) samples these; this module only says what they are, how one
is written, and how one looks one step past its edge (``Dim.extend``) when the best trial sits there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.core.errors import ConfigError

KEYS = ("lr", "lora_r", "lora_alpha", "epochs", "shots", "retrieve")
EXAMPLES = {"lr": "lr=1e-4..1e-2 or lr=3e-4|1e-3|3e-3", "lora_r": "lora_r=4|8|16", "lora_alpha": "lora_alpha=16|32",
            "epochs": "epochs=1..3", "shots": "shots=1|3|5", "retrieve": "retrieve=1..5"}
EDGE = 0.1  # a range's best sits at its edge when it lies in the outer tenth of the range (log scale for lr)


def in_order(by_key: dict) -> dict:
    """``by_key`` in the order of KEYS: a mapping read back from JSON comes with its keys sorted."""
    return {k: by_key[k] for k in KEYS if k in by_key}


@dataclass(frozen=True)
class Dim:
    """One searched setting, as a numeric range the sampler can widen: ``log`` (a float range on a log scale),
    ``int`` (whole numbers), ``pow2`` (powers of two between 2**low and 2**high, for ranks; with ``ratio``, multiples
    of the rank, for alpha), or ``grid`` (the values the user wrote, each tried in turn).

    The sampler sees each as a float or integer range (Optuna lets a range widen between trials; a categorical's
    choices may not change, so ranks are searched by their exponent); ``value`` turns a sampled number back into
    the setting."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    ratio: bool = False
    step: float | None = None  # a log range's widening factor: half its first width (a decade for the default two)

    def __post_init__(self):
        if self.kind == "log" and self.step is None:
            object.__setattr__(self, "step", math.sqrt(self.high / self.low))

    def describe(self) -> str:
        if self.kind == "log":
            return f"{self.key} {self.low:.3g}..{self.high:.3g} (log)"
        if self.kind == "int":
            return f"{self.key} {int(self.low)}..{int(self.high)}"
        if self.kind == "pow2":
            unit = " x lora_r" if self.ratio else ""
            return f"{self.key} {2 ** int(self.low)}..{2 ** int(self.high)}{unit} (powers of 2)"
        return f"{self.key} {'|'.join(f'{v:g}' for v in self.choices)} (grid)"

    def to_dict(self) -> dict:
        return {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "choices": list(self.choices),
                "ratio": self.ratio, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict) -> Dim:
        return cls(d["key"], d["kind"], d["low"], d["high"], tuple(d["choices"]), d["ratio"], d.get("step"))

    @property
    def span(self) -> tuple:
        """(low, high) of the number the sampler draws: the range, the exponents, or the grid's ends."""
        return (min(self.choices), max(self.choices)) if self.kind == "grid" else (self.low, self.high)

    @property
    def integer(self) -> bool:
        return self.kind in ("int", "pow2") or (self.kind == "grid" and self.key != "lr")

    def value(self, drawn, lora_r: int | None = None):
        """The setting a drawn number stands for (a pow2 exponent is raised; a ratio multiplies ``lora_r``)."""
        if self.kind != "pow2":
            return drawn
        v = 2 ** int(drawn)
        return v * lora_r if self.ratio and lora_r else v

    def show(self, drawn) -> str:
        """A drawn number as the setting it stands for, as the terminal and the report print it."""
        if self.kind == "pow2":
            return f"{2 ** int(drawn)}{' x lora_r' if self.ratio else ''}"
        return f"{drawn:.3g}" if self.kind == "log" else f"{drawn:g}"

    def edge(self, drawn) -> str | None:
        """"low" or "high" when the drawn number sits at that edge and the range can widen that way, else None."""
        lo, hi = self.span
        if lo == hi:
            return None
        if self.kind == "log" or (self.kind == "grid" and self.key == "lr"):
            lo, hi, v = math.log(lo), math.log(hi), math.log(drawn)
        else:
            v = drawn
        width = hi - lo
        if v <= lo + (EDGE * width if self.kind == "log" else 0):
            return "low" if self._lower(self.span[0]) is not None else None
        return "high" if v >= hi - (EDGE * width if self.kind == "log" else 0) else None

    def _lower(self, lowest):
        """The range's next value below ``lowest``, or None where there is none (a count stops at 1, a rank at
        2**0, alpha at the rank)."""
        if self.kind == "log":
            return lowest / self.step
        if self.kind == "pow2":
            return lowest - 1 if lowest - 1 >= 0 and not self.ratio else None
        if self.key == "lr":
            return float(f"{lowest / self._ratio('low'):.3g}")
        if self.key == "epochs":
            return None if lowest <= 1 else max(1, lowest - 1)
        return lowest - 1 if lowest - 1 >= 1 else None

    def _ratio(self, side: str) -> float:
        """A learning-rate grid's step at its ``side``: the ratio of its two values there."""
        values = sorted(self.choices)
        return values[1] / values[0] if side == "low" else values[-1] / values[-2]

    def extend(self, direction: str) -> Dim:
        """This setting one step further that way: a learning-rate range by half its first log width (a decade for the
        default two), a rank by one more power of 2, a count by half its width, a grid by its next value."""
        lo, hi = self.span
        if direction == "low":
            new_lo = self._lower(lo)
            if self.kind == "grid":
                return Dim(self.key, "grid", choices=(new_lo, *self.choices))
            return Dim(self.key, self.kind, new_lo, hi, ratio=self.ratio, step=self.step)
        if self.kind == "log":
            return Dim(self.key, "log", lo, hi * self.step, step=self.step)
        if self.kind == "pow2":
            return Dim(self.key, "pow2", lo, hi + 1, ratio=self.ratio)
        if self.kind == "int":
            return Dim(self.key, "int", lo, hi + max(1, int((hi - lo) // 2)))
        if self.key == "lr":
            new = float(f"{hi * self._ratio('high'):.3g}")
        else:
            values = sorted(self.choices)
            new = hi + (values[-1] - values[-2])
        return Dim(self.key, "grid", choices=(*self.choices, new))


@dataclass(frozen=True)
class Search:
    """A tuned method's search space: its settings, and those left out with the reason."""

    dims: dict = field(default_factory=dict)  # key -> Dim, in the order of KEYS
    left_out: dict = field(default_factory=dict)  # key -> why it does not apply to this method

    @property
    def is_grid(self) -> bool:
        return bool(self.dims) and all(d.kind == "grid" for d in self.dims.values())

    def grid(self) -> list[dict]:
        """Every point of a grid search, in the order the user wrote the values (the last key varying fastest)."""
        points = [{}]
        for key, d in self.dims.items():
            points = [{**p, key: v} for p in points for v in d.choices]
        return points

    def describe(self) -> str:
        return ", ".join(d.describe() for d in self.dims.values())

    def to_dict(self) -> dict:
        return {"dims": {k: d.to_dict() for k, d in self.dims.items()}, "left_out": dict(self.left_out)}


def applies(key: str, method) -> str | None:
    """Why ``key`` is not a setting of ``method`` (it is left out of its search), or None."""
    if key in ("lr", "epochs") and not method.trains:
        return f"{method.name} does not train"
    if key in ("lora_r", "lora_alpha") and method.finetune != "lora":
        return f"{method.name} trains no LoRA adapter"
    if key in ("shots", "retrieve") and getattr(method, key) is None:
        return f"{method.name} has no {key} (write {method.name}:{key}=K to give it some)"
    return None


def default_dim(key: str, method, cfg) -> Dim:
    """The default range of ``key`` for ``method`` (the module docstring says which)."""
    if key == "lr":
        lr = cfg.lr if cfg.lr is not None else method.lr
        return Dim("lr", "log", lr / 10, lr * 10)
    if key == "lora_r":
        return Dim("lora_r", "pow2", 2, 6)  # 4 to 64
    if key == "lora_alpha":
        return Dim("lora_alpha", "pow2", 0, 1, ratio=True)  # 1 or 2 times the rank
    if key == "epochs":
        return Dim("epochs", "int", 1, 3)
    own = getattr(method, key)
    return Dim(key, "int", 1, max(2, 2 * own))


def parse_dim(key: str, raw: str, where: str) -> Dim:
    """``a..b`` (a range: log-uniform for lr, whole numbers for the rest) or ``a|b|c`` (a grid) for ``key``."""
    if key not in KEYS:
        raise ConfigError(f"{where}: {key} cannot be searched; searchable settings: {', '.join(KEYS)}")
    example = EXAMPLES[key]
    if ".." in raw:
        parts = raw.split("..")
        if len(parts) != 2:
            raise ConfigError(f"{where}: {key}={raw} is not a range LOW..HIGH; write e.g. {example}")
        low, high = (_number(key, p, where, example) for p in parts)
        if not low < high:
            raise ConfigError(f"{where}: {key}={raw} runs from high to low; write the low end first, e.g. {example}")
        return Dim(key, "log", float(low), float(high)) if key == "lr" else Dim(key, "int", low, high)
    values = [_number(key, p, where, example) for p in raw.split("|")]
    if len(values) < 2 or len(set(values)) != len(values):
        raise ConfigError(f"{where}: a grid needs at least two different values, e.g. {example}")
    return Dim(key, "grid", choices=tuple(values))


def _number(key: str, raw: str, where: str, example: str):
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{where}: {key} value {raw!r} is not a number; write e.g. {example}") from None
    if key == "lr":
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where}: lr value {raw!r} is not a positive finite number; write e.g. {example}")
        return value
    if key == "epochs":
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{where}: epochs value {raw!r} is not a positive number; write e.g. {example}")
        return int(value) if value.is_integer() else value
    if not (value.is_integer() and value >= 1):
        raise ConfigError(f"{where}: {key} value {raw!r} is not a whole number of at least 1; write e.g. {example}")
    return int(value)


def resolve_search(method, written: dict, tuned: tuple, cfg) -> Search | None:
    """The search of ``method``: the dims written in its text (``written``: key -> Dim), then the default dim of each
    setting --tune names (``tuned``) that the method has; None when nothing is searched."""
    dims, left = {}, {}
    for key in KEYS:
        if key in written:
            why = applies(key, method) if key not in ("shots", "retrieve") else None
            if why:
                raise ConfigError(f"method {method.name}: {key} cannot be searched: {why}")
            dims[key] = written[key]
        elif key in tuned:
            why = applies(key, method)
            if why:
                left[key] = why
            else:
                dims[key] = default_dim(key, method, cfg)
    if not dims:
        return None
    return Search(dims, left)
