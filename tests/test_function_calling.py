"""Function calling: tool-call extraction on hostile output, comparison rules, BFCL loading and splits."""

from __future__ import annotations

import importlib
import itertools
import json
import random
import sys
import time
import types
from collections import Counter, defaultdict
from types import SimpleNamespace
from unittest import mock

import pytest
from conftest import run_stage

from r3.errors import R3Error
from r3.tasks import function_calling as fc
from r3.tasks import tool_calls
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


# ---------------------------------------------------------------- BFCL's AST checker rules, on real items


@pytest.fixture(scope="module")
def by_id(bfcl_items) -> dict:
    return {it.id: it for it in bfcl_items}


@pytest.fixture(scope="module")
def bfcl_check():
    """BFCL's own AST checker, (item, calls[, possible answer]) -> valid. bfcl-eval is installed without its
    dependencies, so its model registry (only read for function names with a dot) is stubbed while importing."""
    registry = types.ModuleType("bfcl_eval.constants.model_config")
    registry.MODEL_CONFIG_MAPPING = defaultdict(lambda: SimpleNamespace(underscore_to_dot=False))
    with mock.patch.dict(sys.modules, {registry.__name__: registry}):
        checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
        from bfcl_eval.constants.enums import Language

    def check(item, calls: list[dict], possible_answer: list[dict] | None = None) -> bool:
        answer = possible_answer or [{c["name"]: c["arguments"]} for c in item.ground_truth["calls"]]
        output = [{c["name"]: c["arguments"]} for c in calls]
        category = item.ground_truth["category"]
        return checker.ast_checker(item.inputs["tools"], output, answer, Language.PYTHON, category, "m")["valid"]

    check.standardize_string = checker.standardize_string
    return check


def answer(it, **changes) -> str:
    """The reference answer of a one-call item with some arguments changed (None: left out)."""
    (call,) = extract_calls(fc.render_answer(it.ground_truth))
    args = {k: v for k, v in {**call["arguments"], **changes}.items() if v is not None}
    return tc([{"name": call["name"], "arguments": args}])


def category(it, text: str) -> str:
    return fc.verify(text, it.ground_truth).category


def test_standardisation_is_bfcls(by_id, bfcl_check):
    samples = ["units\n", "\tunits", "U-n_i.t/s*^", "it's", "April 1, 2024", "a\u00a0b", "x\r\ny", "  Tab\t "]
    for s in samples:
        assert tool_calls._std(s) == bfcl_check.standardize_string(s), repr(s)
    it = by_id["simple_python_0"]  # calculate_triangle_area, unit ["units", ""]
    assert category(it, answer(it, unit="Units")) == "correct"
    assert category(it, answer(it, unit="u n-i_t.s")) == "correct"  # spaces and ,./-_*^ don't count
    for bad in ("units\n", "units\t", "\u00a0units"):  # other whitespace does, as in BFCL
        assert category(it, answer(it, unit=bad)) == "wrong_arguments", repr(bad)


def test_schema_types_for_numbers(by_id):
    fact = by_id["simple_python_1"]  # math.factorial, number: integer
    assert category(fact, answer(fact, number=5)) == "correct"
    for bad in (5.0, True, "5"):  # a float is not an integer; booleans are never numbers
        assert category(fact, answer(fact, number=bad)) == "wrong_arguments", bad
    field = by_id["parallel_multiple_12"]  # calculate_magnetic_field current: float, allowed [4.0]
    reference = extract_calls(fc.render_answer(field.ground_truth))
    for current in (4, 4.0):  # an int is accepted for a float (BFCL's auto-conversion)
        calls = [dict(c, arguments={**c["arguments"], "current": current}) if c["name"] == "calculate_magnetic_field"
                 else c for c in reference]
        assert fc.verify(tc(calls), field.ground_truth).correct, current
    factors = by_id["simple_python_17"]  # get_prime_factors, formatted: boolean [True, ""]
    assert category(factors, answer(factors, formatted=1)) == "wrong_arguments"
    normal = by_id["simple_python_111"]  # random.normalvariate mu: integer [0], sigma: integer [1]
    assert category(normal, answer(normal, mu=False)) == category(normal, answer(normal, sigma=True)) == (
        "wrong_arguments")


