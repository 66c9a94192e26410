"""Name the method to use for each task, from the measured cells alone.

The rule: rule out every method over the ``--budget``; among the rest, find the best main metric; keep the
methods that are not significantly worse than it (the paired bootstrap of the report: the 95% CI of
method - best includes 0 or favours the method); of those, pick the lowest peak memory (peaks within 2% are a
tie), then the lowest cost: training seconds plus the eval seconds of 1,000 queries (harness/report/cost.py),
since a prompting row pays at every query and a trained row once. With several seeds a method's figures are means
over its seeds, its comparison uses every (seed, example) pair, and the budget (on each cell's own wall time) rules
it out when any of its cells is over.

Then, where the task has both, one sentence weighs the best method that only prompts against the best trained one
that prompts plainly (no shots, no retrieval; any trained one where none does): the share of the trained method's
quality it reaches with no training, at what multiple of its prompt tokens and eval seconds per query, and the
best method overall where it is neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.stats import mean_of
from harness.core.units import Budget, parse_budget
from harness.report.compare import paired_comparisons
from harness.report.cost import QUERIES, cost_of
from harness.report.seeds import collapse
from harness.spec.metrics import get_metric


# Peak memories closer than this share are a tie, and cost decides: LoRA, rsLoRA and LoRA+ keep the same tensors
# (benchmarks/memory_check.py measured the same peak for all three), yet their cells' peak RSS differed by 0.4%
# (2,371-2,380 MiB, docs/adapters-report.md), noise of the allocator and the libraries. 2% leaves room for other
# machines; the harness's choice, not a published figure.
PEAK_TIE = 0.02


@dataclass(frozen=True)
class Option:
    """One (task, method) as the rule sees it: means over its seeds, and its worst cell for the budget."""

    name: str
    trains: bool
    prompts: bool  # the method adds shots or passages to its prompts
    value: float
    ci: tuple
    peak: float | None
    over: str | None
    cost: dict  # harness/report/cost.py: train seconds, eval seconds and prompt tokens per query, and their total

    @classmethod
    def of(cls, row: dict, budget: Budget | None) -> Option:
        q = row["metrics"]["quality"][row["metrics"]["main_metric"]]
        method = row["config"]["method"]
        cells = row.get("seed_records") or [row]
        reasons = [budget.over(_peak(c), _wall(c)) for c in cells] if budget else []
        return cls(row["method"], method.get("finetune") != "none", bool(method.get("shots") or method.get("retrieve")),
                   q["value"], (q["ci_low"], q["ci_high"]), mean_of([_peak(c) for c in cells]),
                   next((r for r in reasons if r), None), cost_of(row))

    @property
    def total(self) -> float | None:
        """Training seconds plus the eval seconds of 1,000 queries."""
        return self.cost["total_s"]


@dataclass(frozen=True)
class Recommendation:
    task: str
    method: str | None  # None when nothing can be recommended
    best: str | None
    ruled_out: tuple = ()
    text: str = ""


def recommend(records: list[dict], budget: str | Budget | None = None, comparisons: list[dict] | None = None
              ) -> list[Recommendation]:
    """One recommendation per task of ``records`` (as harness.records.load.load_records returns them)."""
    if not isinstance(budget, Budget):
        budget = parse_budget(budget)
    if comparisons is None:
        n_boot = next((r["config"]["hyperparameters"].get("bootstrap", 1000) for r in records), 1000)
        comparisons = paired_comparisons(records, n_boot=n_boot)
    rows = collapse(records)
    out = []
    for task in dict.fromkeys(r["task"] for r in records):
        done = [r for r in rows if r["task"] == task and r.get("metrics")]
        done = [r for r in done if (r["metrics"]["quality"].get(r["metrics"]["main_metric"]) or {}).get("value")
                is not None]
        if not done:
            out.append(Recommendation(task, None, None, (), f"{task}: nothing to recommend: no method finished "
                                                           "with a value of the task's main metric."))
            continue
        out.append(_decide(task, done[0]["metrics"]["main_metric"], [Option.of(r, budget) for r in done], budget,
                           [c for c in comparisons if c["task"] == task]))
    return out


def paragraphs(records: list[dict], budget: str | Budget | None = None, comparisons: list[dict] | None = None
               ) -> dict[str, str]:
    """{task: paragraph} for the terminal, report.md and report.html."""
    return {r.task: r.text for r in recommend(records, budget, comparisons)}


def _decide(task: str, metric: str, options: list[Option], budget: Budget | None, rows: list[dict]
            ) -> Recommendation:
    m = get_metric(metric)
    ruled = [o for o in options if o.over]
    fits = [o for o in options if not o.over]
    why_out = ", ".join(f"{o.name} ({o.over})" for o in ruled)
    if not fits:
        return Recommendation(task, None, None, tuple(o.name for o in ruled),
                              f"{task}: nothing fits the budget ({budget.text}): {why_out}.")
    best = max(fits, key=lambda o: (m.gain(o.value, 0.0), -_inf(o.peak), -_inf(o.total)))
    within, worse, unpaired = [best], [], []
    for o in fits:
        if o is best:
            continue
        d = _diff(rows, o.name, best.name)
        if d is None:
            unpaired.append(o)
        elif m.gain(d[1], 0.0) < 0 and m.gain(d[2], 0.0) < 0:  # the whole CI says o is worse than best
            worse.append((o, d))
        else:
            within.append(o)
    pick = _cheapest(within)
    if pick is best:
        text = f"{task}: recommend {best.name}: the best {metric} ({best.value:.3f} [{_ci(best.ci)}])"
        dearer = [o for o in within if o is not best]
        if dearer:
            text += "; " + "; ".join(f"{o.name} is within its CI ({_d(_diff(rows, o.name, best.name))}) but needs "
                                     f"{_costs(o, best)}" for o in dearer)
        if worse:
            text += "; " + ", ".join(f"{o.name} is significantly worse ({_d(d)})" for o, d in worse)
        elif not dearer and not unpaired:
            text += ", the only method" + (" within the budget" if ruled else " measured")
        text += "."
    else:
        text = (f"{task}: recommend {pick.name}: {metric} within the CI of {best.name} "
                f"({_d(_diff(rows, pick.name, best.name))}) at {_costs(pick, best)}.")
    if not pick.trains and any(o.trains for o in fits):
        model = "The base model" if pick.name == "base" else f"The base model, prompted as {pick.name},"
        text += f" {model} wins: no fine-tuned method is significantly better on {metric}."
    text += _prompting_against_training(fits, best, m, metric, rows)
    if unpaired:
        text += (" Not compared with " + best.name + " (different eval data or too few shared examples), so left "
                 "out: " + ", ".join(o.name for o in unpaired) + ".")
    if ruled:
        text += f" Ruled out by the budget ({budget.text}): {why_out}."
    return Recommendation(task, pick.name, best.name, tuple(o.name for o in ruled), text)


def _cheapest(options: list[Option]) -> Option:
    """The lowest peak memory, where peaks closer than PEAK_TIE count as one: among those, the lowest cost, then
    the lower peak."""
    low = min(_inf(o.peak) for o in options)
    tied = [o for o in options if _inf(o.peak) <= low * (1 + PEAK_TIE)]
    return min(tied, key=lambda o: (_inf(o.total), _inf(o.peak)))


def _prompting_against_training(options: list[Option], best: Option, m, metric: str, rows: list[dict]
                                ) -> str:
    """' rag reaches 0.93x lora's f1 with no training (-0.040 [-0.090, +0.010], not significant), at 3.1x the
    prompt tokens and 1.4x the eval seconds per query (lora trained for 95 s).' Empty unless the task has a method
    that only prompts and one that trains."""
    prompt_only = [o for o in options if not o.trains]
    # Prompting against training alone: a trained method that also retrieves or shows shots mixes the two.
    trained = [o for o in options if o.trains and not o.prompts] or [o for o in options if o.trains]
    if not prompt_only or not trained:
        return ""
    p = max(prompt_only, key=lambda o: m.gain(o.value, 0.0))
    t = max(trained, key=lambda o: m.gain(o.value, 0.0))
    if m.higher_is_better and t.value > 0:
        text = f" {p.name} reaches {p.value / t.value:.2f}x {t.name}'s {metric} with no training"
    else:
        text = f" {p.name} scores {metric} {p.value:.3f} against {t.name}'s {t.value:.3f} with no training"
    d = _diff(rows, p.name, t.name)
    if d is not None:  # the paired difference, so that a ratio of two noisy figures is not read as a win
        text += f" ({_d(d)}{'' if d[1] > 0 or d[2] < 0 else ', not significant'})"
    pc, tc = p.cost or {}, t.cost or {}
    ratios = [f"{pc[k] / tc[k]:.1f}x the {what}" for k, what in (("prompt_tokens", "prompt tokens"),
                                                                 ("eval_s_per_query", "eval seconds per query"))
              if pc.get(k) and tc.get(k)]
    if ratios:
        text += ", at " + " and ".join(ratios)
    if tc.get("train_s"):
        text += f" ({t.name} trained for {tc['train_s']:.0f} s)"
    if best is not p and best is not t:
        text += f"; the best overall is {best.name} ({metric} {best.value:.3f})"
    return text + "."


def _diff(rows: list[dict], a: str, b: str) -> tuple | None:
    """(a - b, CI low, CI high, seeds) from the paired comparison rows, whichever way round they were made."""
    for r in rows:
        if (r["a"], r["b"]) == (a, b):
            return r["diff"], r["ci_low"], r["ci_high"], r.get("n_seeds", 1)
        if (r["a"], r["b"]) == (b, a):
            return -r["diff"] + 0.0, -r["ci_high"] + 0.0, -r["ci_low"] + 0.0, r.get("n_seeds", 1)  # no -0.000
    return None


def _d(d: tuple) -> str:
    seeds = f", {d[3]} seeds" if d[3] > 1 else ""
    return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]{seeds}"


def _costs(o: Option, ref: Option) -> str:
    """'0.31x its peak memory and 0.90x its cost (training s + eval s of 1,000 queries)' (ratios to ``ref``),
    leaving out what was not measured."""
    parts = []
    if o.peak and ref.peak:
        parts.append(f"{o.peak / ref.peak:.2f}x its peak memory")
    if o.total is not None and ref.total:
        parts.append(f"{o.total / ref.total:.2f}x its cost (training s + eval s of {QUERIES:,} queries)")
    return " and ".join(parts) or "no measured cost"


def _ci(ci: tuple) -> str:
    return ", ".join("-" if x is None else f"{x:.3f}" for x in ci)


def _peak(rec: dict) -> float | None:
    return rec["metrics"]["measurements"]["memory"].get("peak_bytes")


def _wall(rec: dict) -> float | None:
    """A cell's own wall time (training and evaluation), what --budget time= limits."""
    t = rec["metrics"]["measurements"]["timing"]
    return (t.get("train_s") or 0.0) + (t.get("eval_s") or 0.0)


def _inf(x: float | None) -> float:
    return float("inf") if x is None else x
