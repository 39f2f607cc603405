"""GRPO rollouts: what the trained completion is (the reflection), what the retry sees, how rewards are made."""

import copy
from dataclasses import replace

import pytest
import torch
from conftest import ScriptedBackend, countdown_queries
from test_vllm_backend import hf_greedy

from r3.inference import Request, SamplingParams
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


@pytest.fixture
def backend(tiny_engine):
    return tiny_engine


# ---------------------------------------------------------------- r3 / grpo rollouts on the tiny model


def test_r3_rollout_on_tiny_model(backend):
    queries = _queries()
    rollout = Rollout("r3", queries, {"countdown": PROTO})
    prompts = _repeated(rollout, 3)
    rec = Recorder(backend)
    out = rollout.generate(rec, prompts, seed=7)

    assert len(prompts) == 6
    for key in ("prompt_ids", "completion_ids", "outcome", "category", "retry", "retry_success", "copied_answer",
                "retry_length"):
        assert len(out[key]) == len(prompts), key
    [(_, refl_reqs, refl_params, reflections), (_, retry_reqs, retry_params, retries)] = rec.calls
    assert refl_params.n == 1 and refl_params.max_new_tokens == 8 and retry_params.max_new_tokens == 10
    assert refl_params.seed != retry_params.seed  # the retry is not the reflection's sample stream again
    assert refl_params.logprobs and not retry_params.logprobs  # only the trained tokens need the sampler's logprobs
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
        decoded = tok.decode(out["completion_ids"][i], skip_special_tokens=True)
        # vLLM's detokenizer holds back an unfinished UTF-8 character at the end (random bytes here)
        assert decoded == reflections[i].text or (decoded.startswith(reflections[i].text)
                                                  and set(decoded[len(reflections[i].text):]) == {"\ufffd"})
        assert out["logprobs"][i] == list(reflections[i].logprobs)  # one per completion token, for TRL
        assert len(out["logprobs"][i]) == len(out["completion_ids"][i])
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
    rollout = Rollout("grpo", queries, {"countdown": PROTO})
    prompts = _repeated(rollout, 2)
    rec = Recorder(backend)
    out = rollout.generate(rec, prompts, seed=3)
    [(_, requests, params, attempts)] = rec.calls  # no reflection, no retry
    assert params.max_new_tokens == 10 and params.logprobs
    assert set(out) == {"prompt_ids", "completion_ids", "outcome", "category", "logprobs", "attempt"}
    for i, prompt in enumerate(prompts):
        q = queries[i // 2]
        assert prompt == q.task_prompt
        assert out["prompt_ids"][i] == backend.encode(Request(q.task_prompt, PROTO.prefill))
        assert backend.tokenizer.decode(out["prompt_ids"][i]).endswith("<|im_start|>assistant\n<answer>")
        assert out["completion_ids"][i] == list(attempts[i].token_ids)
        assert out["logprobs"][i] == list(attempts[i].logprobs)
        assert len(out["logprobs"][i]) == len(attempts[i].token_ids)
        assert out["attempt"][i] == "<answer>" + attempts[i].text  # the verified text, its prefill included
        assert out["outcome"][i] == float(COUNTDOWN.verify(out["attempt"][i], q.ground_truth).correct)
    assert rollout.generated_tokens == sum(c.num_tokens for c in attempts)


def test_rollout_is_deterministic_per_seed(backend):
    rollout = Rollout("r3", _queries(), {"countdown": PROTO})
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
    assert out["logprobs"] is None  # a scripted backend samples nothing


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
    assert out["logprobs"] is None


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


# ---------------------------------------------------------------- behaviours logged per step

SEARCH = ("Try 1 + 2 = 3, then 3 * 3 = 9. Check: 9 is not 6. That doesn't work; let me backtrack.\n"
          "<answer>1+2+3</answer>")


class _Trainer:
    """What a rollout reads from TRL's trainer: the step, the rank, the seed and the metrics store."""

    def __init__(self):
        from collections import defaultdict

        self.state, self.args = type("S", (), {"global_step": 0})(), type("A", (), {"seed": 0})()
        self.accelerator = type("Acc", (), {"process_index": 0})()
        self._metrics = {"train": defaultdict(list)}


@pytest.mark.parametrize("method", ["grpo", "r3"])
def test_each_step_logs_one_share_per_behaviour_of_the_sampled_answers(tiny_model_dir, method):
    """Scripted answers with known behaviours: 1 of 4 (step 0), then 3 of 4 (step 1) search with a check and a
    backtrack; none sets a subgoal or chains backwards. r3 counts the retries, grpo the attempts."""
    from transformers import AutoTokenizer

    from r3.analysis.behaviours import BEHAVIOURS
    from r3.analysis.rules import RulesClassifier

    searching = {0: {0}, 1: {0, 1, 3}}
    trainer = _Trainer()

    def answer(request, i):
        return SEARCH if i in searching[trainer.state.global_step] else "1+2+3</answer>"

    scripted = ScriptedBackend(AutoTokenizer.from_pretrained(tiny_model_dir), PROTO, ["a reflection"],
                               retry=answer, attempt=answer)
    rollout = Rollout(method, _queries(n=2), {"countdown": PROTO}, engine=scripted, behaviours=RulesClassifier())
    for step in (0, 1):
        trainer.state.global_step = step
        rollout(_repeated(rollout, 2), trainer)
    metrics = trainer._metrics["train"]
    assert {b: metrics[f"behaviour/{b}"] for b in BEHAVIOURS} == {
        "verification": [0.25, 0.75], "backtracking": [0.25, 0.75], "subgoal_setting": [0.0, 0.0],
        "backward_chaining": [0.0, 0.0]}
    assert Rollout(method, _queries(n=1), {"countdown": PROTO}).behaviour_shares({"attempt": [SEARCH]}) == {}


# ---------------------------------------------------------------- the rollout inside TRL's GRPOTrainer, on the engine

# rewards the tests cannot predict but that vary within groups: a retry is "right" iff its bytes sum to an even number
PARITY = replace(COUNTDOWN, verify=lambda text, truth: Verdict(sum(text.encode()) % 2 == 0, "correct"))


def _policy_logprobs(model, prompt_ids: list[int], completion_ids: list[int], temperature: float) -> torch.Tensor:
    """The policy's log-prob of each completion token: log softmax(logits / temperature), as TRL computes it."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1: -1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(completion_ids)[:, None])[:, 0]


def test_rollout_through_grpo_trainer(engine_to_restore, tiny_model_dir, tmp_path):
    """Two steps of TRL's GRPOTrainer sampling on the engine: the engine gets the policy's weights before every
    rollout, its logprobs are the policy's, and TRL's importance-sampling correction receives them."""
    from transformers import AutoModelForCausalLM

    from r3.training.grpo import TokenBudget, make_trainer

    engine = engine_to_restore
    queries = _queries(PARITY, n=3)
    rollout = Rollout("r3", queries, {"countdown": PROTO}, engine=engine)
    seen, rewarded = [], []

    def recording_rollout(prompts, trainer):
        # the policy this rollout must sample from: the trained model as it stands now
        model = trainer.accelerator.unwrap_model(trainer.model)
        policy = {k: t.detach().clone() for k, t in model.state_dict().items()}
        out = rollout(prompts, trainer)
        seen.append((copy.deepcopy(prompts), out, trainer.state.global_step, policy))
        return out

    def recording_reward(**kwargs):
        rewarded.append(kwargs)
        return outcome_reward(**kwargs)

    recording_reward.__name__ = "outcome_reward"
    trainer = make_trainer(tiny_model_dir, rollout, tmp_path, num_generations=2, queries_per_step=2, max_steps=2,
                           learning_rate=1e-2, callbacks=[budget := TokenBudget(rollout)])
    assert trainer.use_vllm and trainer.vllm_generation.engine is engine
    trainer.rollout_func, trainer.reward_funcs = recording_rollout, [recording_reward]
    trainer.train()

    assert [step for _, _, step, _ in seen] == [0, 1] and len(rewarded) == 2
    trained = {prompt_key(row["prompt"]) for row in rollout.dataset_rows()}
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for (prompts, out, step, weights), kwargs in zip(seen, rewarded, strict=True):
        # TRL hands over queries_per_step x num_generations prompts: consecutive copies of distinct rows
        assert len(prompts) == 2 * 2
        assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
        assert {prompt_key(p) for p in prompts} <= trained
        assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["logprobs"]) == 4
        for p, ids in zip(prompts, out["prompt_ids"], strict=True):
            assert ids == engine.encode(Request(p))
        # the sampler's logprobs are the policy's own at this step (the engine runs the synced weights)
        policy.load_state_dict(weights)
        for prompt_ids, completion_ids, logprobs in zip(out["prompt_ids"], out["completion_ids"], out["logprobs"],
                                                        strict=True):
            assert len(logprobs) == len(completion_ids) > 0
            expected = _policy_logprobs(policy, prompt_ids, completion_ids, PROTO.reflection.temperature)
            torch.testing.assert_close(torch.tensor(logprobs), expected, atol=1e-3, rtol=0, msg=f"step {step}")
        # the rollout's extra fields reach the reward function, row by row
        assert kwargs["outcome"] == out["outcome"] and kwargs["retry"] == out["retry"]
        assert kwargs["query_id"][0] == kwargs["query_id"][1]
        assert [c[0]["content"] for c in kwargs["completions"]] == \
            trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)

    # the step-0 rewards differed within a group, so the optimizer moved the policy before the step-1 rollout
    assert any(len(set(seen[0][1]["outcome"][i: i + 2])) > 1 for i in (0, 2))
    moved = [k for k, t in seen[1][3].items() if not torch.equal(t, seen[0][3][k])]
    assert len(moved) > len(seen[1][3]) // 2
    trained_weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert any(not torch.equal(t, start.state_dict()[k]) for k, t in trained_weights.items())

    # the engine kept no stale weights: it decodes greedily as the policy of the last rollout (synced at step 1;
    # the step-2 update is pushed before a next rollout only), not as the starting model
    requests = [Request(row["prompt"]) for row in rollout.dataset_rows()]
    policy.load_state_dict(seen[-1][3])
    got = [list(c.token_ids) for (c,) in engine.generate(requests, SamplingParams(max_new_tokens=16))]
    assert got == hf_greedy(policy, engine, requests, 16)
    assert got != hf_greedy(start, engine, requests, 16)

    # TRL's importance-sampling correction ran on those logprobs, and found engine and policy in agreement
    logged = [e for e in trainer.state.log_history if "reward" in e]
    assert len(logged) == 2 and all("r3/retry_success" in e for e in logged)
    assert budget.spent == rollout.generated_tokens > 0
    for e in logged:
        for key in ("sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
                    "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
                    "sampling/importance_sampling_ratio/max"):
            assert key in e, key
        assert e["sampling/sampling_logp_difference/max"] < 1e-3
        assert abs(e["sampling/importance_sampling_ratio/min"] - 1) < 1e-3
        assert abs(e["sampling/importance_sampling_ratio/max"] - 1) < 1e-3
