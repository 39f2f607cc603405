"""Countdown priming traces and reflection dialogues: verdicts, true arithmetic, exact behaviour labels."""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from r3.priming import countdown_traces as ct
from r3.tasks import countdown

GEN = {"num_numbers": [3, 4], "number_range": [1, 10], "target_range": [1, 100], "n_items": 60}
_NUM = r"\(?-?\d+(?:/\d+)?\)?"
_STATEMENT = re.compile(rf"({_NUM}) ([-+*/]) ({_NUM}) = ({_NUM})")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
EDGE_PUZZLES = [([3, 3, 8, 8], 24), ([1, 1, 2], 4), ([2, 5], 10), ([1, 1, 1, 1], 4), ([7, 7, 7], 7)]


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [{"id": it.id, **it.inputs} for it in countdown.load_generated(GEN, seed=3)]


@pytest.fixture(scope="module")
def traces(items) -> dict[str, list[ct.Trace]]:  # several seeds, every puzzle at least once per variant
    return {v: [t for seed in (11, 12, 13) for t in ct.generate_traces(items, v, 60, seed)] for v in ct.VARIANTS}


def value(s: str) -> Fraction:
    return Fraction(s.strip("()"))


def statements(text: str) -> list[tuple[Fraction, str, Fraction, Fraction]]:
    """Every narrated "a op b = c" in text (outside <answer> tags), as exact values."""
    text = re.sub(r"<answer>.*?</answer>", "", text, flags=re.DOTALL)
    return [(value(a), op, value(b), value(c)) for a, op, b, c in _STATEMENT.findall(text)]


def truth(t) -> dict:
    return {"numbers": list(t.numbers), "target": t.target}


# ---------------------------------------------------------------- traces


@pytest.mark.parametrize("variant", ct.VARIANTS)
def test_final_answer_verdict_and_format(traces, variant):
    for t in traces[variant]:
        verdict = countdown.verify(t.text, truth(t))
        if variant == "incorrect_with_behaviours":
            assert (verdict.correct, verdict.category) == (False, "missed_target"), t.text
        else:
            assert verdict.correct, t.text
        assert t.correct == verdict.correct and t.variant == variant
        if variant == "empty_cot":
            assert t.reasoning == "" and t.steps == () and t.text == f"<answer>{t.answer}</answer>"
        else:
            assert t.text == f"<think>\n{t.reasoning}\n</think>\n<answer>{t.answer}</answer>"
            assert t.reasoning == "\n".join(text for _, text in t.steps)
            assert t.steps[-1] == ("conclusion", t.steps[-1][1]) and t.answer in t.steps[-1][1]


@pytest.mark.parametrize("variant", ct.VARIANTS)
def test_every_narrated_computation_is_true(traces, variant):
    n_statements = 0
    for t in traces[variant]:
        for a, op, b, c in statements(t.reasoning):
            assert _OPS[op](a, b) == c, (t.reasoning, a, op, b, c)
            n_statements += 1
    assert n_statements > 0 or variant == "empty_cot"


@pytest.mark.parametrize("variant", ct.VARIANTS)
def test_labels_are_step_counts_and_respect_the_variant(traces, variant):
    for t in traces[variant]:
        kinds = Counter(kind for kind, _ in t.steps)
        assert t.behaviours == {b: kinds[b] for b in ct.BEHAVIOURS}
        assert {b for b, k in t.behaviours.items() if k} <= ct.ALLOWED[variant]
        assert all(str(t.target) in text for kind, text in t.steps if kind == "verification")
    if variant in ("negative_control", "empty_cot"):
        assert all(set(t.behaviours.values()) == {0} for t in traces[variant])


@pytest.mark.parametrize("variant", ["all_strategies", "backtracking_only", "backtracking_verification",
                                     "incorrect_with_behaviours"])
def test_backtracking_abandons_a_real_failed_computation(traces, variant):
    for t in traces[variant]:
        assert t.behaviours["backtracking"] >= 1
        for i, (kind, _) in enumerate(t.steps):
            if kind != "backtracking":
                continue
            j = i - 1
            while t.steps[j][0] == "verification":  # checks of the attempt may sit in between
                j -= 1
            attempt_kind, attempt = t.steps[j]
            assert attempt_kind == "attempt", t.reasoning
            computed = statements(attempt)
            assert len(computed) == len(t.numbers) - 1  # a complete combination of all the numbers
            assert computed[-1][3] != t.target, attempt
            for _, check in t.steps[j + 1:i]:  # a check names the failed value and the target
                assert str(computed[-1][3]) in check and str(t.target) in check


