"""The reflect-retry protocol: turn layout, who gets reflected on, what the retry sees."""

from r3.inference import Completion, SamplingParams
from r3.prompts import PromptConfig, build_prompt
from r3.protocol import ProtocolConfig, reflection_conversation, retry_conversation, run_protocol, sample_first_attempts
from r3.tasks import get_task

COUNTDOWN = get_task("countdown")
CFG = ProtocolConfig(
    reflection_instruction="REFLECT", retry_instruction="RETRY",
    attempt=SamplingParams(max_new_tokens=16), reflection=SamplingParams(max_new_tokens=8), prefill="")


class ScriptedBackend:
    """Answers by the last user turn: the item's prompt, REFLECT or RETRY. A script is a text, a function of the
    request, or a list (one text per sample). Records every request, and every call as (desc, requests, params)."""

    def __init__(self, first, reflection, retry):
        self.script = {"first": first, "REFLECT": reflection, "RETRY": retry}
        self.requests, self.calls = [], []

    def generate(self, requests, params, desc=""):
        out = []
        self.calls.append((desc, list(requests), params))
        for r in requests:
            self.requests.append(r)
            last = r.messages[-1]["content"]
            key = last if last in ("REFLECT", "RETRY") else "first"
            reply = self.script[key](r) if callable(self.script[key]) else self.script[key]
            replies = reply if isinstance(reply, list) else [reply] * params.n
            assert len(replies) == params.n
            out.append([Completion(text, num_tokens=len(text.split())) for text in replies])
        return out


def _item(numbers, target):
    inputs = {"numbers": numbers, "target": target}
    return build_prompt(COUNTDOWN, inputs, PromptConfig("tinyzero")), {**inputs, "solution": ""}


def test_correct_first_try_is_not_reflected_on():
    prompt, truth = _item([1, 2, 3], 6)
    backend = ScriptedBackend("<answer>1+2+3</answer>", "unused", "unused")
    [rec] = run_protocol(backend, COUNTDOWN, [prompt], [truth], CFG)
    assert rec["first_correct"] and rec["second_correct"]
    assert rec["reflection"] is None and rec["retry"] is None
    assert len(backend.requests) == 1


def test_failed_first_try_reflects_then_retries_with_reflection_in_context():
    prompt, truth = _item([1, 2, 3], 6)
    reflection = "I added wrong; 1+2+3 is 6."
    backend = ScriptedBackend("<answer>1*2*4</answer>", reflection, "<answer>(1+2)+3</answer>")
    [rec] = run_protocol(backend, COUNTDOWN, [prompt], [truth], CFG)
    assert rec["first_category"] == "wrong_numbers" and not rec["first_correct"]
    assert rec["reflection"] == reflection
    assert rec["retry_correct"] and rec["second_correct"]
    retry_request = backend.requests[-1]
    assert retry_request.messages == retry_conversation(prompt, "<answer>1*2*4</answer>", reflection, CFG)
    roles = [m["role"] for m in retry_request.messages]
    assert roles[-5:] == ["user", "assistant", "user", "assistant", "user"]
    assert retry_request.messages[-2]["content"] == reflection  # the exact reflection text


def test_failed_retry_keeps_second_try_wrong_and_records_category():
    prompt, truth = _item([1, 2, 3], 6)
    backend = ScriptedBackend("no answer", "I forgot the tags.", "<answer>1+2+4</answer>")
    [rec] = run_protocol(backend, COUNTDOWN, [prompt], [truth], CFG)
    assert rec["first_category"] == "invalid_equation"
    assert rec["retry_category"] == "wrong_numbers"
    assert rec["second_correct"] is False


def test_prefill_is_part_of_the_attempt():
    prompt, truth = _item([1, 2, 3], 6)
    cfg = ProtocolConfig(**{**CFG.__dict__, "prefill": "<answer>"})
    backend = ScriptedBackend("1+2+3</answer>", "x", "y")
    [rec] = run_protocol(backend, COUNTDOWN, [prompt], [truth], cfg)
    assert rec["first_attempt"] == "<answer>1+2+3</answer>" and rec["first_correct"]
    assert backend.requests[0].prefill == "<answer>"


def _by_target(answers):
    """A script keyed by the puzzle's target, read from the item's prompt (the first message)."""
    return lambda r: answers[int(r.messages[0]["content"].split("equals ")[1].split(".")[0])]


def test_a_mixed_batch_reflects_and_retries_exactly_the_failed_items_with_their_own_texts():
    items = [_item([1, 2, 3], 6), _item([2, 3, 4], 24), _item([5, 5, 1], 11), _item([4, 4, 2], 32)]
    firsts = {6: "<answer>1+2+3</answer>", 24: "<answer>2+3+4</answer>", 11: "no answer", 32: "<answer>4*4*2</answer>"}
    backend = ScriptedBackend(_by_target(firsts), _by_target({24: "reflect 24", 11: "reflect 11"}),
                              _by_target({24: "<answer>2*3*4</answer>", 11: "<answer>5+5+2</answer>"}))
    records = run_protocol(backend, COUNTDOWN, [p for p, _ in items], [t for _, t in items], CFG)

    assert [r["first_category"] for r in records] == ["correct", "missed_target", "invalid_equation", "correct"]
    assert [r["reflection"] for r in records] == [None, "reflect 24", "reflect 11", None]
    assert [r["retry_category"] for r in records] == [None, "correct", "wrong_numbers", None]
    assert [r["second_correct"] for r in records] == [True, True, False, True]
    assert [r["first_tokens"] for r in records] == [1, 1, 2, 1] and records[2]["reflection_tokens"] == 2
    # one batched call per phase: 4 first attempts, then 2 reflections, then 2 retries, in item order
    assert [len(c) for _, c, _ in backend.calls] == [4, 2, 2]
    (_, _, first_params), (_, reflect, reflect_params), (_, retry, retry_params) = backend.calls
    assert [r.messages for r in reflect] == [reflection_conversation(items[i][0], firsts[t], CFG)
                                             for i, t in ((1, 24), (2, 11))]
    assert [r.messages for r in retry] == [retry_conversation(items[1][0], firsts[24], "reflect 24", CFG),
                                           retry_conversation(items[2][0], firsts[11], "reflect 11", CFG)]
    assert first_params == retry_params == CFG.attempt and reflect_params == CFG.reflection


def test_sampled_first_attempts_get_one_verdict_each_with_the_prefill():
    prompt, truth = _item([1, 2, 3], 6)
    backend = ScriptedBackend(["1+2+3</answer>", "1+2</answer>", "6</answer>", "(3*2)*1</answer>"], "x", "y")
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=4, seed=1)
    [samples] = sample_first_attempts(backend, COUNTDOWN, [prompt], [truth], params, prefill="<answer>")
    assert [text for text, _, _ in samples] == ["<answer>1+2+3</answer>", "<answer>1+2</answer>",
                                                "<answer>6</answer>", "<answer>(3*2)*1</answer>"]
    assert [v.category for _, v, _ in samples] == ["correct", "wrong_numbers", "wrong_numbers", "correct"]
    assert [(len(c), p) for _, c, p in backend.calls] == [(1, params)]
    assert backend.requests[0].prefill == "<answer>"
