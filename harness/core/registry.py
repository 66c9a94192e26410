"""Name -> object registries filled by a decorator (the lm-evaluation-harness / HELM pattern).

A registry is a plain dict. Registering a name twice raises; looking up an unknown name raises a
``ConfigError`` that lists the valid names, so a typo on the command line gets a useful one-line answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from harness.core.errors import ConfigError

T = TypeVar("T")


class Registry(dict):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj) -> None:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = obj

    def lookup(self, name: str):
        try:
            return self[name]
        except KeyError:
            valid = ", ".join(sorted(self))
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None
