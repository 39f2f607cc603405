"""The `rules` behaviour classifier against the frozen hand-labelled set and new hand-written outputs."""

import json
import time
from pathlib import Path

import pytest

from r3.analysis.behaviours import BEHAVIOURS, presence_scores
from r3.analysis.rules import RulesClassifier, count_behaviours

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


def test_rules_hold_on_the_hand_written_held_out_half(labelled):
    """The texts written by hand, in phrasings unlike the primed model's templates, that the rules were not written
    from. Floors are the measured values (precision 0.75-1.00, recall 0.42-0.80), below the design floors: see the
    next test."""
    rows = [r for r in labelled if r["split"] == "heldout" and r["source"] == "written"]
    scores = presence_scores(RulesClassifier().count([r["text"] for r in rows]), rows)
    for b in BEHAVIOURS:
        assert scores[b]["precision"] >= 0.75 and scores[b]["recall"] >= 0.40, (b, scores[b])


@pytest.mark.xfail(strict=True, reason="the rules miss natural phrasings of checks ('14, not 15', '(no)'), forward "
                   "subgoals ('aim for 45 first') and backward steps: recall 0.57 / 0.42 / 0.50 for verification / "
                   "subgoal_setting / backward_chaining, precision 0.83 / 0.75 for the last two, on the hand-written "
                   "held-out half")
def test_rules_meet_the_design_floors_on_the_hand_written_held_out_half(labelled):
    rows = [r for r in labelled if r["split"] == "heldout" and r["source"] == "written"]
    scores = presence_scores(RulesClassifier().count([r["text"] for r in rows]), rows)
    for b in BEHAVIOURS:
        assert scores[b]["precision"] >= PRECISION_FLOOR and scores[b]["recall"] >= RECALL_FLOOR, (b, scores[b])


# model-like outputs written for this test, not from the priming templates, labelled by the guide in
# tests/data/behaviours/README.md with the behaviours each shows
NEW_TEXTS = [
    ("<think>\nI have 8, 3 and 2, and I need 22.\n8 * 3 = 24, then 24 - 2 = 22. That equals 22, the target, and each "
     "number is used once.\n</think>\n<answer>8 * 3 - 2</answer>", "verification"),
    ("<think>\nTry 6 + 4 + 9 = 19. That's 7 short of 26.\nThis isn't going anywhere, so let me abandon addition and "
     "multiply instead.\n6 * 4 = 24, 24 + 9 = 33. Hmm, 33 is too big.\n(9 - 6) * 4 = 12, also not it.\n</think>",
     "verification backtracking"),
    ("<think>\nTarget 40 with [5, 2, 6].\nSince 40 = 8 × 5, I need to get 8 out of 2 and 6. 2 + 6 = 8, so "
     "(2 + 6) × 5 = 40.\n</think>\n<answer>(2 + 6) * 5</answer>", "subgoal_setting backward_chaining"),
    ("<think>\nNumbers: 3, 7, 10. Target: 31.\nMy plan is to build 21 first using 3 and 7, and then add the 10.\n"
     "3 * 7 = 21, 21 + 10 = 31.\n</think>\n<answer>3 * 7 + 10</answer>", "subgoal_setting"),
    ("<think>\n5 + 5 = 10, 10 * 3 = 30.\n</think>\n<answer>(5 + 5) * 3</answer>", ""),
    ("Let me check the instructions again: use each number once. Okay.\n<answer>4 * 6 - 1</answer>", ""),
    ("My answer used the 4 twice and never touched the 9, so it broke the rule that each number appears exactly once. "
     "Next time I should list the numbers before writing the equation.", "verification"),
    ("I forgot to wrap the equation in answer tags, so it could not be read. Next time I will put only the equation "
     "inside <answer></answer>.", ""),
    ("<think>\nStart with 9 * 9 = 81. Too large for 20, and dividing by 3 gives 27. Scrap that.\nNew idea: 9 + 9 = 18, "
     "18 + 3 = 21. One over.\n9 / 3 = 3, 3 + 9 = 12. Not enough either.\n</think>", "verification backtracking"),
    ("<think>\n36 = 4 * 9 and 9 = 3 * 3. So 4 * 3 * 3.\n</think>\n<answer>4 * 3 * 3</answer>", "backward_chaining"),
    ("Working from the target would have helped: 50 = 5 × 10, so what I actually needed was a 10 from the 7 and the "
     "3, which 7 + 3 gives.", "subgoal_setting backward_chaining"),
    ("<think>\n(10 - 4) * 3 = 18\nDouble-check: 10 - 4 = 6 and 6 * 3 = 18, matching the target of 18. All three "
     "numbers appear once.\n</think>\n<answer>(10 - 4) * 3</answer>", "verification"),
    ("<think>\n7 * 8 = 56 and 56 - 2 = 54, far from 10.\nThat line of attack goes nowhere; I'll switch to "
     "division.\n8 / 2 = 4, 4 + 7 = 11.\n</think>", "verification backtracking"),
    ("The answer is 12 + 3 - 5 = 10.\n<answer>12 + 3 - 5</answer>", ""),
    ("<think>\n[2, 5, 7] -> 17. To begin, I'll aim for a 10 by multiplying 2 and 5, then add 7.\n2 * 5 = 10, "
     "10 + 7 = 17.\n</think>\n<answer>2 * 5 + 7</answer>", "subgoal_setting"),
    ("<think>\n(9 - 3) * 4 looks right.\nSanity check, 9 - 3 = 6 and 6 * 4 = 24, so it lands on 24.\n</think>\n"
     "<answer>(9 - 3) * 4</answer>", "verification"),
]
# what the rules get wrong on them (measured when the texts were written; they were not tuned to the rules)
MISSED = {3: "a forward subgoal ('build 21 first')", 9: "a bare decomposition in a text that never names the target",
          10: "the subgoal in 'what I actually needed was a 10 from the 7 and the 3'",
          12: "'far from 10' and 'that line of attack goes nowhere'", 14: "a forward subgoal ('aim for a 10')"}


@pytest.mark.parametrize(("text", "shown"), [
    pytest.param(text, set(shown.split()), id=f"text{i}",
                 marks=[pytest.mark.xfail(strict=True, reason=f"the rules miss {MISSED[i]}")] if i in MISSED else [])
    for i, (text, shown) in enumerate(NEW_TEXTS)])
def test_rules_find_exactly_the_behaviours_of_new_model_like_outputs(text, shown):
    counts = count_behaviours(text)
    assert {b for b in BEHAVIOURS if counts[b] > 0} == shown


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
