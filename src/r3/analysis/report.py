"""Analysis of one task's protocol runs (one per policy) and the report built from it.

`analyze_task` computes everything (accuracies, error categories, transitions, reflection
statistics, behaviour counts); `summary_metrics` picks the key numbers for `dvc exp show`;
`plot_rows` gives the `dvc plots` data; `add_task_section` writes the task's part of the report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from r3.analysis.behaviours import BEHAVIOURS, Classifier, measure
from r3.analysis.document import Document
from r3.analysis.errors import category_rates, reflection_stats, transitions
from r3.metrics import paper_table, protocol_metrics
from r3.tasks import CORRECT, Task

TRIES = ("first", "second")
TRY_LABEL = {"first": "1st try", "second": "2nd try"}


def analyze_run(records: Sequence[dict], task: Task, classifier: Classifier, seed: int) -> dict:
    m = protocol_metrics(records, task.error_categories, seed)
    return {
        "accuracy": {k: m[k] for k in ("n", "first_try_acc", "first_try_ci95", "second_try_acc", "second_try_ci95",
                                       "n_retried", "retry_success_rate")},
        "categories": category_rates(records, task.error_categories),
        "transitions": transitions(records, task.error_categories),
        "reflections": reflection_stats(records, task),
        "behaviours": measure(records, classifier),
    }


def analyze_task(task: Task, runs: dict[str, list[dict]], vanilla: str, trained: str | None,
                 classifier: Classifier, seed: int) -> dict:
    """The full analysis of a task: per policy (in `runs` order), and the paired table vanilla -> trained."""
    out = {"task": task.name, "vanilla": vanilla, "trained": trained,
           "policies": {p: analyze_run(recs, task, classifier, seed) for p, recs in runs.items()}}
    if trained is not None:
        out["paper_table"] = paper_table(runs[vanilla], runs[trained], seed)
    return out


def summary_metrics(analysis: dict) -> dict:
    """The key numbers as flat-ish metrics: accuracies, deltas, category rates, behaviour averages."""
    out: dict = {}
    for policy, a in analysis["policies"].items():
        m = {"first_try_acc": a["accuracy"]["first_try_acc"], "second_try_acc": a["accuracy"]["second_try_acc"]}
        for t in TRIES:
            m[f"{t}_rate"] = {c: v["rate"] for c, v in a["categories"][t].items() if c != CORRECT}
        for kind in ("attempt", "reflection"):
            if kind in a["behaviours"]:
                m[f"{kind}_behaviours"] = {b: a["behaviours"][kind][b]["mean"] for b in BEHAVIOURS}
        if a["reflections"]["n"]:
            m["reflection"] = {k: a["reflections"][k] for k in ("tokens_mean", "distinct_2", "names_error_rate")}
        out[policy] = m
    if "paper_table" in analysis:
        out["delta"] = {k: v for k, v in analysis["paper_table"].items() if k.startswith("delta_")}
    return out


def plot_rows(analysis: dict) -> dict[str, list[dict]]:
    """Rows of the `dvc plots` data files: error-category rates and behaviour means per policy."""
    errors, behaviours = [], []
    for policy, a in analysis["policies"].items():
        for t in TRIES:
            for c, v in a["categories"][t].items():
                errors.append({"label": f"{policy} {TRY_LABEL[t]} {c}", "policy": policy, "try": t,
                               "category": c, "rate": v["rate"]})
        for kind, per in a["behaviours"].items():
            for b in BEHAVIOURS:
                behaviours.append({"label": f"{policy} {kind} {b}", "policy": policy, "kind": kind,
                                   "behaviour": b, "mean": per[b]["mean"]})
    return {"errors": errors, "behaviours": behaviours}


def transition_rows(records: Sequence[dict]) -> list[dict]:
    """One row per retried item (1st-try category, retry category): the `confusion` plot data."""
    return [{"first": r["first_category"], "retry": r["retry_category"]} for r in records
            if r["first_category"] != CORRECT and r["retry_category"] is not None]


# ---------------------------------------------------------------- the report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: Sequence[float]) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _bars(ax, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], values, width, label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups, rotation=15)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def _query(record: dict) -> str:
    messages = json.loads(record["prompt"])
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def pick_examples(records: Sequence[dict], fixed: bool, k: int) -> list[dict]:
    """Up to k failed 1st attempts whose retry succeeded (fixed) or failed, cycling over error categories."""
    pool = sorted((r for r in records if r["first_category"] != CORRECT and r["retry"] is not None
                   and bool(r["retry_correct"]) == fixed), key=lambda r: r["id"])
    by_cat: dict[str, list[dict]] = {}
    for r in pool:
        by_cat.setdefault(r["first_category"], []).append(r)
    out = []
    while len(out) < k and any(by_cat.values()):
        for rs in by_cat.values():
            if rs and len(out) < k:
                out.append(rs.pop(0))
    return out


def add_task_section(doc: Document, task: Task, analysis: dict, runs: dict[str, list[dict]],
                     curves: dict[str, list[tuple[int, float]]], examples: int) -> None:
    import matplotlib.pyplot as plt

    name, policies = task.name, analysis["policies"]
    vanilla, trained = analysis["vanilla"], analysis["trained"]
    doc.heading(name)

    doc.heading("Accuracy (the paper's table)", 3)
    doc.text(f"Test split, one greedy 1st attempt, a reflection and a retry per failed item; the 2nd try counts an "
             f"item correct if either try was. 95% bootstrap CIs over items, in brackets. Vanilla = {vanilla} "
             f"(training starts from it)" + (f"; trained = {trained}." if trained else "; no trained model."))
    rows = []
    for p, a in policies.items():
        acc = a["accuracy"]
        rows.append([p, acc["n"], _pct(acc["first_try_acc"]), _ci(acc["first_try_ci95"]), _pct(acc["second_try_acc"]),
                     _ci(acc["second_try_ci95"]), f"{acc['retry_success_rate']:.3f}",
                     a["reflections"].get("tokens_mean", "-")])
    doc.table(["policy", "n", "1st try", "95% CI", "2nd try", "95% CI", "retry success", "reflection tokens"], rows)
    if "paper_table" in analysis:
        t = analysis["paper_table"]
        doc.text(f"{trained} vs {vanilla}, paired bootstrap over the same {t['n']} items: 1st try "
                 f"{100 * t['delta_first']:+.1f} points {_ci(t['delta_first_ci95'])}, 2nd try "
                 f"{100 * t['delta_second']:+.1f} points {_ci(t['delta_second_ci95'])}.")

    doc.heading("Error categories", 3)
    cats = [CORRECT, *task.error_categories]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    _bars(ax, cats, {f"{p} {TRY_LABEL[t]}": [a["categories"][t][c]["rate"] for c in cats]
                     for p, a in policies.items() for t in TRIES}, "share of test items")
    ax.set_title(f"{name}: outcome categories, 1st try and after the 2nd")
    doc.figure(fig, f"{name}_errors", f"{name}: share of test items per category, per policy and try")
    doc.table(["policy", "try", *cats], [[p, TRY_LABEL[t], *(a["categories"][t][c]["count"] for c in cats)]
                                         for p, a in policies.items() for t in TRIES])

    doc.heading("Transitions: 1st-try error -> retry outcome", 3)
    doc.text("Rows: the error of the failed 1st attempt; columns: what the retry after the reflection got. The "
             "'correct' column is what reflection fixed; other columns off the diagonal are errors it changed into "
             "a different one.")
    for p, a in policies.items():
        doc.table([f"{p}: 1st try \\ retry", *cats],
                  [[c, *(a["transitions"][c][d] for d in cats)] for c in task.error_categories])

    doc.heading("Reflections", 3)
    keys = ("n", "tokens_mean", "distinct_1", "distinct_2", "duplicate_rate", "repeated_line_rate", "names_error_rate")
    doc.table(["policy", *keys], [[p, *(a["reflections"].get(k, "-") for k in keys)] for p, a in policies.items()])
    doc.text("distinct-n: distinct word n-grams over all n-grams of the policy's reflections (low = templated); "
             "duplicate_rate: reflections identical to another one; names_error_rate: reflections that name the "
             "error category their 1st attempt actually made (the task's error cues).")

    doc.heading("Cognitive behaviours", 3)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, kind in zip(axes, ("attempt", "reflection"), strict=True):
        present = {p: a["behaviours"][kind] for p, a in policies.items() if kind in a["behaviours"]}
        _bars(ax, [b.replace("_", " ") for b in BEHAVIOURS],
              {p: [per[b]["mean"] for b in BEHAVIOURS] for p, per in present.items()}, "mean count per text")
        ax.set_title(f"{name}: behaviours per {kind}")
    doc.figure(fig, f"{name}_behaviours", f"{name}: mean behaviour counts per 1st attempt and per reflection")
    rows = [[p, kind, a["behaviours"][kind]["n"], *(f"{a['behaviours'][kind][b]['mean']:.2f} "
                                                   f"({_pct(a['behaviours'][kind][b]['share'])})" for b in BEHAVIOURS)]
            for p, a in policies.items() for kind in a["behaviours"]]
    doc.table(["policy", "text", "n", *(b.replace("_", " ") for b in BEHAVIOURS)], rows)
    doc.text("Mean count per text (share of texts with at least one).")

    doc.heading("Training curves", 3)
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3))
        for ax, (metric, points) in zip(list(getattr(axes, "flat", [axes])), curves.items(), strict=True):
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".")
            ax.set_title(metric, fontsize=9)
            ax.set_xlabel("step")
        doc.figure(fig, f"{name}_training", f"{name}: {trained} training curves (DVCLive)")
    else:
        doc.text("No training curves found for this task.")

    # examples from the trained policy, else the first policy that has some (vanilla first)
    order = [p for p in (trained, vanilla, *policies) if p is not None]
    for fixed, title in ((True, "fixed by reflection"), (False, "where reflection did not help")):
        source = next((p for p in order if pick_examples(runs[p], fixed, 1)), order[0])
        doc.heading(f"Examples {title} ({source})", 3)
        picked = pick_examples(runs[source], fixed, examples)
        if not picked:
            doc.text("None in any policy of this run.")
        for r in picked:
            doc.example(f"{r['id']} (1st try: {r['first_category']}; retry: {r['retry_category']})",
                        {"query": _query(r), "1st attempt": r["first_attempt"], "reflection": r["reflection"],
                         "retry": r["retry"]})


def read_curves(live_dir: Path, metrics: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """Training curves logged by DVCLive: `plots/metrics/<name>.tsv`, a `step` column and the value last."""
    out = {}
    for metric in metrics:
        path = live_dir / "plots" / "metrics" / f"{metric}.tsv"
        if path.is_file():
            header, *lines = [line.split("\t") for line in path.read_text().splitlines() if line]
            step = header.index("step")
            out[metric] = [(int(f[step]), float(f[-1])) for f in lines]
    return out
