"""GRPO rollouts: what the trained completion is (the reflection), what the retry sees, how rewards are made."""

import copy
from dataclasses import replace

import pytest
import torch
from conftest import ScriptedBackend, countdown_queries

from r3.inference import Request, SamplingParams
from r3.inference.transformers_backend import TransformersBackend
from r3.protocol import ProtocolConfig, reflection_conversation, retry_conversation
from r3.tasks import get_task
from r3.tasks.base import Verdict
from r3.training.rollout import Query, Rollout, outcome_reward, prompt_key, retry_provenance

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: the tiny model runs on one thread

COUNTDOWN = get_task("countdown")
PROTO = ProtocolConfig(
    reflection_instruction="REFLECT", retry_instruction="RETRY",
    attempt=SamplingParams(max_new_tokens=10, temperature=1.0),
    reflection=SamplingParams(max_new_tokens=8, temperature=1.0), prefill="<answer>")


def _queries(task=COUNTDOWN, n=2) -> list[Query]:
    return countdown_queries(task, n)


def _repeated(rollout: Rollout, g: int) -> list[list[dict]]:
    """The prompts as TRL hands them over: each dataset row's prompt, `g` consecutive copies."""
    return [row["prompt"] for row in rollout.dataset_rows() for _ in range(g)]


class Recorder:
    """Wraps a backend; records every (desc, requests, params, completions) of `generate`."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def encode(self, request):
        return self.backend.encode(request)

    def generate(self, requests, params, desc=""):
        out = self.backend.generate(requests, params, desc)
        self.calls.append((desc, list(requests), params, [c[0] for c in out]))
        return out


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), dtype="float32", batch_size=4)


# ---------------------------------------------------------------- r3 / grpo rollouts on the tiny model


def test_r3_rollout_on_tiny_model(backend):
    queries = _queries()
    rollout = Rollout("r3", queries, {"countdown": PROTO}, dtype="float32")
    prompts = _repeated(rollout, 3)
    rec = Recorder(backend)
    out = rollout.generate(rec, prompts, seed=7)

    assert len(prompts) == 6
    for key in ("prompt_ids", "completion_ids", "outcome", "category", "retry", "retry_success", "copied_answer",
                "retry_length"):
        assert len(out[key]) == len(prompts), key
    assert out["logprobs"] is None
    [(_, refl_reqs, refl_params, reflections), (_, retry_reqs, retry_params, retries)] = rec.calls
    assert refl_params.n == 1 and refl_params.max_new_tokens == 8 and retry_params.max_new_tokens == 10
    assert refl_params.seed != retry_params.seed  # the retry is not the reflection's sample stream again
    tok = backend.tokenizer
    for i in range(len(prompts)):
        q = queries[i // 3]
        # the trained prompt: task prompt + failed attempt + reflection instruction, no prefill
        n = len(q.task_prompt)
        turns = [{"role": "assistant", "content": q.attempt}, {"role": "user", "content": "REFLECT"}]
        assert refl_reqs[i].messages[:n] == q.task_prompt and refl_reqs[i].messages[n:] == turns
        assert refl_reqs[i].prefill == ""
        assert out["prompt_ids"][i] == backend.encode(Request(reflection_conversation(q.task_prompt, q.attempt, PROTO)))
        assert tok.decode(out["prompt_ids"][i]).endswith("REFLECT<|im_end|>\n<|im_start|>assistant\n")
        # the completion is the reflection: its sampled ids, which decode to its text
        assert out["completion_ids"][i] == list(reflections[i].token_ids)
        assert 0 < len(out["completion_ids"][i]) <= 8
        assert tok.decode(out["completion_ids"][i], skip_special_tokens=True) == reflections[i].text
        # the retry saw that exact reflection, with the prefill; its verdict is the reward
        # spelled out turn by turn (not rebuilt with the builder under test)
        assert retry_reqs[i].messages[:n] == q.task_prompt
        assert retry_reqs[i].messages[n:] == turns + [{"role": "assistant", "content": reflections[i].text},
                                                      {"role": "user", "content": "RETRY"}]
        assert retry_reqs[i].prefill == "<answer>"
        assert out["retry"][i] == PROTO.prefill + retries[i].text
        verdict = COUNTDOWN.verify(out["retry"][i], q.ground_truth)
        assert out["outcome"][i] == float(verdict.correct) and out["category"][i] == verdict.category
        assert out["retry_length"][i] == retries[i].num_tokens
    assert rollout.generated_tokens == sum(c.num_tokens for c in reflections + retries)
    assert outcome_reward(prompts=prompts, completions=[None] * 6, **out) == out["outcome"]


def test_grpo_rollout_on_tiny_model(backend):
    queries = _queries()
    rollout = Rollout("grpo", queries, {"countdown": PROTO}, dtype="float32")
    prompts = _repeated(rollout, 2)
    rec = Recorder(backend)
    out = rollout.generate(rec, prompts, seed=3)
    [(_, requests, params, attempts)] = rec.calls  # no reflection, no retry
    assert params.max_new_tokens == 10 and out["logprobs"] is None
    assert set(out) == {"prompt_ids", "completion_ids", "outcome", "category", "logprobs"}
    for i, prompt in enumerate(prompts):
        q = queries[i // 2]
        assert prompt == q.task_prompt
        assert out["prompt_ids"][i] == backend.encode(Request(q.task_prompt, PROTO.prefill))
        assert backend.tokenizer.decode(out["prompt_ids"][i]).endswith("<|im_start|>assistant\n<answer>")
        assert out["completion_ids"][i] == list(attempts[i].token_ids)
        assert out["outcome"][i] == float(COUNTDOWN.verify("<answer>" + attempts[i].text, q.ground_truth).correct)
    assert rollout.generated_tokens == sum(c.num_tokens for c in attempts)


def test_rollout_is_deterministic_per_seed(backend):
    rollout = Rollout("r3", _queries(), {"countdown": PROTO}, dtype="float32")
    prompts = _repeated(rollout, 2)
    a, b = rollout.generate(backend, prompts, seed=5), rollout.generate(backend, prompts, seed=5)
    assert a == b
    c = rollout.generate(backend, prompts, seed=6)
    assert c["completion_ids"] != a["completion_ids"]


def test_unknown_prompt_and_mixed_tasks_are_rejected(backend):
    rollout = Rollout("r3", _queries(), {"countdown": PROTO})
    with pytest.raises(KeyError):
        rollout.generate(backend, [[{"role": "user", "content": "not a training prompt"}]], seed=0)
    with pytest.raises(ValueError):
        Rollout("ppo", _queries(), {"countdown": PROTO})
    other = replace(COUNTDOWN, name="other")
    mixed = _queries() + [replace(q, id="o", task=other, attempt="x") for q in _queries(n=1)]
    rollout = Rollout("r3", mixed, {"countdown": PROTO, "other": PROTO})
    with pytest.raises(ValueError, match="mixes tasks"):
        rollout.generate(backend, [row["prompt"] for row in rollout.dataset_rows()], seed=0)


def test_dataset_rows_are_the_trained_prompts():
    queries = _queries()
    r3 = Rollout("r3", queries, {"countdown": PROTO}).dataset_rows()
    grpo = Rollout("grpo", queries, {"countdown": PROTO}).dataset_rows()
    assert [row["query_id"] for row in r3] == ["q0", "q1"]
    assert r3[0]["prompt"] == reflection_conversation(queries[0].task_prompt, queries[0].attempt, PROTO)
    assert grpo[1]["prompt"] == queries[1].task_prompt


# ---------------------------------------------------------------- the retry's context (scripted)


def test_retry_prompt_contains_the_exact_reflection(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    reflections = ["I used 30 instead of 3;\n  the sum 1+2+3 works.", "Multiply: 2*3*4 = 24 ✓"]
    scripted = ScriptedBackend(tok, PROTO, reflections, retry=lambda r, i: "1+2+3</answer>")
    queries = _queries()
    rollout = Rollout("r3", queries, {"countdown": PROTO})
    prompts = _repeated(rollout, 2)
    out = rollout.generate(scripted, prompts, seed=0)
    [(refl_desc, _, _, _), (retry_desc, retry_reqs, _, _)] = scripted.calls
    assert "reflection" in refl_desc and "retr" in retry_desc
    for i, request in enumerate(retry_reqs):
        q = queries[i // 2]
        assert request.messages == retry_conversation(q.task_prompt, q.attempt, reflections[i % 2], PROTO)
        assert request.messages[-2] == {"role": "assistant", "content": reflections[i % 2]}
        assert request.prefill == PROTO.prefill
        assert out["completion_ids"][i] == tok(reflections[i % 2], add_special_tokens=False)["input_ids"] + [2]
    # the prefill is part of the verified retry: "1+2+3</answer>" after "<answer>" solves q0, not q1
    assert out["retry"] == ["<answer>1+2+3</answer>"] * 4
    assert out["outcome"] == [1.0, 1.0, 0.0, 0.0]
    assert out["category"][2:] == ["wrong_numbers"] * 2


def test_grpo_attempt_is_the_completion_and_is_verified_with_its_prefill(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    scripted = ScriptedBackend(tok, PROTO, attempt=lambda r, i: "1+2+3</answer>")
    queries = _queries()
    rollout = Rollout("grpo", queries, {"countdown": PROTO})
    out = rollout.generate(scripted, _repeated(rollout, 2), seed=0)
    [(_, requests, _, _)] = scripted.calls
    assert requests == [Request(q.task_prompt, PROTO.prefill) for q in queries for _ in range(2)]
    assert out["completion_ids"] == [tok("1+2+3</answer>", add_special_tokens=False)["input_ids"] + [2]] * 4
    assert out["outcome"] == [1.0, 1.0, 0.0, 0.0]  # "<answer>1+2+3</answer>" solves q0 only


# ---------------------------------------------------------------- copied answers


FAILED = "<answer>1 + 2 * 3</answer>"


@pytest.mark.parametrize(("reflection", "retry", "expected"), [
    ("the answer is 1 + 2 + 3", "<answer>1+2+3</answer>", (True, False)),  # first written in the reflection
    ("try\n1+2\t+3 next time", "<answer>1+2+3</answer>", (True, False)),  # whitespace does not matter
    ("1 + 2 * 3 is 7, not 6", "<answer>1+2*3</answer>", (False, True)),  # quotes the failed one, repeats it
    ("I should not repeat myself", "<answer>1 + 2 * 3</answer>", (False, True)),  # repeats it unquoted
    ("the answer is 1 + 2 * 3 + 0", "<answer>1+2+3</answer>", (False, False)),  # a new answer, not copied
    ("add all three numbers", "<answer>1+2+3</answer>", (False, False)),
    ("1+2+3", "no answer tags", (False, False)),  # nothing to copy
    ("anything", "<answer> </answer>", (False, False)),  # an empty answer is no copy
])
def test_retry_provenance_separates_copying_from_repeating(reflection, retry, expected):
    assert retry_provenance(COUNTDOWN, FAILED, reflection, retry) == expected


def test_retry_provenance_needs_the_whole_answer_in_the_reflection():
    assert retry_provenance(COUNTDOWN, FAILED, "maybe 11+2+30", "<answer>1+2+3</answer>") == (False, False)
    assert retry_provenance(COUNTDOWN, FAILED, "maybe (1+2+3)", "<answer>1+2+3</answer>") == (True, False)


@pytest.mark.parametrize("zero_copied", [False, True])
def test_zero_copied_zeroes_the_reward_of_a_copying_retry(tiny_model_dir, zero_copied):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    reflections = ["the answer is 1 + 2 + 3", "add all three numbers"]
    scripted = ScriptedBackend(tok, PROTO, reflections, retry=lambda r, i: "1+2+3</answer>")
    rollout = Rollout("r3", _queries(n=1), {"countdown": PROTO}, zero_copied=zero_copied)
    out = rollout.generate(scripted, _repeated(rollout, 2), seed=0)
    assert out["retry_success"] == [1.0, 1.0]  # both retries are right
    assert out["copied_answer"] == [1.0, 0.0]  # only the first reflection spelled the answer out
    assert out["repeated_attempt"] == [0.0, 0.0]
    assert out["outcome"] == ([0.0, 1.0] if zero_copied else [1.0, 1.0])


def test_fake_verifier_is_used(tiny_model_dir):
    """The rollout verifies with its query's task (tests below in test_grpo rely on swapping the verifier)."""
    from transformers import AutoTokenizer

    task = replace(COUNTDOWN, verify=lambda text, truth: Verdict("RIGHT" in text, "correct" if "RIGHT" in text
                                                                  else "missed_target"))
    scripted = ScriptedBackend(AutoTokenizer.from_pretrained(tiny_model_dir), PROTO, ["a", "b"],
                               retry=lambda r, i: "RIGHT" if r.messages[-2]["content"] == "a" else "WRONG")
    rollout = Rollout("r3", _queries(task, n=1), {"countdown": PROTO})
    assert rollout.generate(scripted, _repeated(rollout, 2), seed=0)["outcome"] == [1.0, 0.0]


