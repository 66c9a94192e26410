"""The harness's own metrics as Hugging Face ``evaluate`` modules, loadable offline from a local path.

    import evaluate
    from harness.integrations.evaluate_metrics import path
    rouge = evaluate.load(path("harness_rouge"))
    rouge.compute(predictions=outputs, references=highlights)

``evaluate.load("rouge")`` fetches a script from the Hub (and fails offline); a local folder holding
``NAME/NAME.py`` is copied into the modules cache and imported with no network. Each module here is a thin
wrapper over the code the harness scores its cells with, so a user's own predictions get the same numbers
as ``metrics.json``: the value and its 95% percentile-bootstrap CI, with the harness's defaults (1000
resamples, seed 0; ``bootstrap=`` and ``seed=`` change them, as ``--bootstrap`` and ``--seed`` do).
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import ConfigError
from harness.spec.metrics import summarise

HERE = Path(__file__).resolve().parent
NAMES = ("harness_rouge", "harness_ifeval", "harness_fever")


def path(name: str) -> str:
    """The folder to pass to ``evaluate.load`` for one of ``NAMES``."""
    if name not in NAMES:
        raise ConfigError(f"unknown evaluate module {name!r}; choose from {', '.join(NAMES)}")
    return str(HERE / name)


def summary(values: dict[str, list], bootstrap: int, seed: int) -> dict[str, float | None]:
    """Per-example values -> {metric: value, metric_ci_low: ..., metric_ci_high: ...}, aggregated exactly as
    a cell's metrics.json (harness.spec.metrics.summarise)."""
    if bootstrap <= 0:
        raise ValueError(f"bootstrap must be a positive number of resamples, got {bootstrap}")
    out: dict[str, float | None] = {}
    for name, q in summarise(values, bootstrap, seed).items():
        out.update({name: q["value"], f"{name}_ci_low": q["ci_low"], f"{name}_ci_high": q["ci_high"]})
    return out


# The arguments every module here takes after its own (appended to each module's argument description).
BOOTSTRAP_ARGS = """    bootstrap: bootstrap resamples for the CI (default 1000, as --bootstrap).
    seed: bootstrap seed (default 0, as --seed).
"""


def info(description: str, arguments: str, citation: str, **features: str):
    """The module's ``evaluate.MetricInfo``: ``features`` maps each input that passes through evaluate's Arrow
    buffer to its type (the others reach ``_compute`` as plain Python objects)."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(description=description, citation=citation, inputs_description=arguments,
                               features=datasets.Features({k: datasets.Value(v) for k, v in features.items()}))
