"""Countdown task: safe parser, verifier categories, solver, generator, splits, prompts, hub errors."""

from __future__ import annotations

import os
import time

import pytest

from r3.errors import R3Error
from r3.tasks import arithmetic, countdown
from r3.tasks.base import Item, Task

GT = {"numbers": [3, 5, 7], "target": 22}
GEN = {"num_numbers": [3, 4], "number_range": [1, 10], "target_range": [1, 100], "n_items": 200}


def check(completion: str, gt=GT) -> tuple[bool, str]:
    v = countdown.verify(completion, gt)
    return v.correct, v.category


# ---------------------------------------------------------------- verifier categories


@pytest.mark.parametrize(
    "answer",
    ["3 * 5 + 7", "(3*5)+7", " 7 + 3 * 5 ", "(7 + (3 × 5))", "7+5*3", "\n3*5\t+7\n"],
)
def test_correct(answer):
    assert check(f"<think>hmm</think><answer>{answer}</answer>") == (True, "correct")


def test_non_integer_intermediate_hits_target_exactly():
    gt = {"numbers": [1, 3, 4, 6], "target": 24}
    assert check("<answer>6/(1-3/4)</answer>", gt) == (True, "correct")
    assert check("<answer>6 ÷ (1 − 3 ÷ 4)</answer>", gt) == (True, "correct")


def test_missing_tag_and_last_tag_wins():
    assert countdown.verify("3 * 5 + 7", GT).category == "invalid_equation"
    assert countdown.verify("3 * 5 + 7", GT).detail == "no <answer> tag"
    assert check("<answer>3+5+7</answer> wait <answer>3*5+7</answer>") == (True, "correct")
    assert check("<answer>3*5+7</answer> wait <answer>3+5+7</answer>") == (False, "missed_target")
    # an unclosed final tag (stop string stripped by the backend) is still read
    assert check("<answer> 3*5+7") == (True, "correct")


@pytest.mark.parametrize("answer", ["3 * 5 + 5", "3 * 5", "3 * 5 + 7 - 2 + 2", "3*5+7+0", "30 - 8"])
def test_wrong_numbers(answer):  # reuse, missing, extra, foreign numbers
    assert check(f"<answer>{answer}</answer>") == (False, "wrong_numbers")


def test_missed_target_detail():
    v = countdown.verify("<answer>3 + 5 + 7</answer>", GT)
    assert (v.correct, v.category, v.detail) == (False, "missed_target", "= 15, target 22")
    assert countdown.verify("<answer>3 / 5 + 7</answer>", GT).detail == "= 38/5, target 22"


def test_division_by_zero_is_invalid():
    gt = {"numbers": [3, 5, 5], "target": 1}
    assert check("<answer>3 / (5 - 5)</answer>", gt) == (False, "invalid_equation")
    assert check("<answer>1/0</answer>", {"numbers": [1, 0], "target": 1}) == (False, "invalid_equation")


@pytest.mark.parametrize(
    "answer",
    ["", "3 5 7", "(3 + 5", "3 + 5)", "3.0*5+7", "3*5+7 = 22", "x", "3 +* 5", "+3 + 5 + 7", "3 -"],
)
def test_invalid_equations(answer):
    assert check(f"<answer>{answer}</answer>")[1] == "invalid_equation"


# ---------------------------------------------------------------- unary minus (data.countdown.unary_minus)

ON, OFF = {**GT, "unary_minus": True}, {**GT, "unary_minus": False}
UNARY = [("10 + -(5 + 2)", [10, 5, 2], 3), ("-3 + 5 + 2", [3, 5, 2], 4)]


@pytest.mark.parametrize("answer,numbers,target", UNARY)
def test_unary_minus_accepted_by_default_and_rejected_when_off(answer, numbers, target):
    gt = {"numbers": numbers, "target": target}
    assert check(f"<answer>{answer}</answer>", gt) == (True, "correct")  # no key: TinyZero's default
    assert check(f"<answer>{answer}</answer>", {**gt, "unary_minus": True}) == (True, "correct")
    v = countdown.verify(f"<answer>{answer}</answer>", {**gt, "unary_minus": False})
    assert (v.correct, v.category, v.detail) == (False, "invalid_equation", "unary minus is not allowed")


def test_unary_minus_numbers_are_the_unsigned_literals():
    # -3 uses the number 3 (TinyZero's \d+ regex): a reused 5 is still wrong_numbers, as is a left-out 7
    assert countdown.verify("<answer>-3 + 5 + 5</answer>", ON).detail == "used [3, 5, 5], given [3, 5, 7]"
    assert check("<answer>-3 + 5 + 5</answer>", ON) == (False, "wrong_numbers")
    assert check("<answer>-3 * 5</answer>", ON) == (False, "wrong_numbers")
    assert check("<answer>-3 + 5 + 7</answer>", ON) == (False, "missed_target")  # = 9
    assert check("<answer>-3 + 5 + 5</answer>", OFF) == (False, "invalid_equation")


