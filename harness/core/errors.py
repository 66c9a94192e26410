"""User-facing errors.

A ``HarnessError`` is a mistake the user can fix: the CLI prints its message as one line, with no traceback.
Each carries a ``kind`` so that a failed cell records *why* it failed in a form that can be counted.
"""


class HarnessError(Exception):
    """An error with a one-line message that names the bad thing and the fix."""

    kind = "error"


class ConfigError(HarnessError):
    kind = "config"


class DataError(HarnessError):
    kind = "data"


class ModelError(HarnessError):
    kind = "model"


class AdapterCheckError(HarnessError):
    """A check on the trained weights failed (harness/cell/weights.py): the message names the check and its numbers."""

    kind = "adapter_check"


class NonFiniteLossError(HarnessError):
    kind = "nan_loss"

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
