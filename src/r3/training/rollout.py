"""GRPO rollouts for TRL's `GRPOTrainer(rollout_func=...)`: R3 (reflect, retry, reward) and the plain-GRPO control.

`r3`: the prompt is the task prompt + the recorded failed 1st attempt + the reflection instruction
(`protocol.reflection_conversation`); the completion is the reflection, the only tokens in the loss. Each
reflection is followed by a retry that the current policy generates with that reflection in context
(`protocol.retry_conversation`); the retry never enters the completion, and the reward is the verifier's
verdict on it (1/0).
`grpo`: the prompt is the task prompt; the completion is the 1st attempt; the reward is its verdict.

TRL 1.16 hands the rollout the batch's prompts already repeated `num_generations` times (the
`RepeatSampler` repeats dataset rows), so this returns exactly one completion per prompt it receives.
Generation runs on the project's vLLM engine (`engine`), into which the trainer pushes the policy's
weights whenever the optimizer has stepped (`r3.training.grpo.EngineSync`); the trained completions
come back with the sampler's token logprobs, for TRL's importance-sampling correction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from r3.analysis.behaviours import Classifier, shares
from r3.artifacts import read_parquet
from r3.inference import Backend, Request, SamplingParams
from r3.protocol import ProtocolConfig, attempt_text, reflection_conversation, retry_conversation
from r3.tasks import Task

METHODS = ("r3", "grpo")


@dataclass(frozen=True)
class Query:
    """One training query: its task, ground truth, the task prompt and (for r3) the failed 1st attempt."""

    id: str
    task: Task
    ground_truth: dict
    task_prompt: list[dict]
    attempt: str = ""

    def prompt(self, method: str, proto: ProtocolConfig) -> list[dict]:
        """The conversation whose continuation is the trained completion."""
        if method == "r3":
            return reflection_conversation(self.task_prompt, self.attempt, proto)
        return self.task_prompt


FAILURE_COLUMNS = {"id": str, "prompt": str, "ground_truth": str, "attempt": str}


def failure_queries(path, task: Task) -> list[Query]:
    """The training queries of a failure set (`failures` stage Parquet): task prompt, truth, failed attempt."""
    df = read_parquet(path, FAILURE_COLUMNS)
    return [Query(r.id, task, json.loads(r.ground_truth), json.loads(r.prompt), r.attempt) for r in df.itertuples()]


def prompt_key(prompt: list[dict]) -> str:
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def _answer(task: Task, text: str) -> str:
    """The answer inside a completion's answer tags, whitespace removed ("" if none)."""
    return "".join((task.answer_span(text) or "").split())


def _contains(text: str, answer: str) -> bool:
    """`answer` occurs in `text` as a whole (not inside a longer number: "1+2+3" is not in "1+2+30")."""
    start = text.find(answer)
    while start >= 0:
        end = start + len(answer)
        if not (start and text[start - 1].isdigit()) and not (end < len(text) and text[end].isdigit()):
            return True
        start = text.find(answer, start + 1)
    return False


def retry_provenance(task: Task, attempt: str, reflection: str, retry: str) -> tuple[bool, bool]:
    """Where the retry's answer came from: (copied, repeated).

    repeated: the retry gives the failed attempt's answer again (whether or not the reflection quoted it).
    copied: a different answer that is first written in the reflection, so the retry only copies it (the
    reward-hacking case). The two never hold together.
    """
    answer = _answer(task, retry)
    if not answer:
        return False, False
    repeated = answer == _answer(task, attempt)
    return not repeated and _contains("".join(reflection.split()), answer), repeated


