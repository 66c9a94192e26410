"""Built-in tasks; importing this package registers them in ``harness.spec.task.TASKS``."""

from tasks import cnn, fever, guanaco  # noqa: F401
