"""The priming set: train rows only, the right turns trained, the documented reflection share."""

import pytest

from r3.dataset import Row
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


@pytest.fixture(scope="module")
def countdown_rows():
    items = load_generated({"num_numbers": 3, "number_range": [1, 10], "target_range": [1, 50], "n_items": 120}, 0)
    return _rows(items, cd_splits(items, {"train": 80, "validation": 10, "test": 30}, 0))


@pytest.fixture(scope="module")
def fc_rows():
    items = load_bfcl({"categories": ["simple", "parallel"]}, 0)
    return _rows(items, fc_splits(items, {"train": 200, "validation": 20, "test": 60}, 0))


def test_countdown_mix_has_no_test_puzzle_and_trains_only_reflection_and_retry(countdown_rows):
    task = get_task("countdown")
    train = [r for r in countdown_rows if r.split == "train"]
    test_keys = {(tuple(sorted(r.inputs["numbers"])), r.inputs["target"]) for r in countdown_rows if r.split == "test"}
    examples = priming_examples(task, train, MixSpec(40, 0.25), PromptConfig("tinyzero"), PROTO, seed=3)
    assert len(examples) == 40 and sum(e["kind"] == "reflection" for e in examples) == 10
    for ex in examples:
        prompt = ex["messages"][0]["content"]
        for numbers, target in test_keys:
            assert not (f"equals {target}." in prompt and str(list(numbers))[1:-1] in prompt)
        if ex["kind"] == "reflection":
            roles = [m["role"] for m in ex["messages"]]
            assert roles == ["user", "assistant", "user", "assistant", "user", "assistant"]
            assert ex["train_turns"] == [3, 5]  # never the failed first attempt (turn 1)
            assert ex["messages"][2]["content"] == "REFLECT" and ex["messages"][4]["content"] == "RETRY"
            assert task.verify(ex["messages"][5]["content"], _truth(ex)).correct
            assert not task.verify(ex["messages"][1]["content"], _truth(ex)).correct
        else:
            assert ex["train_turns"] == [1]


def _truth(ex):
    import re
    numbers, target = re.search(r"numbers \[(.*?)\].*equals (\d+)", ex["messages"][0]["content"]).groups()
    return {"numbers": [int(x) for x in numbers.split(",")], "target": int(target)}


def test_function_calling_mix_uses_train_functions_only_and_starts_with_the_prefill(fc_rows):
    task = get_task("function_calling")
    train = [r for r in fc_rows if r.split == "train"]
    test_tools = {t["name"] for r in fc_rows if r.split != "train" for t in r.inputs["tools"]}
    cfg = PromptConfig("user", prefill="<tool_call>[")
    examples = priming_examples(task, train, MixSpec(20, 0.5), cfg, PROTO, seed=0)
    assert sum(e["kind"] == "reflection" for e in examples) == 10
    for ex in examples:
        text = "".join(m["content"] for m in ex["messages"])
        assert not any(f'"{name}"' in text for name in test_tools)
        for turn in ex["train_turns"][-1:]:
            assert ex["messages"][turn]["content"].startswith("<tool_call>[")


def test_non_train_rows_are_refused(countdown_rows):
    with pytest.raises(ValueError, match="train rows"):
        priming_examples(get_task("countdown"), countdown_rows, MixSpec(4, 0.0), PromptConfig("tinyzero"), PROTO, 0)