def test_schema_types_inside_arrays_and_dicts(by_id):
    scores = by_id["simple_python_79"]  # create_histogram data: array of integer
    ints = extract_calls(fc.render_answer(scores.ground_truth))[0]["arguments"]["data"]
    assert category(scores, answer(scores, data=[float(x) for x in ints])) == "wrong_arguments"
    interval = by_id["simple_python_13"]  # interval: array of float [[1.0, 3.0]]; ints accepted at every depth
    assert category(interval, answer(interval, interval=[1, 3])) == "correct"
    paint = by_id["simple_python_260"]  # area: dict {width: integer, height: integer}
    assert category(paint, answer(paint, area={"width": 20, "height": 12})) == "correct"
    assert category(paint, answer(paint, area={"width": 20.0, "height": 12})) == "wrong_arguments"
    house = by_id["multiple_8"]  # budget: dict {min: float, max: float} with int ground truth
    assert category(house, answer(house, budget={"min": 300000.0, "max": 400000})) == "correct"
    assert category(house, answer(house, budget={"min": True, "max": 400000})) == "wrong_arguments"


def test_required_arguments_may_not_be_omitted(by_id):
    factors = by_id["simple_python_17"]  # formatted: [True, ""] but required by the schema
    assert category(factors, answer(factors)) == "correct"
    v = fc.verify(answer(factors, formatted=None), factors.ground_truth)
    assert (v.category, v.detail) == ("wrong_arguments", "get_prime_factors: missing required arg 'formatted'")
    postgres = by_id["live_multiple_68-29-0"]  # port: [5432, ""], required
    assert category(postgres, answer(postgres)) == "correct"
    assert category(postgres, answer(postgres, port=None)) == "wrong_arguments"
    optional = by_id["simple_python_0"]  # unit: ["units", ""], not required: may still be omitted
    assert category(optional, answer(optional, unit=None)) == "correct"