# (answer, numbers, target, TinyZero's verdict): compute_score == 1.0 (correct) or not, worked out by
# running TinyZero's validate_equation + evaluate_equation (re.findall(r"\d+") and eval) on each case
TINYZERO = [
    ("10 + -(5 + 2)", [10, 5, 2], 3, True),
    ("-3 + 5 + 2", [3, 5, 2], 4, True),
    ("--3 + 5 + 2", [3, 5, 2], 10, True),  # Python: --3 == 3
    ("- - -3 + 5 + 2", [3, 5, 2], 4, True),
    ("3 - -5 * 2", [3, 5, 2], 13, True),  # unary minus binds tighter than *
    ("3 - - 5 + 2", [3, 5, 2], 10, True),
    ("2 * -3 + 5", [3, 5, 2], -1, True),
    ("-(3 - 5) * 2", [3, 5, 2], 4, True),
    ("-3 + -5 + -2", [3, 5, 2], -10, True),
    ("(-3)", [3], -3, True),
    ("-3 + 5 + 2", [3, 5, 2], 10, False),  # = 4
    ("-3 + 5 + 5", [3, 5, 2], 7, False),  # 5 twice
    ("-3 + 5", [3, 5, 2], 2, False),  # 2 left out
    ("3 -", [3], 3, False),  # not an expression
]


@pytest.mark.parametrize("answer,numbers,target,tinyzero", TINYZERO)
def test_unary_minus_agrees_with_tinyzero(answer, numbers, target, tinyzero):
    gt = {"numbers": numbers, "target": target}
    assert countdown.verify(f"<answer>{answer}</answer>", gt).correct is tinyzero


@pytest.mark.parametrize("gt", [ON, OFF])
def test_unary_plus_is_rejected_in_both_modes(gt):
    # a documented difference: TinyZero's eval accepts +3 (a no-op); here a unary '+' is invalid either way
    for answer in ("+3 * 5 + 7", "7 + +3 * 5", "3 * +5 + 7"):
        assert check(f"<answer>{answer}</answer>", gt) == (False, "invalid_equation")


