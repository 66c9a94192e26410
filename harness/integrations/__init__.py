"""Optional integrations, each in one module, each imported by the harness only when asked for.

``trackers`` (over ``tracker_backends``: MLflow, Weights & Biases, TensorBoard; --report-to) logs each cell where
users already look; ``evaluate_metrics`` ships the harness's own metrics as Hugging Face ``evaluate`` modules,
loadable offline. The third-party packages themselves are imported inside the functions that need them. Imports
tasks, spec, records and core.
"""
