"""Evaluation beyond a cell's own task, on the cell's final model in memory.

``cross_task`` scores a trained model on every other task of the run (--cross-eval); ``lm_eval`` runs
lm-evaluation-harness benchmarks on it (--lm-eval, an optional extra imported only when asked for). Imports spec,
records and core; the cell stage calls it after its own evaluation.
"""