def test_all_strategies_shows_all_four_behaviours(traces):
    sample = traces["all_strategies"]
    assert all(t.behaviours["backtracking"] >= 1 and t.behaviours["verification"] >= 1 for t in sample)
    assert sum(t.behaviours["subgoal_setting"] > 0 for t in sample) > len(sample) / 2
    assert sum(t.behaviours["backward_chaining"] > 0 for t in sample) > len(sample) / 2
    # the final check restates the solution's arithmetic and the target
    for t in sample:
        assert t.steps[-2][0] == "verification" and str(t.target) in t.steps[-2][1]


def test_backtracking_verification_checks_the_final_equation(traces):
    for t in traces["backtracking_verification"]:
        assert t.steps[-2][0] == "verification" and t.behaviours["verification"] >= 2


def test_incorrect_traces_never_claim_a_success(traces):
    sample = traces["incorrect_with_behaviours"]
    assert sum(t.behaviours["subgoal_setting"] + t.behaviours["backward_chaining"] > 0 for t in sample) > 0
    for t in sample:
        kinds = [k for k, _ in t.steps]
        solution = kinds.index("solution")
        assert "verification" not in kinds[solution:]  # every check is of an abandoned attempt
        assert statements(t.steps[solution][1])[-1][3] != t.target
        assert not re.search(r"\b(yes|matches|correct)\b", t.reasoning, re.IGNORECASE)


def test_backward_chaining_starts_from_the_target(traces):
    for t in traces["all_strategies"] + traces["incorrect_with_behaviours"]:
        for kind, text in t.steps:
            if kind == "backward_chaining":
                a, op, b = re.search(rf"\b{t.target} (?:=|can be written as) ({_NUM}) ([-+*/]) ({_NUM})", text).groups()
                assert _OPS[op](value(a), value(b)) == t.target, text


def test_phrasing_varies(traces):
    sample = traces["all_strategies"][:50]
    first_lines = {re.sub(r"\d+", "N", t.reasoning.splitlines()[0]) for t in sample}
    assert len(first_lines) >= 4
    for kind in ("attempt", "backtracking", "verification", "solution", "conclusion"):
        shapes = {re.sub(r"\d+", "N", text).split(" N")[0] for t in sample for k, text in t.steps if k == kind}
        assert len(shapes) >= 3, (kind, shapes)


def test_deterministic_for_a_seed(items):
    for variant in ct.VARIANTS:
        assert ct.generate_traces(items, variant, 15, seed=4) == ct.generate_traces(items, variant, 30, seed=4)[:15]
    assert ct.generate_traces(items, "all_strategies", 15, 4) != ct.generate_traces(items, "all_strategies", 15, 5)


def test_only_the_given_train_items_are_used(items):
    by_id = {it["id"]: it for it in items}
    out = ct.generate_traces(items, "all_strategies", 2 * len(items) + 3, seed=0)  # cycles the items
    assert len(out) == 2 * len(items) + 3
    for t in out:
        item = by_id[t.id.split("-all_strategies-")[0]]
        assert (list(t.numbers), t.target) == (item["numbers"], item["target"])
    assert len({t.id for t in out}) == len(out)
    with pytest.raises(ValueError, match="train split"):
        ct.generate_traces(items[:3] + [{**items[3], "split": "test"}], "all_strategies", 5, seed=0)
    with pytest.raises(ValueError, match="unknown priming variant"):
        ct.generate_traces(items, "no_such_variant", 5, seed=0)
    with pytest.raises(ValueError, match="unknown priming variant"):
        ct.generate_trace([1, 2, 3], 6, "no_such_variant", random.Random(0))


@pytest.mark.parametrize("numbers,target", EDGE_PUZZLES)
def test_edge_puzzles(numbers, target):  # fractions needed (8 / (3 - 8 / 3)), two numbers, repeated numbers
    rng = random.Random(0)
    for variant in ct.VARIANTS:
        for _ in range(5):
            t = ct.generate_trace(numbers, target, variant, rng)
            assert t.correct == (variant != "incorrect_with_behaviours"), t.text
            assert all(_OPS[op](a, b) == c for a, op, b, c in statements(t.reasoning)), t.reasoning


# ---------------------------------------------------------------- reflection dialogues


@pytest.fixture(scope="module")
def dialogues(items) -> list[ct.ReflectionDialogue]:
    return ct.generate_reflection_dialogues(items, 90, seed=2)


