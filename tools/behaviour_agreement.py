"""How well the `rules` behaviour classifier agrees with human and construction labels.

Prints per-behaviour precision / recall (of "shows it at least once") and exact-count agreement on
the hand-labelled set (tests/data/behaviours/labelled.jsonl), per half and for real model outputs
vs written texts, then exact agreement with the construction labels of the priming traces of
every variant.

  python tools/behaviour_agreement.py
"""

import json
from pathlib import Path

from r3.analysis.behaviours import BEHAVIOURS, presence_scores
from r3.analysis.rules import RulesClassifier
from r3.priming import countdown_traces as ct
from r3.tasks import countdown

LABELLED = Path(__file__).resolve().parents[1] / "tests/data/behaviours/labelled.jsonl"


def table(title: str, rows: list[dict], predict) -> None:
    scores = presence_scores(predict([r["text"] for r in rows]), rows)
    print(f"\n{title} (n={len(rows)})")
    print(f"{'behaviour':20s} {'positives':>9s} {'precision':>9s} {'recall':>7s} {'exact':>6s}")
    for b in BEHAVIOURS:
        s = scores[b]
        print(f"{b:20s} {s['positives']:9d} {s['precision']:9.2f} {s['recall']:7.2f} {s['exact']:6.2f}")


def main():
    rules = RulesClassifier()
    labelled = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    for split in ("dev", "heldout"):
        rows = [r for r in labelled if r["split"] == split]
        table(f"{split} half", rows, rules.count)
        table(f"{split} half, real model outputs", [r for r in rows if r["source"] != "written"], rules.count)
        table(f"{split} half, written texts", [r for r in rows if r["source"] == "written"], rules.count)

    gen = {"num_numbers": [3, 4], "number_range": [1, 10], "target_range": [1, 100], "n_items": 60}
    items = [{"id": it.id, **it.inputs} for it in countdown.load_generated(gen, seed=3)]
    print("\npriming traces: exact-count agreement with the construction labels (200 traces per variant)")
    for variant in ct.VARIANTS:
        traces = ct.generate_traces(items, variant, 200, seed=5)
        s = presence_scores(rules.count([t.text for t in traces]), [t.behaviours for t in traces])
        print(f"{variant:28s} " + "  ".join(f"{b} {s[b]['exact']:.2f}" for b in BEHAVIOURS))


if __name__ == "__main__":
    main()
