"""Accuracy summaries and bootstrap confidence intervals over items."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap CI of the mean, resampling items."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def protocol_metrics(records: Sequence[dict], categories: Sequence[str], seed: int = 0) -> dict:
    """The metrics of one protocol run: accuracies with CIs, error counts, reflection length."""
    n = len(records)
    first = [bool(r["first_correct"]) for r in records]
    second = [bool(r["second_correct"]) for r in records]
    retried = [r for r in records if r["retry"] is not None]
    first_cats = Counter(r["first_category"] for r in records)
    retry_cats = Counter(r["retry_category"] for r in retried)
    return {
        "n": n,
        "first_try_acc": round(sum(first) / n, 4) if n else 0.0,
        "second_try_acc": round(sum(second) / n, 4) if n else 0.0,
        "first_try_ci95": bootstrap_ci(first, seed=seed),
        "second_try_ci95": bootstrap_ci(second, seed=seed),
        "n_retried": len(retried),
        "retry_success_rate": round(sum(bool(r["retry_correct"]) for r in retried) / len(retried), 4)
        if retried else 0.0,
        "reflection_tokens_mean": round(float(np.mean([r["reflection_tokens"] for r in retried])), 2)
        if retried else 0.0,
        "first_try_errors": {c: first_cats.get(c, 0) for c in categories},
        "retry_errors": {c: retry_cats.get(c, 0) for c in categories},
    }


def paired_delta(before: Sequence[float], after: Sequence[float], n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, list[float]]:
    """Mean of `after - before` over the same items, with a paired percentile bootstrap CI."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired delta needs the same items: {a.shape} vs {b.shape}")
    return round(float((b - a).mean()), 4) if len(a) else float("nan"), bootstrap_ci(b - a, n_boot, seed, level)


def paper_table(vanilla: Sequence[dict], trained: Sequence[dict], seed: int = 0) -> dict:
    """The paper's table for one task: vanilla and trained 1st/2nd-try accuracies with CIs, and paired deltas.

    Records are protocol records with an `id`; the two runs must cover the same items.
    """
    by_id = {r["id"]: r for r in trained}
    if sorted(by_id) != sorted(r["id"] for r in vanilla):
        raise ValueError("vanilla and trained runs cover different test items")
    pairs = [(v, by_id[v["id"]]) for v in vanilla]
    table: dict = {"n": len(pairs)}
    for name, key in (("first", "first_correct"), ("second", "second_correct")):
        before = [float(v[key]) for v, _ in pairs]
        after = [float(t[key]) for _, t in pairs]
        for who, values in (("vanilla", before), ("trained", after)):
            table[f"{who}_{name}"] = round(sum(values) / len(values), 4) if values else 0.0
            table[f"{who}_{name}_ci95"] = bootstrap_ci(values, seed=seed)
        table[f"delta_{name}"], table[f"delta_{name}_ci95"] = paired_delta(before, after, seed=seed)
    return table