def test_first_attempt_fails_with_the_declared_category(dialogues):
    assert [d.category for d in dialogues[:6]] == list(ct.CATEGORIES) * 2
    for d in dialogues:
        assert countdown.verify(d.first_attempt, truth(d)).category == d.category, d.first_attempt
        assert countdown.verify(d.retry, truth(d)).correct, d.retry
        assert d.retry.endswith("</answer>")
        assert all(_OPS[op](a, b) == c for a, op, b, c in statements(d.first_attempt + d.retry))


def test_invalid_attempts_cover_the_three_format_mistakes(dialogues):
    invalid = [d.first_attempt for d in dialogues if d.category == "invalid_equation"]
    assert any("<answer>" not in a for a in invalid)
    assert any(re.search(r"= \d+</answer>$", a) for a in invalid)
    assert any(re.search(r"<answer>[A-Za-z]", a) for a in invalid)


def test_reflection_names_the_concrete_mistake(dialogues):
    for d in dialogues:
        assert 1 <= len(re.findall(r"[.;!?](\s|$)", d.reflection)) <= 3, d.reflection
        answer = countdown.extract_answer(d.retry)
        assert answer not in d.reflection  # the fix is described, never handed to the retry to copy
        if d.category == "invalid_equation":
            assert "tags" in d.reflection
        elif d.category == "wrong_numbers":
            assert re.search(r"left out (one of the )?\d+", d.reflection), d.reflection
        else:
            value = countdown.verify(d.first_attempt, truth(d)).detail.split(",")[0].removeprefix("= ")
            assert value in d.reflection and str(d.target) in d.reflection, (d.reflection, value)


def test_reflection_phrasing_varies_and_is_deterministic(items, dialogues):
    shapes = {re.sub(r"\d+", "N", d.reflection)[:25] for d in dialogues}
    assert len(shapes) >= 6
    assert ct.generate_reflection_dialogues(items, 20, seed=2) == dialogues[:20]  # a smaller n is a prefix
    assert ct.generate_reflection_dialogues(items, 20, seed=3) != dialogues[:20]


def _tried(text: str, n_numbers: int) -> list[Fraction]:
    """The value of every complete combination narrated on one line of text."""
    return [c[-1][3] for line in text.split("\n") if len(c := statements(line)) == n_numbers - 1]


def test_retry_searches_afresh_and_never_repeats_a_tried_value(dialogues):
    for d in dialogues:
        first_values = set(_tried(d.first_attempt, len(d.numbers)))
        first_answer = countdown.extract_answer(d.first_attempt)
        retry_answer = countdown.extract_answer(d.retry)
        if d.category != "invalid_equation":  # a format error's retry may well give the same equation
            assert retry_answer != first_answer and f"<answer>{first_answer}</answer>" not in d.retry
        # every complete combination the retry abandons has a value the first attempt never reached
        abandoned = [v for v in _tried(d.retry, len(d.numbers)) if v != d.target]
        assert not first_values & set(abandoned), (d.first_attempt, d.retry)


def test_retry_is_a_search_with_a_deciding_check(dialogues):
    searched = 0
    for d in dialogues:
        think = d.retry.split("</think>")[0]
        assert re.search(r"(Let me check|Verify|Double-checking): .*" + str(d.target), think), d.retry
        searched += bool(re.search(r"backtrack|abandon|Dead end|Scratch that|doesn't work|different", think))
    assert searched > 0.8 * len(dialogues)


def test_reflection_quotes_the_failed_answer_not_the_new_one(dialogues):
    for d in dialogues:
        if d.category != "invalid_equation":
            assert countdown.extract_answer(d.first_attempt) in d.reflection, (d.first_attempt, d.reflection)
    claimed = [d for d in dialogues if d.category == "missed_target"
               and re.search(r"matches the target|It equals \d+ and uses", d.first_attempt)]
    assert claimed and all(re.search(r"claimed|said", d.reflection) for d in claimed)


def test_a_final_check_can_fail_and_its_outcome_is_the_computed_value(traces):
    outcomes: dict[str, set[bool]] = {}
    for t in traces["all_strategies"] + traces["backtracking_verification"]:
        for kind, text in t.steps:
            opening = re.match(r"(Let me check|Verify|Double-checking):", text)
            if kind != "verification" or not opening:
                continue
            reached = statements(text)[-1][3] == t.target
            claims = bool(re.search(r"\b(Yes|matches|and uses every)\b", text))
            assert claims == reached, text
            outcomes.setdefault(opening.group(1), set()).add(reached)
    assert outcomes == {o: {True, False} for o in ("Let me check", "Verify", "Double-checking")}
