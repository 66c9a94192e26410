"""The report's plots, drawn with matplotlib and embedded in report.html as PNG data URIs: quality against peak
memory with the Pareto frontier, training loss curves, and tokens/s per method."""

from __future__ import annotations

import base64
import io

from harness.core.units import MIB
from harness.report.seeds import label
from harness.spec.metrics import get_metric


def pyplot():
    """matplotlib's pyplot on the Agg backend: the report is drawn to files, never to a screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both memory (lower) and quality (better)."""
    sign = 1 if higher_is_better else -1
    front = []
    for i, (mem, q) in enumerate(points):
        dominated = any((m2 <= mem and sign * q2 >= sign * q) and (m2 < mem or sign * q2 > sign * q)
                        for j, (m2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def quality_vs_memory(task: str, recs: list[dict]) -> str | None:
    plt = pyplot()
    recs = [r for r in recs if r.get("metrics")]
    if not recs:
        return None
    metric = recs[0]["metrics"]["main_metric"]
    m = get_metric(metric)
    pts, labels, errs = [], [], []
    for r in recs:
        q = r["metrics"]["quality"].get(metric)
        if not q or q["value"] is None:
            continue
        pts.append((r["metrics"]["measurements"]["memory"]["peak_bytes"] / MIB, q["value"]))
        errs.append((q["value"] - (q["ci_low"] or q["value"]), (q["ci_high"] or q["value"]) - q["value"]))
        labels.append(r["method"])
    if not pts:
        return None
    front = pareto_front(pts, m.higher_is_better)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, ((x, y), lab) in enumerate(zip(pts, labels)):
        on = i in front
        ax.errorbar([x], [y], yerr=[[errs[i][0]], [errs[i][1]]], fmt="o", ms=8, capsize=3,
                    mfc="tab:red" if on else "white", mec="tab:red" if on else "tab:gray",
                    ecolor="tab:gray")
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.2, label="Pareto frontier")
    ax.set_xlabel("peak memory (MiB)")
    ax.set_ylabel(f"{metric} ({'higher' if m.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{task}: quality vs memory")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=.3)
    return png(fig)


def loss_curves(task: str, recs: list[dict]) -> str | None:
    plt = pyplot()
    curves = [(label(r, recs), r["train"]["loss_curve"]) for r in recs
              if r.get("train", {}).get("trained") and r["train"].get("loss_curve")]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves:
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title(f"{task}: training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=.3)
    return png(fig)


def throughput(task: str, recs: list[dict]) -> str | None:
    import numpy as np

    plt = pyplot()
    recs = [r for r in recs if r.get("metrics")]
    if not recs:
        return None
    names = [r["method"] for r in recs]
    train = [r["metrics"]["measurements"]["timing"]["train_tokens_per_s"] or 0 for r in recs]
    gen = [r["metrics"]["measurements"]["timing"]["generation_tokens_per_s"] or 0 for r in recs]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.bar(x - 0.2, train, 0.4, label="train tokens/s")
    ax.bar(x + 0.2, gen, 0.4, label="generation tokens/s")
    ax.set_xticks(x, names)
    ax.set_ylabel("tokens per second")
    ax.set_title(f"{task}: throughput")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=.3)
    return png(fig)
