"""ROUGE as the harness computes it for the cnn task: rouge-score F1 with Porter stemming, rougeLsum splitting
sentences on newlines, averaged over examples, with a 95% bootstrap CI (harness/spec/metrics.py rouge)."""

import evaluate

from harness.integrations.evaluate_metrics import BOOTSTRAP_ARGS, info, summary
from harness.spec.metrics import ROUGE_TYPES, rouge

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated summaries (str).
    references: list of reference summaries (str), one per prediction; highlight lines separated by newlines.
    rouge_types: which of rouge1, rouge2, rougeL, rougeLsum to compute (default: all four).
""" + BOOTSTRAP_ARGS + """Returns:
    {type: mean F1, type_ci_low: ..., type_ci_high: ...} for each ROUGE type.
"""
_CITATION = "Lin, C.-Y. (2004). ROUGE: A Package for Automatic Evaluation of Summaries."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HarnessRouge(evaluate.Metric):
    def _info(self):
        return info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string", references="string")

    def _compute(self, predictions, references, rouge_types=ROUGE_TYPES, bootstrap=1000, seed=0):
        return summary(rouge(predictions, references, tuple(rouge_types)), bootstrap, seed)