def test_ground_truth_carries_the_called_tools_schemas(by_id):
    gt = by_id["simple_python_17"].ground_truth
    types = {"number": {"type": "integer"}, "formatted": {"type": "boolean"}}
    assert gt["schemas"] == {"get_prime_factors": {"required": ["number", "formatted"], "types": types}}
    assert gt["schemas"].keys() == {c["name"] for c in gt["calls"]}
    nested = by_id["simple_python_260"].ground_truth["schemas"]["paint_requirement.calculate"]["types"]["area"]
    assert nested == {"type": "dict", "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}}
    assert by_id["simple_python_79"].ground_truth["schemas"]["create_histogram"]["types"]["data"] == {
        "type": "array", "items": {"type": "integer"}}


def test_rows_without_schemas_keep_the_value_based_rules(by_id):
    fact = by_id["simple_python_1"]
    old = {k: v for k, v in fact.ground_truth.items() if k != "schemas"}  # a row written before schemas
    assert fc.verify(fc.render_answer(old), old).correct
    assert fc.verify(answer(fact, number=5.0), old).correct  # any number equals an equal number
    assert not fc.verify(answer(fact, number=True), old).correct
    factors = by_id["simple_python_17"]
    old = {k: v for k, v in factors.ground_truth.items() if k != "schemas"}
    assert fc.verify(answer(factors, formatted=None), old).correct  # only "" decides what may be omitted


# ---------------------------------------------------------------- loader: arguments the schema lacks


DROPPED = {"parallel_multiple_12": ("calculate_voltage_difference", "permeability"),
           "parallel_multiple_26": ("bank.calculate_balance", "type"),
           "live_multiple_862-181-3": ("Trains_1_FindTrains", "journey_start_time")}


def test_loader_drops_arguments_the_schema_lacks(bfcl_items, by_id):
    assert bfcl_items.report["dropped_unknown_args"] == 4
    assert bfcl_items.report["items_with_dropped_args"] == sorted([*DROPPED, "live_multiple_964-207-0"])
    for item_id, (tool, arg) in DROPPED.items():
        it = by_id[item_id]
        (call,) = [c for c in it.ground_truth["calls"] if c["name"] == tool]
        assert arg not in call["arguments"]
        assert fc.verify(fc.render_answer(it.ground_truth), it.ground_truth).correct
        calls = extract_calls(fc.render_answer(it.ground_truth))
        with_arg = [dict(c, arguments={**c["arguments"], arg: 1}) if c["name"] == tool else c for c in calls]
        assert "unexpected arg" in fc.verify(tc(with_arg), it.ground_truth).detail
    default = fc.load_bfcl({"categories": ["simple", "parallel_multiple"]}, seed=0).report
    assert default == {"dropped_unknown_args": 2, "items_with_dropped_args": ["parallel_multiple_12",
                       "parallel_multiple_26"], "skipped_inconsistent_items": []}


def test_loader_skips_items_that_contradict_their_schema(bfcl_items, by_id):
    # live_multiple_507-149-4 only allows omitting the required origin_airport; live_multiple_964-207-0 gives
    # `question` (dropped) for the required `statement`: no answer could pass either
    skipped = ["live_multiple_507-149-4", "live_multiple_964-207-0"]
    assert bfcl_items.report["skipped_inconsistent_items"] == skipped
    assert not set(skipped) & set(by_id)


def test_rendered_answers_use_only_schema_parameters(bfcl_items):
    for it in bfcl_items:
        props = {t["name"]: t["parameters"]["properties"] for t in it.inputs["tools"]}
        for call in extract_calls(fc.render_answer(it.ground_truth)):
            assert set(call["arguments"]) <= set(props[call["name"]]), (it.id, call)


def test_download_writes_loader_metrics(tmp_path):
    splits = {"train": 8, "validation": 2, "test": 2}
    data = {"source": "bfcl", "bfcl": {"categories": ["parallel_multiple"]}, "splits": splits}
    params = {"data": {"seed": 0, "function_calling": data}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    metrics = tmp_path / "metrics" / "download.json"
    proc = run_stage(tmp_path, "download.py", "--task", "function_calling", "--out", "fc.parquet",
                     "--metrics", str(metrics))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(metrics.read_text()) == {
        "items": 200, "per_split": splits, "dropped_unknown_args": 2,
        "items_with_dropped_args": ["parallel_multiple_12", "parallel_multiple_26"], "skipped_inconsistent_items": []}


# ---------------------------------------------------------------- matching


def test_matching_agrees_with_exhaustive_search():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 6)
        ok = [sorted(rng.sample(range(n), rng.randint(0, n))) for _ in range(n)]
        exhaustive = any(all(p[i] in ok[i] for i in range(n)) for p in itertools.permutations(range(n)))
        assert tool_calls._has_perfect_matching(ok, n) == exhaustive, ok


def test_matching_needs_augmenting_paths():
    # the flagged call fits every expected call, but only the last one needs it: first fit gives it away
    want = [exp("f", k=[1], flag=["", True]) for _ in range(7)] + [exp("f", k=[1], flag=[True])]
    got = [pred("f", k=1, flag=True)] + [pred("f", k=1)] * 7
    assert compare_calls(got, want).correct
    v = compare_calls(got, [*want[:-2], want[-1], want[-1]])  # two need the one flagged call
    assert (v.correct, v.detail) == (False, "calls match individually but not as a set (duplicated call)")


# ---------------------------------------------------------------- deliberate differences from BFCL


def test_parallel_calls_match_in_any_order_unlike_bfcl(by_id, bfcl_check):
    # parallel_178: Microsoft and Apple on two dates; the first expected call allows either company
    it = by_id["parallel_178"]
    calls = extract_calls(fc.render_answer(it.ground_truth))
    assert [c["arguments"]["company_name"] for c in calls] == ["Microsoft", "Microsoft", "Apple", "Apple"]
    apple_first = calls[2:] + calls[:2]  # the same four calls, Apple's listed first
    assert fc.verify(tc(apple_first), it.ground_truth).correct
    assert bfcl_check(it, calls) and not bfcl_check(it, apple_first)  # BFCL's greedy pairing gives up
    v = fc.verify(tc(apple_first[:3] + [apple_first[2]]), it.ground_truth)  # one call twice, one missing
    assert v.category == "wrong_arguments"


def test_strings_for_other_types_are_standardised_unlike_bfcl(by_id, bfcl_check):
    # BFCL's "variable" path: a ground-truth string for a non-string parameter is compared exactly there
    salon = by_id["live_parallel_multiple_21-18-0"]  # is_unisex: boolean, allowed ["dontcare"]
    calls = extract_calls(fc.render_answer(salon.ground_truth))
    (i,) = [i for i, c in enumerate(calls) if "is_unisex" in c["arguments"]]
    assert salon.ground_truth["calls"][i]["arguments"]["is_unisex"] == ["", "dontcare"]
    for spelling, ours, bfcl in (("dontcare", True, True), ("DontCare", True, False), ("dont care", True, False),
                                 ("care", False, False), (True, False, False),
                                 ("", False, True)):  # "" marks "may be left out", not an empty boolean
        changed = [dict(c, arguments={**c["arguments"], "is_unisex": spelling}) if j == i else c
                   for j, c in enumerate(calls)]
        assert fc.verify(tc(changed), salon.ground_truth).correct == ours, spelling
        assert bfcl_check(salon, changed) == bfcl, spelling
    sales = by_id["parallel_multiple_21"]  # x: array, allowed ["data['sales']"]
    calls = extract_calls(fc.render_answer(sales.ground_truth))
    double = [dict(c, arguments={**c["arguments"], "x": 'data["sales"]'}) if "x" in c["arguments"] else c
              for c in calls]
    assert fc.verify(tc(double), sales.ground_truth).correct and not bfcl_check(sales, double)


def test_empty_allowed_lists_mean_the_empty_list(by_id, bfcl_check):
    # two live_simple items allow no value at all for some required arrays: BFCL rejects its own answer
    for item_id, empty in (("live_simple_106-63-0", ["auto_loan_payment_start", "bank_hours_start"]),
                           ("live_simple_112-68-0", ["acc_routing_start", "atm_finder_start",
                                                     "faq_link_accounts_start", "get_balance_start",
                                                     "get_transactions_start"])):
        it = by_id[item_id]
        (call,) = it.ground_truth["calls"]
        assert [a for a, allowed in call["arguments"].items() if allowed == [[]]] == empty
        raw = [{call["name"]: {a: [] if allowed == [[]] else allowed for a, allowed in call["arguments"].items()}}]
        reference = extract_calls(fc.render_answer(it.ground_truth))
        assert fc.verify(tc(reference), it.ground_truth).correct and not bfcl_check(it, reference, raw)
        assert category(it, answer(it, **{empty[0]: ["What are my bank hours?"]})) == "wrong_arguments"
        assert category(it, answer(it, **{empty[0]: None})) == "wrong_arguments"  # required


_OMIT = object()


def _mutations(calls: list[dict]):
    """(kind, calls) with one argument of the first call changed: types, spelling, omitted, plus an extra one."""
    args = calls[0]["arguments"]

    def put(k, v=_OMIT):
        new = {a: x for a, x in args.items() if a != k}
        if v is not _OMIT:
            new[k] = v
        return [dict(calls[0], arguments=new), *calls[1:]]

    for k, v in args.items():
        if isinstance(v, bool):
            yield "bool->int", put(k, int(v))
        elif isinstance(v, int):
            yield "int->float", put(k, float(v))
            if v in (0, 1):
                yield "int->bool", put(k, bool(v))
        elif isinstance(v, float) and v.is_integer():
            yield "float->int", put(k, int(v))
        elif isinstance(v, str):
            yield from (("newline", put(k, v + "\n")), ("tab", put(k, "\t" + v)), ("upper", put(k, v.upper())))
        elif isinstance(v, list) and v and all(isinstance(x, float) and x.is_integer() for x in v):
            yield "list float->int", put(k, [int(x) for x in v])
        elif isinstance(v, list) and v and all(type(x) is int for x in v):
            yield "list int->float", put(k, [float(x) for x in v])
        yield "omit", put(k)
        yield "empty string", put(k, "")
    yield "extra", put("zz_extra", 1)


def test_agrees_with_bfcl_checker_except_where_documented(bfcl_items, bfcl_check):
    """Reference answers and one-argument mutations of every item of the default categories: our verdict
    equals BFCL's except in the documented classes (tool_calls' docstring)."""
    documented = {"list float->int": True,  # ints inside an array of floats: ours accepts
                  "upper": True,  # a string for a non-string parameter (the variable path): ours standardises
                  "empty string": False}  # "" for a non-string parameter whose "" means "may be left out"
    seen = Counter()
    for it in bfcl_items:
        if it.ground_truth["category"] == "live_multiple":  # not a default category
            continue
        reference = extract_calls(fc.render_answer(it.ground_truth))
        for kind, calls in [("reference", reference), *(_mutations(reference) if reference else [])]:
            ours, theirs = fc.verify(tc(calls), it.ground_truth).correct, bfcl_check(it, calls)
            seen[kind, ours] += 1
            if ours != theirs:
                assert documented.get(kind) == ours, (it.id, kind, calls)
    assert seen["reference", True] == 1298  # every reference answer passes
    for kind in ("int->float", "int->bool", "bool->int", "newline", "tab", "omit", "extra"):  # mutations bite
        assert seen[kind, False] > 0, kind


def test_xlam_schemas_types_and_unknown_args(monkeypatch):
    import datasets

    params = {"pair": {"type": "str"}, "days": {"type": "List[int], optional", "default": None},
              "rate": {"type": "float"}, "limit": {"type": "int"}, "opts": {"type": "Dict[str, Any], optional"},
              "fn": {"type": "Callable"}}
    tools = [{"name": "get_rate", "description": "d", "parameters": params}]
    args = {"pair": "EUR/USD", "days": [1, 2], "rate": 1, "limit": 5, "opts": {"a": 1}, "fn": "f", "bogus": 1}
    row = {"id": 7, "query": "q", "tools": json.dumps(tools), "answers": json.dumps([{"name": "get_rate",
                                                                                     "arguments": args}])}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [row])
    items = fc.load_xlam({"n_items": 1}, seed=0)
    assert items.report["dropped_unknown_args"] == 1 and items.report["items_with_dropped_args"] == ["xlam_7"]
    (gt,) = [it.ground_truth for it in items]
    assert gt["schemas"] == {"get_rate": {
        "required": ["pair", "rate", "limit", "fn"],  # the inferred required arguments the answer gives
        "types": {"pair": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}},
                  "rate": {"type": "float"}, "limit": {"type": "integer"}, "opts": {"type": "dict"}}}}
    good = {k: v for k, v in args.items() if k != "bogus"}
    assert fc.verify(fc.render_answer(gt), gt).correct and fc.verify(tc([pred("get_rate", **good)]), gt).correct
    for bad in ({"limit": 5.0}, {"days": [1.0, 2]}, {"bogus": 1}, {"limit": None}):
        args_bad = {k: v for k, v in {**good, **bad}.items() if v is not None}
        assert fc.verify(tc([pred("get_rate", **args_bad)]), gt).category == "wrong_arguments", bad
    assert fc.verify(tc([pred("get_rate", **{**good, "rate": 1.0})]), gt).correct  # int or float for a float
