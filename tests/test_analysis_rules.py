"""The `rules` behaviour classifier against the frozen hand-labelled set and the priming traces' labels."""

import json
import time
from pathlib import Path

import pytest

from r3.analysis.behaviours import BEHAVIOURS, presence_scores
from r3.analysis.rules import RulesClassifier, count_behaviours
from r3.priming import countdown_traces as ct
from r3.tasks import countdown

LABELLED = Path(__file__).parent / "data" / "behaviours" / "labelled.jsonl"
# floors on the held-out half (the rules were written looking at the dev half only); measured:
# precision 0.95-1.00, recall 0.77-0.96 (README of tests/data/behaviours and the issue note)
PRECISION_FLOOR, RECALL_FLOOR = 0.85, 0.70


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text().splitlines()]


def test_the_labelled_set_is_large_enough_and_mostly_real(labelled):
    assert len(labelled) >= 100
    assert sum(r["source"] != "written" for r in labelled) >= len(labelled) / 2 - 1
    assert len({r["id"] for r in labelled}) == len(labelled)
    for split in ("dev", "heldout"):
        rows = [r for r in labelled if r["split"] == split]
        for b in BEHAVIOURS:  # positives and negatives of every behaviour in both halves
            assert sum(r[b] > 0 for r in rows) >= 15 and sum(r[b] == 0 for r in rows) >= 15


@pytest.mark.parametrize("split", ["heldout", "dev"])
def test_rules_meet_precision_and_recall_floors(labelled, split):
    rows = [r for r in labelled if r["split"] == split]
    scores = presence_scores(RulesClassifier().count([r["text"] for r in rows]), rows)
    for b in BEHAVIOURS:
        assert scores[b]["precision"] >= PRECISION_FLOOR, (b, scores[b])
        assert scores[b]["recall"] >= RECALL_FLOOR, (b, scores[b])


def test_rules_hold_on_real_model_outputs_of_the_held_out_half(labelled):
    rows = [r for r in labelled if r["split"] == "heldout" and r["source"] != "written"]
    scores = presence_scores(RulesClassifier().count([r["text"] for r in rows]), rows)
    for b in BEHAVIOURS:
        assert scores[b]["precision"] >= PRECISION_FLOOR and scores[b]["recall"] >= RECALL_FLOOR, (b, scores[b])


@pytest.fixture(scope="module")
def traces() -> dict[str, list]:
    gen = {"num_numbers": [3, 4], "number_range": [1, 10], "target_range": [1, 100], "n_items": 60}
    items = [{"id": it.id, **it.inputs} for it in countdown.load_generated(gen, seed=3)]
    return {v: ct.generate_traces(items, v, 80, seed=5) for v in ct.VARIANTS}


def test_rules_agree_with_the_priming_traces_construction_labels(traces):
    for variant, ts in traces.items():
        scores = presence_scores(RulesClassifier().count([t.text for t in ts]), [t.behaviours for t in ts])
        for b in BEHAVIOURS:
            if b not in ct.ALLOWED[variant]:  # a behaviour the variant never shows is never found
                assert scores[b]["positives"] == 0 and scores[b]["exact"] == 1.0, (variant, b)
            elif b == "subgoal_setting":
                # the construction labels "…; then I need 6 from 8 and 2" as backward chaining only; the
                # labelling guide (and so the rules) also counts the stated intermediate goal
                assert scores[b]["exact"] >= 0.75, (variant, scores[b])
            else:
                assert scores[b]["exact"] >= 0.95, (variant, b, scores[b])


@pytest.mark.parametrize("text", [
    "", "   \n\n", "<answer></answer>", "🙂" * 50, "<script>alert(1)</script> check: ≠ ✓",
    "I will check the weather later and backtrack to the hotel.",
])
def test_hostile_and_empty_texts_give_counts(text):
    counts = count_behaviours(text)
    assert set(counts) == set(BEHAVIOURS) and all(isinstance(v, int) and v >= 0 for v in counts.values())


def test_no_behaviour_in_intentions_or_off_topic_uses_of_the_words():
    assert count_behaviours("Next time I should check the final value against the target.") == dict.fromkeys(
        BEHAVIOURS, 0)
    assert count_behaviours("No need to backtrack or start over on this one.\n3 + 5 = 8.")["backtracking"] == 0
    assert count_behaviours("I have to make 6 from 9, 8 and 5, each used once.") == dict.fromkeys(BEHAVIOURS, 0)


def test_long_degenerate_text_is_classified_in_bounded_time():
    text = ("Check: 1 + 1 = 2 " * 2000 + "\n") * 5 + "9" * 20000 + " = " * 5000
    start = time.perf_counter()
    counts = count_behaviours(text)
    assert time.perf_counter() - start < 10
    assert counts["verification"] >= 5
