"""The metric registry. Each metric is registered once, with its direction and its aggregation.

Reports, the paired comparison and the regression gate read ``higher_is_better`` and ``aggregation`` from
here and nowhere else. Scorers produce per-example values; ``summarise`` aggregates them with a bootstrap CI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from harness.core.registry import Registry
from harness.core.stats import AGGREGATIONS, bootstrap_ci

METRICS = Registry("metric")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    aggregation: str = "mean"
    description: str = ""

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"metric {self.name}: unknown aggregation {self.aggregation!r}")

    def gain(self, new: float, old: float) -> float:
        """How much better ``new`` is than ``old`` in this metric's direction (negative when worse)."""
        return new - old if self.higher_is_better else old - new


def register_metric(name: str, higher_is_better: bool, aggregation: str = "mean", description: str = "") -> Metric:
    metric = Metric(name, higher_is_better, aggregation, description)
    METRICS.add(name, metric)
    return metric


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
for _name, _what in zip(ROUGE_TYPES, ("unigram", "bigram", "longest common subsequence",
                                      "summary-level LCS, sentences split on newlines")):
    register_metric(_name, True, "mean", f"ROUGE F1 ({_what}), rouge-score with Porter stemming")


# The reference answer's perplexity after the eval prompt (guanaco, qa): it moves with every change to what the
# model sees or has learned, even where the generated text scores the same, which is why the CI gate leans on it.
register_metric("ref_perplexity", False, "perplexity",
                "perplexity of the reference answers under the model, token-weighted over the eval split")

# A tuning cell's validation loss (harness/cell/job.py validate): per row, its completion's mean token negative
# log-likelihood; averaged over rows.
register_metric("loss", False, "mean", "validation loss: the mean over rows of each completion's mean token NLL")


def summarise(values: dict[str, list], n_boot: int, seed: int) -> dict:
    """Per-example values -> {metric: {value, ci_low, ci_high, n, higher_is_better, aggregation}}.

    A value of None means the metric does not apply to that example (e.g. an instruction check on a prompt
    without constraints); such examples are left out of that metric only. An empty metric has value None.
    """
    out = {}
    for name, vals in values.items():
        metric = get_metric(name)
        vals = [v for v in vals if v is not None]
        value = AGGREGATIONS[metric.aggregation](vals) if vals else float("nan")
        lo, hi = bootstrap_ci(vals, metric.aggregation, n_boot=n_boot, seed=seed)
        out[name] = {"value": _finite(value), "ci_low": _finite(lo), "ci_high": _finite(hi), "n": len(vals),
                     "higher_is_better": metric.higher_is_better, "aggregation": metric.aggregation}
    return out


def _finite(x: float):
    return None if x is None or math.isnan(x) else x


def get_metric(name: str) -> Metric:
    """The registered metric (tasks register theirs as they are loaded, harness.spec.task.load_tasks)."""
    return METRICS.lookup(name)


@lru_cache(maxsize=4)
def _scorer(types: tuple):
    from rouge_score import rouge_scorer

    # evaluate.load("rouge") fetches a script from the Hub and fails offline; rouge-score is what it wraps.
    return rouge_scorer.RougeScorer(list(types), use_stemmer=True)


def rouge(predictions: list[str], references: list[str], types: tuple = ROUGE_TYPES) -> dict[str, list]:
    """Per-example ROUGE F1. rougeLsum treats newlines as sentence boundaries, as in the CNN/DM highlights."""
    scorer = _scorer(tuple(types))
    out: dict[str, list] = {t: [] for t in types}
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)
        for t in types:
            out[t].append(scores[t].fmeasure)
    return out