def test_unary_minus_nesting_is_bounded():
    depth = arithmetic.MAX_DEPTH
    assert arithmetic.evaluate(arithmetic.parse("-" * depth + "3", unary_minus=True)) == 3  # an even run
    assert arithmetic.evaluate(arithmetic.parse("-(" * (depth // 2) + "3" + ")" * (depth // 2), unary_minus=True)) == 3
    # unary minuses count with parentheses: each case is within MAX_TOKENS and the paren limit alone
    for deep in ["-" * (depth + 1) + "3", "- " * 60 + "3", "-(" * 20 + "3" + ")" * 20, "(-" * 20 + "3" + ")" * 20]:
        with pytest.raises(arithmetic.ArithmeticParseError, match="nested deeper"):
            arithmetic.parse(deep, unary_minus=True)
    with pytest.raises(arithmetic.ArithmeticParseError, match="more than"):  # the token limit counts them too
        arithmetic.parse("-" * 100 + "3", unary_minus=True)


def test_parser_unary_minus_api():
    with pytest.raises(arithmetic.ArithmeticParseError, match="unary minus is not allowed"):
        arithmetic.parse("-3")  # off by default: the parser is strict unless asked
    e = arithmetic.parse("10 + −(5 + 2) * -1", unary_minus=True)  # '−' is an alias
    assert arithmetic.literals(e) == [10, 5, 2, 1]
    assert arithmetic.evaluate(e) == 17
    assert arithmetic.parse("--3", unary_minus=True) == arithmetic.Neg(arithmetic.Neg(arithmetic.Num(3)))
    # Python's precedence: the minus negates the factor 3, not the product
    assert arithmetic.parse("-3 * 5", unary_minus=True) == arithmetic.BinOp(
        "*", arithmetic.Neg(arithmetic.Num(3)), arithmetic.Num(5))


@pytest.mark.parametrize("completion,uses", [
    ("<think>x</think><answer>-3 + 5 + 2</answer>", True),
    ("<answer>10 + -(5 + 2)</answer>", True),
    ("<answer>3 - -2</answer>", True),
    ("<answer>10 - (5 + 2)</answer>", False),  # a binary minus only
    ("<answer>-3 +* 5</answer>", False),  # invalid either way
    ("-3 + 5 + 2", False),  # no answer
    (None, False),
])
def test_uses_unary_minus(completion, uses):
    assert countdown.uses_unary_minus(completion) is uses


def test_loaders_write_the_unary_minus_flag_into_every_ground_truth(monkeypatch):
    small = {**GEN, "n_items": 20}
    assert all(it.ground_truth["unary_minus"] is True for it in countdown.load_generated(small, seed=0))
    off = countdown.load_generated({**small, "unary_minus": False}, seed=0)
    assert all(it.ground_truth["unary_minus"] is False for it in off)
    assert countdown.verify("<answer>-3 + 5 + 2</answer>", {**off[0].ground_truth, "numbers": [3, 5, 2],
                                                             "target": 4}).category == "invalid_equation"
    with pytest.raises(R3Error, match="unary_minus"):
        countdown.load_generated({**small, "unary_minus": "yes"}, seed=0)
    datasets = pytest.importorskip("datasets")
    rows = [{"nums": [3, 5, 7], "target": 22}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *_a, **_k: datasets.Dataset.from_list(rows))
    hub = countdown.load_hub({"n_items": 1, "unary_minus": False}, seed=0)
    assert hub[0].ground_truth["unary_minus"] is False


# ---------------------------------------------------------------- hostile outputs


HOSTILE = [
    "__import__('os').system('x')",
    "9**9**9",
    "2**10**10",
    "2^10",
    "(" * 10_000 + "1" + ")" * 10_000,
    "(" * 40 + "3*5+7" + ")" * 40,
    "(" * 100_000,
    "1/0",
    "３ * ５ + ７",
    "٣ * ٥ + ٧",
    "3" * 5000,
    "1+" * 100 + "1",
    "1" * 10_000_000,
    "lambda: 0",
    "- " * 60 + "3",
    "-" * 100_000 + "3",
]


@pytest.mark.parametrize("answer", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_answers_are_rejected_fast(answer, monkeypatch):
    def boom(*_a, **_k):
        raise AssertionError("something was executed")

    monkeypatch.setattr(os, "system", boom)
    monkeypatch.setattr(os, "popen", boom)
    t = time.perf_counter()
    v = countdown.verify(f"<think>x</think><answer>{answer}</answer>", GT)
    assert time.perf_counter() - t < 1.0
    assert (v.correct, v.category) == (False, "invalid_equation")
    assert len(v.detail) < 100


def test_huge_completion_is_bounded():
    big = "<answer>" * 200_000 + "x" * 5_000_000 + "</answer" * 100_000
    for text in (big, "a" * 10_000_000, "<answer>3*5+7</answer>" + " " * 10_000_000):
        t = time.perf_counter()
        v = countdown.verify(text, GT)
        assert time.perf_counter() - t < 1.0
        assert not v.correct or text.startswith("<answer>3*5+7")


def test_parser_api_and_limits():
    e = arithmetic.parse("6/(1-3/4)")
    assert arithmetic.literals(e) == [6, 1, 3, 4]
    assert arithmetic.evaluate(e) == 24
    assert arithmetic.evaluate(arithmetic.parse("8 - 3 - 2")) == 3  # left associative
    assert arithmetic.evaluate(arithmetic.parse("8 / 4 / 2")) == 1
    for bad in [
        "(" * (arithmetic.MAX_DEPTH + 1) + "1" + ")" * (arithmetic.MAX_DEPTH + 1),
        "+".join(["1"] * 40),
        "1" * 13,
        "",
        "1/(2-2)",
    ]:
        with pytest.raises(arithmetic.ArithmeticParseError):
            arithmetic.evaluate(arithmetic.parse(bad))


# ---------------------------------------------------------------- solver


def test_solver():
    for nums, target in [([3, 5, 7], 22), ([1, 3, 4, 6], 24), ([25, 50, 75, 100], 125), ([2, 2], 1)]:
        sol = countdown.solve(nums, target)
        assert sol is not None
        assert countdown.verify(f"<answer>{sol}</answer>", {"numbers": nums, "target": target}).correct
    assert countdown.solve([1, 1, 1], 100) is None
    assert countdown.solve([2, 3], 7) is None
    reach = countdown.reachable_targets([1, 2])
    assert set(reach) == {3, 1, -1, 2}
    assert all(isinstance(v, int) for v in reach)


# ---------------------------------------------------------------- generator


def test_generator_deterministic_solvable_unique():
    a = countdown.load_generated(GEN, seed=1)
    assert a == countdown.load_generated(GEN, seed=1)
    assert a != countdown.load_generated(GEN, seed=2)
    assert len(a) == GEN["n_items"]
    assert len({it.group for it in a}) == len(a) == len({it.id for it in a})
    for it in a:
        assert it.source == "generated" and it.id.startswith("cd-")
        assert 3 <= len(it.inputs["numbers"]) <= 4
        assert all(1 <= n <= 10 for n in it.inputs["numbers"])
        assert 1 <= it.inputs["target"] <= 100
        assert countdown.verify(countdown.render_answer(it.ground_truth), it.ground_truth).correct


def test_generator_impossible_raises():
    with pytest.raises(R3Error, match="number_range"):
        countdown.load_generated(
            {"num_numbers": 3, "number_range": [1, 1], "target_range": [1, 100], "n_items": 5}, seed=0
        )
    with pytest.raises(R3Error, match="num_numbers"):
        countdown.load_generated({**GEN, "num_numbers": "three"}, seed=0)
    # a difficulty setting whose targets no numbers reach (3 numbers of 1-10 make at most 1000): no puzzle
    with pytest.raises(R3Error, match=r"only 0 unique puzzles exist for .*target_range=\[1001, 2000\]"):
        countdown.load_generated({"num_numbers": 3, "number_range": [1, 10], "target_range": [1001, 2000],
                                  "n_items": 8}, seed=0)


def test_generator_is_fast():
    countdown._values.cache_clear()  # time a cold start, not the solver cache of earlier tests
    countdown._targets_in.cache_clear()
    t = time.perf_counter()
    items = countdown.load_generated({**GEN, "n_items": 3000}, seed=3)
    assert len(items) == 3000
    assert time.perf_counter() - t < 20


# ---------------------------------------------------------------- splits, prompts, task


def test_assign_splits():
    items = countdown.load_generated(GEN, seed=0)
    sizes = {"train": 100, "validation": 30, "test": 50}
    s = countdown.assign_splits(items, sizes, seed=0)
    assert s == countdown.assign_splits(list(reversed(items)), sizes, seed=0)
    assert {k: list(s.values()).count(k) for k in sizes} == sizes
    assert set(s) <= {it.id for it in items}
    # test is stable when the train size changes
    s2 = countdown.assign_splits(items, {**sizes, "train": 60}, seed=0)
    assert {k for k, v in s.items() if v == "test"} == {k for k, v in s2.items() if v == "test"}
    assert s != countdown.assign_splits(items, sizes, seed=1)
    with pytest.raises(R3Error):
        countdown.assign_splits(items, {"train": 500, "validation": 0, "test": 0}, seed=0)


def test_assign_splits_keeps_groups_together():
    items = [Item(f"i{k}", {}, {}, "x", f"g{k // 2}") for k in range(20)]
    s = countdown.assign_splits(items, {"train": 10, "validation": 4, "test": 6}, seed=0)
    for k in range(0, 20, 2):
        assert s.get(f"i{k}") == s.get(f"i{k + 1}")


def test_render_prompt_and_answer():
    inputs = {"numbers": [3, 5, 7], "target": 22}
    msgs = countdown.render_prompt(inputs, "tinyzero")
    assert msgs == [
        {
            "role": "user",
            "content": (
                "Using the numbers [3, 5, 7], create an equation that equals 22. You can use basic "
                "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work "
                "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for "
                "example <answer> (1 + 2) / 3 </answer>."
            ),
        }
    ]
    concise = countdown.render_prompt(inputs, "concise")[0]["content"]
    assert "[3, 5, 7]" in concise and "22" in concise and "<answer>" in concise
    with pytest.raises(R3Error, match="tinyzero"):
        countdown.render_prompt(inputs, "fancy")
    assert countdown.render_answer({"solution": "3 * 5 + 7"}) == "<answer>3 * 5 + 7</answer>"


def test_task_entry():
    t = countdown.TASK
    assert isinstance(t, Task) and t.name == "countdown"
    assert t.error_categories == ("invalid_equation", "wrong_numbers", "missed_target")
    assert set(t.sources) == {"generated", "hub"} and t.stop_strings == ("</answer>",)
    assert set(t.prompt_styles) == {"tinyzero", "concise"}


# ---------------------------------------------------------------- hub (never touches the network)


def test_load_hub_failure_is_r3error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*_a, **_k):
        raise ConnectionError("no network\nat all")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(R3Error, match="use source: generated") as e:
        countdown.load_hub({"n_items": 5}, seed=0)
    assert "\n" not in str(e.value) and "Jiayi-Pan/Countdown-Tasks-3to4" in str(e.value)


def test_load_hub_with_fake_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"nums": [3, 5, 7], "target": 22},
        {"nums": [5, 3, 7], "target": 22},  # duplicate
        {"nums": [1, 1, 1], "target": 100},  # unsolvable: skipped
        {"nums": [1, 3, 4, 6], "target": 24},
    ]
    monkeypatch.setattr(datasets, "load_dataset", lambda *_a, **_k: datasets.Dataset.from_list(rows))
    items = countdown.load_hub({"n_items": 2}, seed=0)
    assert sorted(it.group for it in items) == ["1,3,4,6|24", "3,5,7|22"]
    assert all(it.source == "hub:Jiayi-Pan/Countdown-Tasks-3to4" for it in items)
    with pytest.raises(R3Error):
        countdown.load_hub({"n_items": 3}, seed=0)
