"""Label accuracy and macro-F1 as the harness scores the fever task (tasks/fever.py, harness/core/stats.py): labels in
the usual spellings (SUPPORTS / REFUTES / NOT ENOUGH INFO, SUPPORTED, NEI, ...) are normalised first; a
prediction that is no label counts as wrong, and as the class NONE for macro-F1. Each with a 95% bootstrap CI."""

import evaluate

from harness.integrations.evaluate_metrics import BOOTSTRAP_ARGS, info, summary
from harness.spec.task import get_task
from tasks.react import normalize_label

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels (str); text that is no label counts as no answer.
    references: list of gold labels (str), one per prediction.
""" + BOOTSTRAP_ARGS + """Returns:
    label_accuracy and macro_f1, each with _ci_low and _ci_high.
"""
_CITATION = "Thorne, J. et al. (2018). FEVER: a Large-scale Dataset for Fact Extraction and VERification."


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HarnessFever(evaluate.Metric):
    def _info(self):
        return info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string", references="string")

    def _compute(self, predictions, references, bootstrap=1000, seed=0):
        gold = [normalize_label(r) for r in references]
        if None in gold:
            bad = references[gold.index(None)]
            raise ValueError(f"reference {bad!r} is not a label; use SUPPORTS, REFUTES or NOT ENOUGH INFO")
        records = [{"label": normalize_label(p), "reference": g} for p, g in zip(predictions, gold)]
        return summary(get_task("fever").score(records), bootstrap, seed)
