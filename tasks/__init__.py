"""The built-in task plugins: cnn (summarisation), guanaco (instruction following), fever (ReAct fact checking) and
qa (knowledge questions, from memory or retrieved passages).

Importing this package registers the tasks and their metrics; ``harness.spec.task.load_tasks`` does, through the
``llm_finetune_harness.tasks`` entry point in pyproject.toml, at the start of every program. A task imports only
harness.spec and harness.core (the plugin API); ``embedded`` holds the default data each task generates offline.
"""

from tasks import cnn, fever, guanaco, qa  # noqa: F401