def test_generation_copy_is_resynced_after_a_step(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rollout = Rollout("r3", _queries(), {"countdown": PROTO}, dtype="float32")
    backend = rollout.backend_for(model, tok, step=0)
    assert backend.model is not model  # a copy: sampling never touches the trained module
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    assert rollout.backend_for(model, tok, step=0) is backend
    assert not torch.equal(backend.model.lm_head.weight, model.lm_head.weight)  # same step: no re-sync
    assert rollout.backend_for(model, tok, step=1) is backend
    for (name, p), q in zip(model.state_dict().items(), backend.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


# ---------------------------------------------------------------- the rollout inside TRL's GRPOTrainer


def test_rollout_through_grpo_trainer(tiny_model_dir, tmp_path):
    from r3.training.grpo import make_trainer

    queries = _queries(n=3)
    rollout = Rollout("r3", queries, {"countdown": PROTO}, dtype="float32", batch_size=4)
    seen, rewarded = [], []

    def recording_rollout(prompts, trainer):
        out = rollout(prompts, trainer)
        seen.append((copy.deepcopy(prompts), out, trainer.state.global_step))
        return out

    def recording_reward(**kwargs):
        rewarded.append(kwargs)
        return outcome_reward(**kwargs)

    recording_reward.__name__ = "outcome_reward"
    trainer = make_trainer(tiny_model_dir, rollout, tmp_path, num_generations=2, queries_per_step=2, max_steps=2,
                           learning_rate=1e-3)
    trainer.rollout_func, trainer.reward_funcs = recording_rollout, [recording_reward]
    trainer.train()

    assert [step for _, _, step in seen] == [0, 1] and len(rewarded) == 2
    trained = {prompt_key(row["prompt"]) for row in rollout.dataset_rows()}
    for (prompts, out, _), kwargs in zip(seen, rewarded, strict=True):
        # TRL hands over queries_per_step x num_generations prompts: consecutive copies of distinct rows
        assert len(prompts) == 2 * 2
        assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
        assert {prompt_key(p) for p in prompts} <= trained
        assert len(out["prompt_ids"]) == len(out["completion_ids"]) == 4 and out["logprobs"] is None
        for p, ids in zip(prompts, out["prompt_ids"], strict=True):
            assert ids == rollout._backend.encode(Request(p))
        # the rollout's extra fields reach the reward function, row by row
        assert kwargs["outcome"] == out["outcome"] and kwargs["retry"] == out["retry"]
        assert kwargs["query_id"][0] == kwargs["query_id"][1]
        assert [c[0]["content"] for c in kwargs["completions"]] == \
            trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    assert rollout._backend.model is not trainer.model
    logged = [e for e in trainer.state.log_history if "reward" in e]
    assert len(logged) == 2 and all("r3/retry_success" in e and "r3/generated_tokens" in e for e in logged)
    assert logged[-1]["r3/generated_tokens"] == rollout.generated_tokens > 0


def test_generation_copy_computes_with_its_own_weights(tiny_model_dir, tmp_path):
    """GRPOTrainer patches the policy's `forward` (a fused LM head); the sampling copy made from that policy must
    still run its own weights: changing the trained model leaves the copy's outputs alone until a re-sync."""
    from r3.training.grpo import make_trainer

    rollout = Rollout("r3", _queries(), {"countdown": PROTO}, dtype="float32")
    trainer = make_trainer(tiny_model_dir, rollout, tmp_path, num_generations=2, queries_per_step=2, max_steps=1)
    backend = rollout.backend_for(trainer.model, trainer.processing_class, step=0)
    assert backend.model is not trainer.model
    ids = torch.tensor([backend.encode(Request(rollout.dataset_rows()[0]["prompt"]))])
    with torch.no_grad():
        before = backend.model(input_ids=ids).logits
        trainer.model.lm_head.weight.mul_(0.0)  # the optimizer moved the policy; no re-sync yet
        after = backend.model(input_ids=ids).logits
    assert torch.equal(before, after), "the sampling copy's forward runs the trained model"
