import pytest

from r3.analysis.errors import (
    answer_rate,
    category_rates,
    distinct_n,
    final_category,
    has_repeated_line,
    names_error,
    reflection_stats,
    transitions,
)
from r3.tasks import get_task
from r3.tasks.countdown import uses_unary_minus

CD = get_task("countdown")
CATS = CD.error_categories


def rec(first, retry=None, reflection=None, tokens=None):
    """A protocol record: 1st-try category, retry category (None if not retried)."""
    retried = first != "correct"
    return {"first_category": first, "first_correct": first == "correct",
            "retry_category": retry if retried else None, "retry_correct": retry == "correct" if retried else None,
            "second_correct": first == "correct" or retry == "correct",
            "reflection": (reflection or "I made a mistake.") if retried else None,
            "reflection_tokens": (tokens or 5) if retried else None}


RECORDS = [rec("correct"), rec("correct"), rec("missed_target", "correct"), rec("missed_target", "missed_target"),
           rec("missed_target", "wrong_numbers"), rec("wrong_numbers", "correct"),
           rec("invalid_equation", "invalid_equation"), rec("invalid_equation", "correct")]


def test_final_category_is_correct_if_either_try_was_else_the_retry_error():
    assert [final_category(r) for r in RECORDS] == ["correct", "correct", "correct", "missed_target", "wrong_numbers",
                                                    "correct", "invalid_equation", "correct"]


def test_category_rates_count_every_item_on_each_try():
    rates = category_rates(RECORDS, CATS)
    assert {c: v["count"] for c, v in rates["first"].items()} == {
        "correct": 2, "invalid_equation": 2, "wrong_numbers": 1, "missed_target": 3}
    assert {c: v["count"] for c, v in rates["second"].items()} == {
        "correct": 5, "invalid_equation": 1, "wrong_numbers": 1, "missed_target": 1}
    assert rates["first"]["missed_target"]["rate"] == 0.375
    assert sum(v["count"] for v in rates["second"].values()) == len(RECORDS)


def test_transitions_table_rows_are_first_errors_and_columns_retry_outcomes():
    t = transitions(RECORDS, CATS)
    assert t["missed_target"] == {"correct": 1, "invalid_equation": 0, "wrong_numbers": 1, "missed_target": 1}
    assert t["wrong_numbers"] == {"correct": 1, "invalid_equation": 0, "wrong_numbers": 0, "missed_target": 0}
    assert t["invalid_equation"]["correct"] == 1 and t["invalid_equation"]["invalid_equation"] == 1
    assert sum(sum(row.values()) for row in t.values()) == 6  # every retried item once; correct ones never


def test_distinct_n_and_repeated_lines():
    assert distinct_n(["a b c", "d e f"], 1) == 1.0
    assert distinct_n(["a b", "a b"], 2) == 0.5
    assert distinct_n([], 2) == 0.0
    assert has_repeated_line("check the sum\nother\n  check the sum ")
    assert not has_repeated_line("one\ntwo\n\n\n")


@pytest.mark.parametrize("category,text,named", [
    ("wrong_numbers", "I used 7 twice and left out 1.", True),
    ("wrong_numbers", "The result 13 misses the target 15.", False),
    ("missed_target", "The result 13 misses the target 15.", True),
    ("invalid_equation", "I put words inside the <answer> tags, so it could not be parsed.", True),
    ("invalid_equation", "I should be more careful.", False),
])
def test_names_error_uses_the_task_cue_of_the_actual_category(category, text, named):
    assert names_error(text, category, CD) is named


def test_function_calling_cues_name_its_categories():
    fc = get_task("function_calling")
    assert set(fc.error_cues) == set(fc.error_categories)
    assert names_error("I called the wrong function; get_weather was the right tool.", "wrong_tool", fc)
    assert names_error("The unit argument was missing.", "wrong_arguments", fc)
    assert not names_error("The unit argument was missing.", "format", fc)


def test_reflection_stats_on_fixed_reflections():
    records = [rec("wrong_numbers", "correct", "I used 7 twice.", 4),
               rec("wrong_numbers", "wrong_numbers", "I used 7 twice.", 4),
               rec("missed_target", "missed_target", "Be careful.\nBe careful.", 10),
               rec("correct")]
    s = reflection_stats(records, CD)
    assert s["n"] == 3
    assert s["tokens_mean"] == 6.0
    assert s["duplicate_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["repeated_line_rate"] == pytest.approx(1 / 3, abs=1e-4)
    # "twice" names wrong_numbers; "careful" names nothing
    assert s["names_error_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert reflection_stats([rec("correct")], CD) == {"n": 0}


def test_answer_rate_counts_first_attempts_and_retries_separately():
    def attempt(first, retry=None):
        return {"first_attempt": f"<answer>{first}</answer>", "retry": retry and f"<answer>{retry}</answer>"}

    records = [attempt("-3 + 5 + 2"), attempt("3 + 5 + 2"), attempt("3 - 5 + 2", "-3 + 5 + 2"),
               attempt("10 + -(5 + 2)", "10 - (5 + 2)"), attempt("oops", "5 - -3 - 2")]
    # 1st tries: 2 of 5 use a unary minus; retries: 2 of the 3 there are (None is no retry, not a miss)
    assert answer_rate(records, uses_unary_minus) == {"first": 0.4, "retry": round(2 / 3, 4)}
    assert answer_rate(records[:2], uses_unary_minus) == {"first": 0.5, "retry": 0.0}
    assert answer_rate([], uses_unary_minus) == {"first": 0.0, "retry": 0.0}
