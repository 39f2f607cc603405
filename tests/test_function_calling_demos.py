"""Function-calling priming data: demonstrations and reflection dialogues, checked with the task's verifier."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from r3.dataset import Row
from r3.priming import function_calling_demos as fd
from r3.tasks.function_calling import CATEGORIES as BFCL_CATEGORIES
from r3.tasks.function_calling import assign_splits, load_bfcl, render_answer, verify
from r3.tasks.tool_calls import CLOSE, OPEN, extract_calls

PREFILLS = ["", "<tool_call>["]
WEATHER = {
    "inputs": {"messages": [{"role": "user", "content": "What's the weather in Paris?"}],
               "tools": [{"name": "get_weather", "description": "Get the current weather for a city.",
                          "parameters": {"type": "dict", "required": ["city"],
                                         "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}]},
    "ground_truth": {"calls": [{"name": "get_weather", "arguments": {"city": ["Paris"], "unit": ["", "celsius"]}}]},
}


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    items = load_bfcl({"categories": ["simple", "multiple", "parallel", "parallel_multiple", "live_simple"]}, seed=0)
    splits = assign_splits(items, {"train": 150, "test": 30}, seed=0)
    return [Row(it.id, splits[it.id], it.inputs, it.ground_truth) for it in items if it.id in splits]


@pytest.fixture(scope="module")
def train(rows) -> list[Row]:
    return [r for r in rows if r.split == "train"]


@pytest.fixture(scope="module")
def dialogues(train) -> dict[str, list[fd.ReflectionDialogue]]:
    return {p: fd.generate_reflection_dialogues(train, 3 * len(train), seed=5, prefill=p) for p in PREFILLS}


def weather_row(**changes) -> dict:
    return {"id": "w1", "split": "train", **WEATHER, **changes}


def inner_json(turn: str) -> str:
    return turn.split(OPEN, 1)[1].split(CLOSE, 1)[0]


def mentions(text: str, name: str) -> bool:
    """Whether a tool name occurs in text as a whole name, not inside a longer one (`foo` in `foo_v2` or
    `math.foo`); a dot that ends a sentence still closes the name."""
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w|\.\w)", text) is not None


def tool_swap(d: fd.ReflectionDialogue) -> tuple[list[str], list[str]]:
    """(wrong, right) tool names of a wrong_tool first attempt: those it calls beyond / short of the reference."""
    attempt = Counter(c["name"] for c in extract_calls(d.first_attempt))
    reference = Counter(c["name"] for c in extract_calls(render_answer(d.ground_truth)))
    return list(attempt - reference), list(reference - attempt)


def argument_change(d: fd.ReflectionDialogue) -> tuple[dict, str, dict, dict]:
    """(reference call, argument, its attempted arguments, its reference arguments) of a wrong_arguments attempt."""
    reference = extract_calls(render_answer(d.ground_truth))
    changed = [(r, k, c["arguments"], r["arguments"])
               for c, r in zip(extract_calls(d.first_attempt), reference, strict=True)
               for k in {*c["arguments"], *r["arguments"]} if c["arguments"].get(k) != r["arguments"].get(k)]
    assert len(changed) == 1, d.first_attempt  # one argument wrong
    return changed[0]


# ---------------------------------------------------------------- demonstrations


@pytest.mark.parametrize("prefill", PREFILLS)
def test_every_demo_verifies(train, prefill):
    demos = fd.generate_demos(train, 2 * len(train), seed=1, check_fraction=0.5, prefill=prefill)
    assert len(demos) == 2 * len(train) and Counter(d.id.rsplit("-demo-", 1)[0] for d in demos) == Counter(
        {r.id: 2 for r in train})  # without replacement, then cycles
    for d in demos:
        assert verify(d.text, d.ground_truth).correct, d.text
        assert d.text.startswith(prefill)
        assert d.has_check == d.text.startswith("Checking: ")
        assert d.text.endswith(render_answer(d.ground_truth))
        if prefill:
            assert not d.has_check and d.text == render_answer(d.ground_truth)
    if not prefill:
        assert 0.3 < sum(d.has_check for d in demos) / len(demos) < 0.7


def test_check_line_names_tools_and_required_arguments(train):
    for d in fd.generate_demos(train, len(train), seed=2, check_fraction=1.0):
        line, answer = d.text.split("\n", 1)
        assert d.has_check and "\n" not in answer and verify(answer, d.ground_truth).correct
        tools = {t["name"]: t for t in d.inputs["tools"]}
        for call in extract_calls(answer):
            assert f"`{call['name']}`" in line
            for arg in tools[call["name"]]["parameters"].get("required", []):
                assert f"{arg}=" in line or f"{arg} not given" in line, (arg, line)


def test_check_line_wording():
    text = fd.render_demo(WEATHER["ground_truth"], WEATHER["inputs"], with_check=True)
    assert text == ("Checking: `get_weather` fits the request (get the current weather for a city); required "
                    "argument city='Paris' present.\n"
                    '<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]'
                    "</tool_call>")
    assert fd.render_demo(WEATHER["ground_truth"], WEATHER["inputs"], True, prefill="<tool_call>[") == text.split(
        "\n")[1]  # a prefill must start the turn: no check line
    with pytest.raises(ValueError, match="prefix"):
        fd.render_demo(WEATHER["ground_truth"], WEATHER["inputs"], False, prefill="<tool_call>\n[")


def test_check_fraction_bounds_and_prefill(train):
    assert not any(d.has_check for d in fd.generate_demos(train, 30, seed=0, check_fraction=0.0))
    assert not any(d.has_check for d in fd.generate_demos(train, 30, 0, check_fraction=1.0, prefill="<tool_call>["))
    with pytest.raises(ValueError, match="check_fraction"):
        fd.generate_demos(train, 3, seed=0, check_fraction=1.5)


def test_demos_use_only_schema_parameters():
    """Over every loaded BFCL item (all categories): a demonstration never passes a parameter its tool lacks
    (BFCL data bugs such as parallel_multiple_12's `permeability` are dropped by the loader)."""
    items = load_bfcl({"categories": list(BFCL_CATEGORIES)}, seed=0)
    rows = [Row(it.id, "train", it.inputs, it.ground_truth) for it in items]
    demos = fd.generate_demos(rows, len(rows), seed=0, check_fraction=0.5)  # each verified on the way
    assert {d.id.rsplit("-demo-", 1)[0] for d in demos} == {r.id for r in rows}
    for d in demos:
        props = {t["name"]: t["parameters"]["properties"] for t in d.inputs["tools"]}
        for call in extract_calls(d.text):
            assert set(call["arguments"]) <= set(props[call["name"]]), (d.id, call)


# ---------------------------------------------------------------- reflection dialogues


@pytest.mark.parametrize("prefill", PREFILLS)
def test_first_attempts_get_their_category_and_retries_verify(dialogues, prefill):
    ds = dialogues[prefill]
    assert [d.category for d in ds] == [fd.CATEGORIES[i % 3] for i in range(len(ds))]
    for d in ds:
        assert verify(d.first_attempt, d.ground_truth).category == d.category, d.first_attempt
        assert verify(d.retry, d.ground_truth).correct, d.retry
        assert d.first_attempt.startswith(prefill) and d.retry.startswith(prefill)
    formats = [d.first_attempt for d in ds if d.category == "format"]
    if not prefill:  # tagless forms occur only without a prefill
        assert any(OPEN not in f for f in formats) and any(OPEN in f for f in formats)


@pytest.mark.parametrize("prefill", PREFILLS)
def test_reflections_name_the_concrete_error(dialogues, prefill):
    for d in dialogues[prefill]:
        if d.category == "wrong_tool":  # the evidence: the wrong tool called, and its own description if offered
            wrong, _ = tool_swap(d)
            assert wrong and all(f"`{n}`" in d.reflection for n in wrong), (d.first_attempt, d.reflection)
            tools = {t["name"]: t for t in d.inputs["tools"]}
            assert all(fd._purpose(tools[n]) in d.reflection for n in wrong if n in tools), d.reflection
        elif d.category == "wrong_arguments":  # the evidence: the argument, and the wrong value if one was passed
            call, arg, got, want = argument_change(d)
            assert f"`{arg}`" in d.reflection or f"{arg}=" in d.reflection, d.reflection
            assert not (arg in got and arg in want) or fd._val(got[arg]) in d.reflection, d.reflection  # changed
            assert f"`{call['name']}`" in d.reflection, d.reflection
        else:
            assert any(w in d.reflection for w in ("tag", "JSON", "]", "keys")), d.reflection
        assert inner_json(d.retry) not in d.reflection and OPEN + "[" not in d.reflection
        assert not verify(d.reflection, d.ground_truth).correct  # the retry could not copy the answer
        assert 1 <= d.reflection.count(". ") + 1 <= 3


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("prefill", PREFILLS)
def test_reflections_never_give_away_the_fix(train, seed, prefill):
    """A reflection names the error class and the failed attempt's evidence, never the fix: no right tool name for
    wrong_tool, no right value for a changed or omitted argument (values rendered in under 3 characters, such as 1
    or "a", are skipped: they occur in ordinary words and numbers)."""
    ds = fd.generate_reflection_dialogues(train, 60, seed=seed, prefill=prefill)
    checked = Counter()
    for d in ds:
        if d.category == "wrong_tool":
            wrong, right = tool_swap(d)
            for name in right:
                assert not mentions(d.reflection, name), (name, d.reflection)
                checked["tool"] += 1
                checked["tool inside the wrong name"] += any(name in w for w in wrong)
        elif d.category == "wrong_arguments":
            _, arg, got, want = argument_change(d)
            if arg not in want:  # an extra argument: there is no right value
                continue
            right = fd._val(want[arg])
            rest = d.reflection.replace(fd._val(got[arg]), "") if arg in got else d.reflection  # 100 in 1000
            if len(right) >= 3:
                assert right not in rest, (right, d.reflection)
                checked["value" if arg in got else "omitted"] += 1
    inside = checked["tool inside the wrong name"]  # invented names such as `foo_v2` for `foo`
    assert checked["tool"] >= 15 and 1 <= inside < checked["tool"], checked  # both kinds of wrong tool
    assert checked["value"] + checked["omitted"] >= 5, checked


def test_mentions_matches_whole_tool_names_only():
    assert mentions("I called `foo`.", "foo") and mentions("it is math.foo.", "math.foo")
    assert not mentions("I called `foo_v2`.", "foo") and not mentions("`math.foo` here", "foo")
    assert not mentions("`foo` here", "math.foo") and not mentions("`foo.bar` here", "foo")


def test_reflections_vary(dialogues):
    for category in fd.CATEGORIES:
        openings = {" ".join(d.reflection.split()[:2]) for d in dialogues[""] if d.category == category}
        assert len(openings) >= 3, (category, openings)


def test_wrong_tool_uses_an_offered_tool_or_an_invented_name():
    one_tool = fd.generate_reflection_dialogues([weather_row()], 2, seed=0)[1]
    name = extract_calls(one_tool.first_attempt)[0]["name"]
    assert name != "get_weather" and name.startswith("get_weather_") and f"`{name}`" in one_tool.reflection
    assert not mentions(one_tool.reflection, "get_weather"), one_tool.reflection  # not the right name
    tools = [*WEATHER["inputs"]["tools"], {"name": "get_time", "description": "Current time.", "parameters": {}}]
    two_tools = fd.generate_reflection_dialogues([weather_row(inputs={**WEATHER["inputs"], "tools": tools})], 2, 0)
    assert extract_calls(two_tools[1].first_attempt)[0]["name"] == "get_time"
    reflection = two_tools[1].reflection  # the wrong tool and its own purpose, not the right tool
    assert "`get_time`" in reflection and "(current time)" in reflection and not mentions(reflection, "get_weather")


def test_an_item_that_cannot_make_a_category_is_skipped(train):
    no_calls = weather_row(id="empty", ground_truth={"calls": []})
    ds = fd.generate_reflection_dialogues([no_calls, *train[:5]], 12, seed=0)
    assert [d.category for d in ds] == [fd.CATEGORIES[i % 3] for i in range(12)]
    assert not any(d.id.startswith("empty-") and d.category != "format" for d in ds)
    with pytest.raises(ValueError, match="wrong_tool"):
        fd.generate_reflection_dialogues([no_calls], 2, seed=0)


# ---------------------------------------------------------------- determinism and splits


def test_deterministic_for_a_seed(train):
    a = fd.generate_demos(train, 40, seed=3, check_fraction=0.5)
    assert a == fd.generate_demos(train, 40, seed=3, check_fraction=0.5)
    assert a != fd.generate_demos(train, 40, seed=4, check_fraction=0.5)
    assert fd.generate_demos(train, 20, seed=3, check_fraction=0.5) == a[:20]
    b = fd.generate_reflection_dialogues(train, 30, seed=3)
    assert b == fd.generate_reflection_dialogues(train, 30, seed=3)
    assert b != fd.generate_reflection_dialogues(train, 30, seed=4)
    assert fd.generate_reflection_dialogues(train, 12, seed=3) == b[:12]


def test_rows_may_be_dicts_with_json_strings(train):
    as_dicts = [{"id": r.id, "split": r.split, "inputs": json.dumps(r.inputs),
                 "ground_truth": json.dumps(r.ground_truth)} for r in train]
    assert fd.generate_demos(as_dicts, 10, seed=0) == fd.generate_demos(train, 10, seed=0)


@pytest.mark.parametrize("n", [0, 5])
def test_non_train_rows_are_rejected(rows, train, n):
    test_row = next(r for r in rows if r.split == "test")
    with pytest.raises(ValueError, match=test_row.id):
        fd.generate_demos([*train[:3], test_row], n, seed=0)
    with pytest.raises(ValueError, match=test_row.id):
        fd.generate_reflection_dialogues([*train[:3], test_row], n, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        fd.generate_demos(rows[:1], -1, seed=0)
