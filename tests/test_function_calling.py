"""Function calling: tool-call extraction on hostile output, comparison rules, BFCL loading and splits."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from r3.errors import R3Error
from r3.tasks import function_calling as fc
from r3.tasks.tool_calls import ToolCallFormatError, compare_calls, extract_calls

CALL = {"name": "area", "arguments": {"base": 10, "unit": "cm"}}


def tc(payload: object) -> str:
    return f"<tool_call>{json.dumps(payload)}</tool_call>"


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text",
    [
        tc([CALL]),
        tc(CALL),  # a single object instead of a list
        f"<tool_call>\n  {json.dumps([CALL])}\n</tool_call>",
        f"<tool_call>```json\n{json.dumps([CALL])}\n```</tool_call>",  # code fence inside the tag
        f"```\n<tool_call>{json.dumps([CALL])}</tool_call>\n```",  # code fence around the tag
        f"The user wants the area; base 10 is given.\n{tc([CALL])}\nDone.",  # text outside the tags
        f"<tool_call>{json.dumps([CALL])}",  # generation stopped at the stop string
        tc({"name": "area", "arguments": json.dumps(CALL["arguments"])}),  # arguments as a JSON string
    ],
)
def test_extract_accepts(text):
    assert extract_calls(text) == [CALL]


def test_extract_several_blocks_and_empty_list():
    other = {"name": "volume", "arguments": {}}
    assert extract_calls(f"{tc(CALL)}\n{tc([other])}") == [CALL, other]
    assert extract_calls("<tool_call>[]</tool_call>") == []


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot help with that.",  # prose only
        json.dumps([CALL]),  # no tags
        "__import__('os').system('x')",
        "<tool_call>__import__('os').system('x')</tool_call>",
        "<tool_call>[{'name': 'area'}]</tool_call>",  # python literal, not JSON
        '<tool_call>[{"name": "area", </tool_call>',  # invalid JSON
        "<tool_call></tool_call>",
        tc([{"name": "area", "arguments": [1, 2]}]),  # non-dict arguments
        tc([{"name": "area", "arguments": "not json"}]),
        tc([{"name": "area", "arguments": "[1]"}]),
        tc([{"arguments": {}}]),  # missing name
        tc([{"name": 3, "arguments": {}}]),
        tc([{"name": "area"}]),  # missing arguments
        tc([{"name": "area", "arguments": {}, "id": 1}]),  # extra key
        tc(["area"]),  # not an object
        tc(5),
        f"<tool_call>{json.dumps(CALL)} <tool_call>{json.dumps(CALL)}</tool_call>",  # reopened
        "<tool_call>" + "[" * 100_000,  # deep nesting, also over the size bound
        "<tool_call>" + "[" * 50 + "]" * 50 + "</tool_call>",  # deep nesting within the size bound
        tc({"name": "a", "arguments": json.dumps({"x": json.loads("[" * 40 + "]" * 40)})}),  # deep string
    ],
)
def test_extract_rejects(text):
    with pytest.raises(ToolCallFormatError):
        extract_calls(text)


def test_extract_bounded_on_huge_input():
    huge = tc([{"name": "a", "arguments": {"x": "y" * 10_000_000}}])  # a 10 MB answer
    start = time.perf_counter()
    with pytest.raises(ToolCallFormatError, match="longer than"):
        extract_calls(huge)
    with pytest.raises(ToolCallFormatError):
        extract_calls("[" * 99_000 + "<tool_call>" + "[" * 900)
    with pytest.raises(ToolCallFormatError):  # a backtracking fence regex would take minutes here
        extract_calls("<tool_call>```" + " " * 90_000 + "x")
    assert time.perf_counter() - start < 1.0


def test_extract_nesting_inside_strings_is_fine():
    call = {"name": "a", "arguments": {"pattern": "[" * 200 + "{" * 200}}
    assert extract_calls(tc(call)) == [call]


# ---------------------------------------------------------------- comparison


def exp(name: str, **args: list) -> dict:
    return {"name": name, "arguments": args}


def pred(name: str, **args: object) -> dict:
    return {"name": name, "arguments": args}


def test_compare_simple_and_optional_args():
    want = [exp("area", base=[10], unit=["units", ""])]
    assert compare_calls([pred("area", base=10)], want).correct  # optional omitted
    assert compare_calls([pred("area", base=10, unit="Units")], want).correct
    v = compare_calls([pred("area", base=10, unit="cm")], want)
    assert (v.correct, v.category) == (False, "wrong_arguments")
    assert "arg 'unit': got 'cm', allowed ['units', '']" in v.detail
    assert "missing arg 'base'" in compare_calls([pred("area")], want).detail
    assert "unexpected arg 'height'" in compare_calls([pred("area", base=10, height=2)], want).detail


def test_compare_numbers_bools_strings():
    assert compare_calls([pred("f", x=5.0)], [exp("f", x=[5])]).correct  # int vs float
    assert compare_calls([pred("f", x=5)], [exp("f", x=[5.0])]).correct
    assert not compare_calls([pred("f", x="5")], [exp("f", x=[5])]).correct
    assert not compare_calls([pred("f", x=True)], [exp("f", x=[1])]).correct  # bool is not a number
    assert not compare_calls([pred("f", x=1)], [exp("f", x=[True])]).correct
    assert compare_calls([pred("f", d="april 1 2024")], [exp("f", d=["April 1, 2024"])]).correct
    assert compare_calls([pred("f", s="New-York")], [exp("f", s=["new york"])]).correct
    assert compare_calls([pred("f", q="it's")], [exp("f", q=['it"s'])]).correct
    assert not compare_calls([pred("f", s="Boston")], [exp("f", s=["Austin"])]).correct


def test_compare_lists_and_dicts():
    assert compare_calls([pred("f", xs=[3, 4])], [exp("f", xs=[[3, 4]])]).correct
    assert not compare_calls([pred("f", xs=[4, 3])], [exp("f", xs=[[3, 4]])]).correct
    assert compare_calls([pred("f", xs=["A b"])], [exp("f", xs=[["ab"]])]).correct
    nested = exp("g", prefs=[{"size": ["large"], "milk": ["", "whole"], "pos": [{"x": 1.5, "y": 2}]}])
    pos = {"x": 1.5, "y": 2}
    assert compare_calls([pred("g", prefs={"size": "Large", "pos": pos})], [nested]).correct
    assert compare_calls([pred("g", prefs={"size": "large", "milk": "whole", "pos": pos})], [nested]).correct
    assert not compare_calls([pred("g", prefs={"size": "large"})], [nested]).correct  # missing nested key
    assert not compare_calls([pred("g", prefs={"size": "large", "pos": pos, "z": 1})], [nested]).correct


def test_compare_parallel_any_order():
    want = [exp("play", artist=["Taylor Swift"], t=[20]), exp("play", artist=["Maroon 5"], t=[15])]
    swapped = [pred("play", artist="Maroon 5", t=15), pred("play", artist="Taylor Swift", t=20)]
    assert compare_calls(swapped, want).correct
    same_twice = [pred("play", artist="Maroon 5", t=15), pred("play", artist="Maroon 5", t=15)]
    v = compare_calls(same_twice, want)
    assert (v.correct, v.category) == (False, "wrong_arguments")
    # a first-fit assignment would take the wrong call for the first expected one; backtracking must not
    loose = [exp("f", a=[1], b=["", 2]), exp("f", a=[1], b=[3])]
    assert compare_calls([pred("f", a=1, b=3), pred("f", a=1)], loose).correct


def test_compare_wrong_tool():
    want = [exp("a", x=[1]), exp("b", y=[2])]
    for got in ([], [pred("a", x=1)], [pred("a", x=1), pred("c", y=2)], [pred("a", x=1), pred("b", y=2)] * 2):
        v = compare_calls(got, want)
        assert (v.correct, v.category) == (False, "wrong_tool"), got


def test_verify_categories_and_never_raises():
    gt = {"calls": [exp("area", base=[10], unit=["units", ""])], "category": "simple"}
    assert fc.verify(fc.render_answer(gt), gt).correct
    reference = '<tool_call>[{"name": "area", "arguments": {"base": 10, "unit": "units"}}]</tool_call>'
    assert fc.render_answer(gt) == reference
    assert fc.verify("no call", gt).category == "format"
    assert fc.verify(tc([pred("volume", base=10)]), gt).category == "wrong_tool"
    assert fc.verify(tc([pred("area", base=11)]), gt).category == "wrong_arguments"
    junk_outputs = ["<tool_call>" * 1000, "<tool_call>[" + "{" * 40, "</tool_call><tool_call>"]
    for junk in [*junk_outputs, "\x00<tool_call>\ud800", None]:
        assert fc.verify(junk, gt).category == "format"


# ---------------------------------------------------------------- BFCL data, prompts, splits


@pytest.fixture(scope="module")
def bfcl_items():
    return fc.load_bfcl({"categories": list(fc.CATEGORIES)}, seed=0)


def test_bfcl_every_category_loads(bfcl_items):
    counts = Counter(it.source for it in bfcl_items)
    assert set(counts) == {f"bfcl:{c}" for c in fc.CATEGORIES}
    assert all(n > 0 for n in counts.values()), counts
    assert len({it.id for it in bfcl_items}) == len(bfcl_items)
    for it in bfcl_items:
        assert it.inputs["tools"] and it.inputs["messages"][-1]["role"] == "user"
        assert it.group == "|".join(sorted({t["name"] for t in it.inputs["tools"]}))


def test_bfcl_reference_answers_verify(bfcl_items):
    failures = {}
    for it in bfcl_items:
        v = fc.verify(fc.render_answer(it.ground_truth), it.ground_truth)
        if not v.correct:
            failures[it.id] = v
    assert not failures, f"{len(failures)} reference answers fail: {list(failures.items())[:5]}"


def test_bfcl_unknown_category():
    with pytest.raises(R3Error, match="nope.*available"):
        fc.load_bfcl({"categories": ["simple", "nope"]}, seed=0)


def test_render_prompt_styles(bfcl_items):
    it = next(i for i in bfcl_items if any(m["role"] == "system" for m in i.inputs["messages"]))
    own = next(m["content"] for m in it.inputs["messages"] if m["role"] == "system").strip()
    question = it.inputs["messages"][-1]["content"]
    tools = json.dumps(it.inputs["tools"], ensure_ascii=False)
    sys_msg, *rest = fc.render_prompt(it.inputs, "xlam")
    assert sys_msg["role"] == "system"
    assert sys_msg["content"].startswith("You are an expert in composing functions.")
    assert f"<tools>{tools}</tools>" in sys_msg["content"] and sys_msg["content"].endswith(own)
    assert [m["role"] for m in rest] == ["user"] and rest[0]["content"] == question
    (user,) = fc.render_prompt(it.inputs, "user")
    assert user["role"] == "user" and tools in user["content"] and own in user["content"]
    assert user["content"].endswith(question)
    assert it.inputs["messages"][-1]["content"] == question  # inputs not mutated
    with pytest.raises(R3Error, match="prompt style"):
        fc.render_prompt(it.inputs, "nope")


def test_split_by_function_no_leakage(bfcl_items):
    sizes = {"train": 1000, "validation": 150, "test": 300}
    splits = fc.assign_splits(bfcl_items, sizes, seed=0)
    assert splits == fc.assign_splits(list(reversed(bfcl_items)), sizes, seed=0)  # order-independent
    counts = Counter(splits.values())
    assert counts == sizes  # the bundled data is large enough for these sizes
    tools = {s: set() for s in sizes}
    for it in bfcl_items:
        if it.id in splits:
            tools[splits[it.id]] |= {t["name"] for t in it.inputs["tools"]}
    assert not tools["train"] & (tools["test"] | tools["validation"])
    assert not tools["validation"] & tools["test"]
    assert fc.assign_splits(bfcl_items, sizes, seed=1) != splits


def test_split_smaller_than_requested_when_data_runs_out(bfcl_items):
    few = [it for it in bfcl_items if it.source == "bfcl:live_parallel"]
    splits = fc.assign_splits(few, {"train": 100, "validation": 100, "test": 100}, seed=0)
    assert set(splits) == {it.id for it in few}  # every item used, each split holds min(available, requested)
    with pytest.raises(R3Error, match="categories must be a list"):
        fc.load_bfcl({"categories": "simple"}, seed=0)
    with pytest.raises(R3Error, match="unknown split"):
        fc.assign_splits(few, {"dev": 1}, seed=0)


def test_task_entry():
    assert fc.TASK.name == "function_calling"
    assert fc.TASK.error_categories == ("format", "wrong_tool", "wrong_arguments")
    assert fc.TASK.stop_strings == ("</tool_call>",)
    assert set(fc.TASK.sources) == {"bfcl", "xlam"}


# ---------------------------------------------------------------- xLAM (no network)


def test_xlam_load_failure_is_one_line(monkeypatch):
    import datasets

    def boom(*args, **kwargs):
        raise ConnectionError(f"Dataset is gated\nlogin required (token {kwargs['token']})")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    with pytest.raises(R3Error) as err:
        fc.load_xlam({"n_items": 5}, seed=0)
    msg = str(err.value)
    assert "\n" not in msg and "xlam-function-calling-60k" in msg
    assert "gated" in msg and "HF_TOKEN" in msg and "source: bfcl" in msg
    assert "hf_secret_value" not in msg


def test_xlam_rows_normalised(monkeypatch):
    import datasets

    tools = [
        {
            "name": "get_rate",
            "description": "d",
            "parameters": {
                "pair": {"type": "str", "description": "p"},
                "opts": {"type": "Dict, optional", "description": "o", "default": None},
            },
        }
    ]
    answers = [{"name": "get_rate", "arguments": {"pair": "EUR/USD", "opts": {"days": [1, 2]}}}]
    row = {"tools": json.dumps(tools), "answers": json.dumps(answers)}
    rows = [{"id": i, "query": f"q{i}", **row} for i in range(4)]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    items = fc.load_xlam({"n_items": 3}, seed=0)
    assert len(items) == 3 and items == fc.load_xlam({"n_items": 3}, seed=0)
    it = items[0]
    assert it.inputs["tools"][0]["parameters"]["required"] == ["pair"]
    assert it.group == "get_rate" and it.source.startswith("xlam:")
    assert fc.verify(tc(answers), it.ground_truth).correct
    assert fc.verify(fc.render_answer(it.ground_truth), it.ground_truth).correct
    assert not fc.verify(
        tc([{"name": "get_rate", "arguments": {"pair": "EUR/USD", "opts": {"days": 1}}}]), it.ground_truth
    ).correct