@dataclass
class Rollout:
    """`rollout_func(prompts, trainer)` for GRPOTrainer; also usable without a trainer (`generate`)."""

    method: str
    queries: list[Query]
    protocols: dict[str, ProtocolConfig]  # task name -> protocol (instructions, budgets, sampling)
    engine: Backend | None = None  # generates the rollouts (the trainer syncs the policy's weights into it)
    zero_copied: bool = False  # opt-in: a retry that copies an answer first written in the reflection earns 0
    behaviours: Classifier | None = None  # counts the behaviours of each step's attempts (grpo) / retries (r3)
    generated_tokens: int = 0  # every token sampled so far, retries included (the budget GRPO is matched on)
    _by_prompt: dict[str, Query] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown training method {self.method!r}; choose one of {list(METHODS)}")
        for q in self.queries:
            self._by_prompt[prompt_key(q.prompt(self.method, self.protocols[q.task.name]))] = q

    def dataset_rows(self) -> list[dict[str, Any]]:
        """The rows of the GRPO train dataset: the conversational prompt and the query id."""
        return [{"prompt": q.prompt(self.method, self.protocols[q.task.name]), "query_id": q.id}
                for q in self.queries]

    # ------------------------------------------------------------------ the rollout

    def __call__(self, prompts: list[list[dict]], trainer) -> dict[str, list]:
        # seeds: 2 per step (reflections, retries), never reused by another step or another process
        step, rank = trainer.state.global_step, trainer.accelerator.process_index
        seed = trainer.args.seed * 100_003 + 2 * step + 1_000_003 * rank
        out = self.generate(self.engine, prompts, seed=seed)
        for key in ("retry_success", "copied_answer", "repeated_attempt", "retry_length"):
            if out.get(key):
                trainer._metrics["train"][f"r3/{key}"].append(sum(out[key]) / len(out[key]))
        for name, share in self.behaviour_shares(out).items():
            trainer._metrics["train"][f"behaviour/{name}"].append(share)
        return out

    def behaviour_shares(self, out: dict[str, list]) -> dict[str, float]:
        """Per behaviour, the share of this step's sampled answers that show it: the attempts (grpo), the
        retries (r3), where the search happens; {} without a classifier."""
        texts = out.get("retry") or out.get("attempt") or []
        return shares(self.behaviours.count(texts)) if self.behaviours is not None and texts else {}

    def generate(self, backend: Backend, prompts: list[list[dict]], seed: int) -> dict[str, list]:
        """One completion per prompt, its reward, and (r3) the retry it led to."""
        queries = []
        for prompt in prompts:
            q = self._by_prompt.get(prompt_key(prompt))
            if q is None:
                raise KeyError(f"rollout: a prompt that is not in the training set: {str(prompt)[:200]}")
            queries.append(q)
        if len({q.task.name for q in queries}) > 1:
            raise ValueError("rollout: a batch mixes tasks; train one task per trainer")
        return self._generate_task(prompts, queries, backend, self.protocols[queries[0].task.name], seed)

    def _generate_task(self, prompts, queries: list[Query], backend: Backend, proto: ProtocolConfig,
                       seed: int) -> dict[str, list]:
        task = queries[0].task
        if self.method == "grpo":
            requests = [Request(p, proto.prefill) for p in prompts]
            attempts = [c[0] for c in backend.generate(requests, _one(proto.attempt, seed, logprobs=True),
                                                       desc="grpo attempts")]
            texts = [attempt_text(proto.prefill, c) for c in attempts]
            verdicts = [task.verify(t, q.ground_truth) for t, q in zip(texts, queries, strict=True)]
            self.generated_tokens += sum(c.num_tokens for c in attempts)
            return {"prompt_ids": [backend.encode(r) for r in requests],
                    "completion_ids": [list(c.token_ids) for c in attempts], "logprobs": _logprobs(attempts),
                    "outcome": [float(v.correct) for v in verdicts], "category": [v.category for v in verdicts],
                    "attempt": texts}

        requests = [Request(p) for p in prompts]
        reflections = [c[0] for c in backend.generate(requests, _one(proto.reflection, seed, logprobs=True),
                                                      desc="r3 reflections")]
        retry_requests = [Request(retry_conversation(q.task_prompt, q.attempt, r.text, proto), proto.prefill)
                          for q, r in zip(queries, reflections, strict=True)]
        retries = [c[0] for c in backend.generate(retry_requests, _one(proto.attempt, seed + 1), desc="r3 retries")]
        texts = [attempt_text(proto.prefill, c) for c in retries]
        verdicts = [task.verify(t, q.ground_truth) for t, q in zip(texts, queries, strict=True)]
        origin = [retry_provenance(task, q.attempt, r.text, t)
                  for q, r, t in zip(queries, reflections, texts, strict=True)]
        copied = [c for c, _ in origin]
        rewards = [float(v.correct and not (self.zero_copied and c)) for v, c in zip(verdicts, copied, strict=True)]
        self.generated_tokens += sum(c.num_tokens for c in reflections) + sum(c.num_tokens for c in retries)
        return {"prompt_ids": [backend.encode(r) for r in requests],
                "completion_ids": [list(c.token_ids) for c in reflections], "logprobs": _logprobs(reflections),
                "outcome": rewards, "category": [v.category for v in verdicts], "retry": texts,
                "retry_success": [float(v.correct) for v in verdicts], "copied_answer": [float(c) for c in copied],
                "repeated_attempt": [float(r) for _, r in origin],
                "retry_length": [c.num_tokens for c in retries]}


def _one(params: SamplingParams, seed: int, logprobs: bool = False) -> SamplingParams:
    return replace(params, n=1, seed=seed, logprobs=logprobs)


def _logprobs(completions) -> list[list[float]] | None:
    """The sampler's logprob of every completion token, or None if the backend gave none (a scripted one)."""
    if any(len(c.logprobs) != len(c.token_ids) for c in completions):
        return None
    return [list(c.logprobs) for c in completions]


def outcome_reward(prompts=None, completions=None, outcome=None, **_) -> list[float]:
    """The GRPO reward function: the verdict the rollout computed (r3: the retry's; grpo: the attempt's)."""
    return list(outcome)
