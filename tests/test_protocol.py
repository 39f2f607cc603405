"""The reflect-retry protocol: turn layout, who gets reflected on, what the retry sees."""

from r3.inference import Completion, SamplingParams, load_backend
from r3.prompts import PromptConfig, build_prompt
from r3.protocol import ProtocolConfig, retry_conversation, run_protocol, sample_first_attempts
from r3.tasks import get_task

COUNTDOWN = get_task("countdown")
CFG = ProtocolConfig(
    reflection_instruction="REFLECT", retry_instruction="RETRY",
    attempt=SamplingParams(max_new_tokens=16), reflection=SamplingParams(max_new_tokens=8), prefill="")


class ScriptedBackend:
    """Answers by the last user turn: the item's prompt, REFLECT or RETRY. Records every request."""

    def __init__(self, first, reflection, retry):
        self.script = {"first": first, "REFLECT": reflection, "RETRY": retry}
        self.requests = []

    def generate(self, requests, params, desc=""):
        out = []
        for r in requests:
            self.requests.append(r)
            last = r.messages[-1]["content"]
            key = last if last in ("REFLECT", "RETRY") else "first"
            reply = self.script[key](r) if callable(self.script[key]) else self.script[key]
            out.append([Completion(reply, num_tokens=len(reply.split()))] * params.n)
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


def test_protocol_runs_on_a_tiny_model(tiny_model_dir):
    backend = load_backend("transformers", str(tiny_model_dir), dtype="float32", batch_size=2)
    items = [_item([1, 2, 3], 6), _item([2, 3, 4], 24), _item([5, 5, 1], 11)]
    records = run_protocol(backend, COUNTDOWN, [p for p, _ in items], [t for _, t in items], CFG)
    assert len(records) == 3
    for rec in records:
        assert 0 < rec["first_tokens"] <= 16
        assert rec["first_category"] in ("correct", *COUNTDOWN.error_categories)
        if not rec["first_correct"]:
            assert 0 < rec["reflection_tokens"] <= 8 and rec["retry"] is not None
    samples = sample_first_attempts(backend, COUNTDOWN, [items[0][0]], [items[0][1]],
                                    SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=1))
    assert len(samples) == 1 and len(samples[0]) == 3
