"""Error analysis of protocol records: category rates, 1st-try -> 2nd-try transitions, reflection statistics.

A protocol record (a row of a baseline or evaluate Parquet) has `first_category` (the verifier's
category of the 1st attempt: "correct" or an error category), `reflection`/`retry` (None when the
1st attempt was correct), `retry_category`, `reflection_tokens` and `second_correct`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from r3.tasks import CORRECT, Task


def final_category(record: dict) -> str:
    """The category after the 2nd try: correct if either try was, else the retry's error."""
    if record["second_correct"]:
        return CORRECT
    return record["retry_category"] or record["first_category"]


def category_rates(records: Sequence[dict], categories: Sequence[str]) -> dict:
    """Counts and rates (over all items) of every category, on the 1st try and after the 2nd."""
    n = len(records)
    out = {}
    for name, cats in (("first", [r["first_category"] for r in records]),
                       ("second", [final_category(r) for r in records])):
        counts = Counter(cats)
        out[name] = {c: {"count": counts.get(c, 0), "rate": round(counts.get(c, 0) / n, 4) if n else 0.0}
                     for c in (CORRECT, *categories)}
    return out


def transitions(records: Sequence[dict], categories: Sequence[str]) -> dict[str, dict[str, int]]:
    """For every failed 1st attempt: its error category -> the retry's category (correct = fixed).

    Rows are the 1st-try error categories, columns "correct" and the error categories; a row's
    off-diagonal error columns are errors the reflection turned into a different error.
    """
    table = {c: dict.fromkeys((CORRECT, *categories), 0) for c in categories}
    for r in records:
        if r["first_category"] != CORRECT and r["retry_category"] is not None:
            table[r["first_category"]][r["retry_category"]] += 1
    return table


def _words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts (1.0: no n-gram repeats; low: templated text)."""
    grams = [tuple(w[i:i + n]) for w in map(_words, texts) for i in range(len(w) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def has_repeated_line(text: str) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return len(lines) != len(set(lines))


def names_error(reflection: str, category: str, task: Task) -> bool:
    """Whether the reflection names the error the 1st attempt made (by the task's cue for the category)."""
    cue = task.error_cues.get(category)
    return bool(cue and re.search(cue, reflection, flags=re.IGNORECASE))


def reflection_stats(records: Sequence[dict], task: Task) -> dict:
    """Length, repetition and error-naming of the reflections written after failed 1st attempts."""
    refl = [r for r in records if r["reflection"] is not None]
    texts = [r["reflection"] for r in refl]
    if not texts:
        return {"n": 0}
    counts = Counter(texts)
    return {
        "n": len(texts),
        "tokens_mean": round(float(np.mean([r["reflection_tokens"] for r in refl])), 2),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "duplicate_rate": round(sum(counts[t] > 1 for t in texts) / len(texts), 4),
        "repeated_line_rate": round(sum(map(has_repeated_line, texts)) / len(texts), 4),
        "names_error_rate": round(
            sum(names_error(r["reflection"], r["first_category"], task) for r in refl) / len(refl), 4),
    }


def answer_rate(records: Sequence[dict], uses: Callable[[str], bool]) -> dict[str, float]:
    """Share of 1st attempts, and of retries, whose text `uses` something (e.g. countdown's unary minus).

    Every attempt counts in the denominator, answered or not; 0.0 when there is no attempt of a kind.
    """
    out = {}
    for name, texts in (("first", [r["first_attempt"] for r in records]),
                        ("retry", [r["retry"] for r in records if r["retry"] is not None])):
        out[name] = round(sum(map(uses, texts)) / len(texts), 4) if texts else 0.0
    return out
