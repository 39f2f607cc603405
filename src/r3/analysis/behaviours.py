"""Cognitive behaviours in model outputs (second paper): verification, backtracking, subgoal setting,
backward chaining. A classifier counts each behaviour in a text; `measure` applies one to every
attempt, reflection and retry of a protocol run.

Two classifiers share the `Classifier` interface: `rules` (here; offline, fast, the default) and
`llm` (an LLM judge, `r3.analysis.judge`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from r3.priming.countdown_traces import BEHAVIOURS  # the behaviours the priming traces are built from

# which texts of a protocol record are measured, by kind
TEXT_FIELDS = {"attempt": "first_attempt", "reflection": "reflection", "retry": "retry"}


class Classifier(ABC):
    name: str

    @abstractmethod
    def count(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """For each text, how many times it shows each behaviour ({behaviour: count})."""


def presence_scores(predicted: Sequence[dict[str, int]], gold: Sequence[dict[str, int]]) -> dict[str, dict]:
    """Per behaviour: precision and recall of "shows it at least once", and exact-count agreement."""
    out = {}
    for b in BEHAVIOURS:
        pairs = [(p[b] > 0, g[b] > 0) for p, g in zip(predicted, gold, strict=True)]
        tp = sum(p and g for p, g in pairs)
        out[b] = {"precision": round(tp / max(sum(p for p, _ in pairs), 1), 4),
                  "recall": round(tp / max(sum(g for _, g in pairs), 1), 4),
                  "exact": round(sum(p[b] == g[b] for p, g in zip(predicted, gold, strict=True))
                                 / max(len(gold), 1), 4),
                  "positives": sum(g for _, g in pairs), "n": len(pairs)}
    return out


def shares(counts: Sequence[dict[str, int]]) -> dict[str, float]:
    """Per behaviour, the share of texts that show it at least once (0.0 for no texts)."""
    return {b: round(sum(c[b] > 0 for c in counts) / max(len(counts), 1), 4) for b in BEHAVIOURS}


def measure(records: Sequence[dict], classifier: Classifier) -> dict[str, dict]:
    """Per text kind (attempt, reflection, retry) and behaviour: mean count per text and share of texts with one.

    Kinds with no texts (no failed attempts, so no reflections) are left out.
    """
    out = {}
    for kind, field in TEXT_FIELDS.items():
        texts = [r[field] for r in records if r[field] is not None]
        if not texts:
            continue
        counts = classifier.count(texts)
        share = shares(counts)
        out[kind] = {"n": len(texts)} | {
            b: {"mean": round(sum(c[b] for c in counts) / len(counts), 4), "share": share[b]} for b in BEHAVIOURS}
    return out
