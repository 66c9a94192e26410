"""Built-in tasks; importing this package registers them in ``harness.tasks.TASKS``."""

from tasks import cnn, fever, guanaco  # noqa: F401
