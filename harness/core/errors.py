"""User-facing errors.

A ``HarnessError`` is a mistake the user can fix: the CLI prints its message as one line, with no traceback.
Each carries a ``kind`` so that a failed cell records *why* it failed in a form that can be counted.
"""


class HarnessError(Exception):
    """An error with a one-line message that names the bad thing and the fix. Each subclass names its ``kind``
    in its class line: ``class DataError(HarnessError, kind="data")``."""

    kind = "error"

    def __init_subclass__(cls, kind: str = "", **kw):
        super().__init_subclass__(**kw)
        cls.kind = kind or cls.kind


class ConfigError(HarnessError, kind="config"):
    """A flag, setting or name that cannot work as given (an unknown task, a size that is no size, ...)."""


class DataError(HarnessError, kind="data"):
    """Data that cannot be read, or that does not fit the task's schema."""


class ModelError(HarnessError, kind="model"):
    """A model that cannot be resolved or loaded (a misspelt hub id, a folder without config.json, ...)."""


class AdapterCheckError(HarnessError, kind="adapter_check"):
    """A check on the trained weights failed (harness/cell/weights.py): the message names the check and its
    numbers."""


class NonFiniteLossError(HarnessError, kind="nan_loss"):
    def __init__(self, step: int, loss: float):
        super().__init__(f"training loss became {loss} at step {step}; lower --lr or check the data")
        self.step = step
        self.loss = loss


def classify(exc: BaseException) -> str:
    """Map any exception to a short error kind for the records and the final summary line."""
    if isinstance(exc, HarnessError):
        return exc.kind
    name = type(exc).__name__
    if name == "OutOfMemoryError" or isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    return "error"


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message, prefixed with its type unless it is one of ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, HarnessError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
