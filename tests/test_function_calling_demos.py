"""Function-calling priming data: demonstrations and reflection dialogues, checked with the task's verifier."""

from __future__ import annotations

import json
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
        reference = extract_calls(render_answer(d.ground_truth))
        if d.category == "wrong_tool":
            wrong = Counter(c["name"] for c in extract_calls(d.first_attempt)) - Counter(c["name"] for c in reference)
            right = Counter(c["name"] for c in reference) - Counter(c["name"] for c in extract_calls(d.first_attempt))
            assert all(f"`{n}`" in d.reflection for n in [*wrong, *right]), (d.first_attempt, d.reflection)
        elif d.category == "wrong_arguments":
            changed = {k for c, r in zip(extract_calls(d.first_attempt), reference, strict=True)
                       for k in {*c["arguments"], *r["arguments"]} if c["arguments"].get(k) != r["arguments"].get(k)}
            assert len(changed) == 1, d.first_attempt  # one argument wrong
            arg = changed.pop()
            assert f"`{arg}`" in d.reflection or f"{arg}=" in d.reflection, d.reflection
        else:
            assert any(w in d.reflection for w in ("tag", "JSON", "]", "keys")), d.reflection
        assert inner_json(d.retry) not in d.reflection and OPEN + "[" not in d.reflection
        assert not verify(d.reflection, d.ground_truth).correct  # the retry could not copy the answer
        assert 1 <= d.reflection.count(". ") + 1 <= 3


def test_reflections_vary(dialogues):
    for category in fd.CATEGORIES:
        openings = {" ".join(d.reflection.split()[:2]) for d in dialogues[""] if d.category == category}
        assert len(openings) >= 3, (category, openings)


def test_wrong_tool_uses_an_offered_tool_or_an_invented_name():
    one_tool = fd.generate_reflection_dialogues([weather_row()], 2, seed=0)[1]
    name = extract_calls(one_tool.first_attempt)[0]["name"]
    assert name != "get_weather" and name.startswith("get_weather_") and "`get_weather`" in one_tool.reflection
    tools = [*WEATHER["inputs"]["tools"], {"name": "get_time", "description": "Current time.", "parameters": {}}]
    two_tools = fd.generate_reflection_dialogues([weather_row(inputs={**WEATHER["inputs"], "tools": tools})], 2, 0)
    assert extract_calls(two_tools[1].first_attempt)[0]["name"] == "get_time"


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
