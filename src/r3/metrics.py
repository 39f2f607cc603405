"""Accuracy summaries and bootstrap confidence intervals over items."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from statistics import NormalDist

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


def pooled_paired_delta(before: dict[int, Sequence[float]], after: dict[int, Sequence[float]], n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict:
    """Mean of `after - before` over training seeds and the test items they share, with a two-level bootstrap CI.

    `before[s]` and `after[s]` are the per-item 0/1 correctness of training seed `s` before and after training,
    on the same test items in the same order for every seed. Each bootstrap replicate resamples the items with
    replacement (the same item indices for every seed, since the items are shared) and the seeds with
    replacement, so the CI reflects both the test-set sample and the seed-to-seed variation.
    Returns {"delta", "ci95": [lo, hi], "n_items", "n_seeds", "per_seed": {seed: delta}}.
    """
    if set(before) != set(after):
        bad = sorted(set(before) ^ set(after))[0]
        where = "before" if bad in before else "after"
        raise ValueError(f"pooled delta: seed {bad} is only in `{where}`; before and after need the same seeds")
    if not before:
        raise ValueError("pooled delta: no seeds")
    seeds = sorted(before)
    n_items = len(before[seeds[0]])
    for s in seeds:
        for side, values in (("before", before[s]), ("after", after[s])):
            if len(values) != n_items:
                raise ValueError(f"pooled delta: seed {s}: `{side}` has {len(values)} items, "
                                 f"seed {seeds[0]} has {n_items}; every seed needs the same test items")
    diffs = np.asarray([after[s] for s in seeds], dtype=float) - np.asarray([before[s] for s in seeds], dtype=float)
    out: dict = {"n_items": n_items, "n_seeds": len(seeds)}
    if n_items == 0:
        return {"delta": float("nan"), "ci95": [float("nan"), float("nan")], **out,
                "per_seed": {s: float("nan") for s in seeds}}
    rng = np.random.default_rng(seed)
    items = rng.integers(0, n_items, size=(n_boot, n_items))
    counts = np.bincount((items + n_items * np.arange(n_boot)[:, None]).ravel(),
                         minlength=n_boot * n_items).reshape(n_boot, n_items)
    per_seed_means = counts @ diffs.T / n_items  # (n_boot, n_seeds): each seed's mean on the resampled items
    picked = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    means = np.take_along_axis(per_seed_means, picked, axis=1).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"delta": round(float(diffs.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], **out,
            "per_seed": {s: round(float(d), 4) for s, d in zip(seeds, diffs.mean(axis=1), strict=True)}}


def minimum_detectable_effect(diffs: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a two-sided test at level `alpha` detects with probability `power`.

    `diffs` are per-item paired differences (after - before; averaged over seeds first when pooling seeds).
    MDE = (z_{1-alpha/2} + z_{power}) * sd(diffs, ddof=1) / sqrt(n), normal approximation.
    When the sample sd is 0 (every difference equal, e.g. all 0) or undefined (n = 1), it says nothing about
    the spread, so the per-item sd falls back to the binomial worst case of a paired difference of two 0/1
    outcomes: sqrt(2 * 0.25) = 0.7071 (two independent Bernoulli(0.5)).
    """
    x = np.asarray(diffs, dtype=float)
    if len(x) == 0:
        raise ValueError("minimum detectable effect: no differences")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"minimum detectable effect: alpha and power must lie in (0, 1), got {alpha}, {power}")
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    if sd < 1e-12:  # 0 up to float rounding
        sd = math.sqrt(2 * 0.25)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return round(z * sd / math.sqrt(len(x)), 4)
