"""IFEval-style strict instruction checks as the harness runs them for the guanaco task (tasks/ifeval.py): the
prompt-level share of responses that pass every instruction, and the instruction-level share of all checks
passed, each with a 95% bootstrap CI. Instruction ids and kwargs use IFEval's own schema."""

import evaluate

from harness.integrations.evaluate_metrics import BOOTSTRAP_ARGS, info, summary
from tasks import ifeval

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of model responses (str).
    instruction_id_list: one list of IFEval instruction ids per response, e.g. ["keywords:existence"];
        an empty list leaves the response out of both metrics.
    kwargs: one list of keyword dicts per response, aligned with its ids, e.g. [{"keywords": ["rain"]}]
        (IFEval's None-valued keys are ignored). Default: no arguments for any instruction.
""" + BOOTSTRAP_ARGS + """Returns:
    ifeval_prompt_strict and ifeval_instruction_strict, each with _ci_low and _ci_high.
"""
_CITATION = "Zhou, J. et al. (2023). Instruction-Following Evaluation for Large Language Models. arXiv:2311.07911"


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HarnessIfeval(evaluate.Metric):
    def _info(self):
        # The instruction lists and their kwargs (dicts whose keys differ per instruction) go to _compute as
        # plain Python objects; only the responses pass through evaluate's Arrow buffer.
        return info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, predictions="string")

    def _compute(self, predictions, instruction_id_list, kwargs=None, bootstrap=1000, seed=0):
        if kwargs is None:
            kwargs = [[{} for _ in ids] for ids in instruction_id_list]
        return summary(ifeval.score(predictions, instruction_id_list, kwargs), bootstrap, seed)
