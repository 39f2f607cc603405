"""The priming set: train rows only, the right turns trained, the documented reflection share."""

import json
import re

import pytest

from r3.dataset import Row, load_rows, to_frame
from r3.inference import SamplingParams
from r3.priming.mix import MixSpec, priming_examples
from r3.prompts import PromptConfig
from r3.protocol import ProtocolConfig
from r3.tasks import get_task
from r3.tasks.countdown import assign_splits as cd_splits
from r3.tasks.countdown import load_generated
from r3.tasks.function_calling import assign_splits as fc_splits
from r3.tasks.function_calling import load_bfcl

PROTO = ProtocolConfig("REFLECT", "RETRY", SamplingParams(8), SamplingParams(8))


def _rows(items, splits):
    return [Row(it.id, splits[it.id], it.inputs, it.ground_truth) for it in items if it.id in splits]


def _train_rows(task, items, splits, tmp_path_factory):
    """The train rows as the prime stage reads them: through the dataset table and load_rows."""
    path = tmp_path_factory.mktemp(task) / f"{task}.parquet"
    to_frame(task, items, splits).to_parquet(path)
    return load_rows(path, task, split="train")


@pytest.fixture(scope="module")
def countdown_items():
    items = load_generated({"num_numbers": 3, "number_range": [1, 10], "target_range": [1, 50], "n_items": 120}, 0)
    return items, cd_splits(items, {"train": 80, "validation": 10, "test": 30}, 0)


@pytest.fixture(scope="module")
def countdown_rows(countdown_items):
    return _rows(*countdown_items)


@pytest.fixture(scope="module")
def fc_items():
    items = load_bfcl({"categories": ["simple", "parallel"]}, 0)
    return items, fc_splits(items, {"train": 200, "validation": 20, "test": 60}, 0)


def _puzzle(inputs):
    return tuple(sorted(inputs["numbers"])), inputs["target"]


def _prompt_puzzle(prompt: str):
    """(sorted numbers, target) of the puzzle a Countdown prompt poses, whatever order it lists the numbers in."""
    match = re.fullmatch(r"Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)\. .*", prompt, re.S)
    assert match, prompt
    return _puzzle({"numbers": [int(x) for x in match[1].split(",")], "target": int(match[2])})


def _prompt_tools_and_question(prompt: str):
    tools = json.loads(re.search(r"<tools>(.*?)</tools>", prompt, re.S)[1])
    return {t["name"] for t in tools}, prompt.split("\nQuestion:\n", 1)[1]


def _question(inputs):
    [message] = [m for m in inputs["messages"] if m["role"] == "user"]
    return message["content"]


def test_countdown_mix_poses_only_train_puzzles_and_trains_only_reflection_and_retry(countdown_items,
                                                                                    tmp_path_factory):
    task = get_task("countdown")
    items, splits = countdown_items
    train = _train_rows("countdown", items, splits, tmp_path_factory)
    held_out = {_puzzle(it.inputs) for it in items if splits.get(it.id) in ("validation", "test")}
    examples = priming_examples(task, train, MixSpec(40, 0.25), PromptConfig("tinyzero"), PROTO, seed=3)
    assert len(examples) == 40 and sum(e["kind"] == "reflection" for e in examples) == 10
    posed = {_prompt_puzzle(ex["messages"][0]["content"]) for ex in examples}
    assert posed <= {_puzzle(r.inputs) for r in train} and not posed & held_out
    for ex in examples:
        if ex["kind"] == "reflection":
            roles = [m["role"] for m in ex["messages"]]
            assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]
            assert ex["train_turns"] == [3, 5]  # never the failed first attempt (turn 1)
            assert ex["messages"][2]["content"] == "REFLECT" and ex["messages"][4]["content"] == "RETRY"
            assert task.verify(ex["messages"][5]["content"], _truth(ex)).correct
            assert not task.verify(ex["messages"][1]["content"], _truth(ex)).correct
        else:
            assert ex["train_turns"] == [1]


def test_the_countdown_leak_check_finds_a_test_puzzle_whose_numbers_come_in_another_order(countdown_rows):
    row = next(r for r in countdown_rows if r.split == "test" and len(set(r.inputs["numbers"])) == 3)
    numbers = sorted(row.inputs["numbers"], reverse=True)  # a valid order other than the sorted one
    leaked = Row(row.id, "train", {**row.inputs, "numbers": numbers}, row.ground_truth)
    examples = priming_examples(get_task("countdown"), [leaked], MixSpec(2, 0.5), PromptConfig("tinyzero"), PROTO, 0)
    for ex in examples:
        prompt = ex["messages"][0]["content"]
        assert _prompt_puzzle(prompt) == _puzzle(row.inputs)
        assert str(sorted(numbers))[1:-1] not in prompt  # the old substring check missed it


def _truth(ex):
    numbers, target = re.search(r"numbers \[(.*?)\].*equals (\d+)", ex["messages"][0]["content"]).groups()
    return {"numbers": [int(x) for x in numbers.split(",")], "target": int(target)}


def test_function_calling_mix_uses_train_items_and_functions_only_and_starts_with_the_prefill(fc_items,
                                                                                           tmp_path_factory):
    task = get_task("function_calling")
    items, splits = fc_items
    train = _train_rows("function_calling", items, splits, tmp_path_factory)
    held_out = [it for it in items if splits.get(it.id) in ("validation", "test")]
    held_tools = {t["name"] for it in held_out for t in it.inputs["tools"]}
    cfg = PromptConfig("user", prefill="<tool_call>[")
    examples = priming_examples(task, train, MixSpec(20, 0.5), cfg, PROTO, seed=0)
    assert sum(e["kind"] == "reflection" for e in examples) == 10
    posed = [_prompt_tools_and_question(ex["messages"][0]["content"]) for ex in examples]
    assert {q for _, q in posed} <= {_question(r.inputs) for r in train}
    assert not {q for _, q in posed} & {_question(it.inputs) for it in held_out}
    assert not set().union(*(tools for tools, _ in posed)) & held_tools
    for ex in examples:
        for turn in ex["train_turns"][-1:]:
            assert ex["messages"][turn]["content"].startswith("<tool_call>[")


def test_the_function_calling_leak_check_finds_a_test_item(fc_items):
    items, splits = fc_items
    it = next(it for it in items if splits.get(it.id) == "test")
    leaked = Row(it.id, "train", it.inputs, it.ground_truth)
    examples = priming_examples(get_task("function_calling"), [leaked], MixSpec(2, 0.5), PromptConfig("user"), PROTO, 0)
    for ex in examples:
        tools, question = _prompt_tools_and_question(ex["messages"][0]["content"])
        assert tools == {t["name"] for t in it.inputs["tools"]} and question == _question(it.inputs)


def test_non_train_rows_are_refused(countdown_rows):
    with pytest.raises(ValueError, match="train rows"):
        priming_examples(get_task("countdown"), countdown_rows, MixSpec(4, 0.0), PromptConfig("tinyzero"), PROTO, 0)
