"""GRPO rollouts for TRL's `GRPOTrainer(rollout_func=...)`: R3 (reflect, retry, reward) and the plain-GRPO control.

`r3`: the prompt is the task prompt + the recorded failed 1st attempt + the reflection instruction
(`protocol.reflection_conversation`); the completion is the reflection, the only tokens in the loss. Each
reflection is followed by a retry that the current policy generates with that reflection in context
(`protocol.retry_conversation`); the retry never enters the completion, and the reward is the verifier's
verdict on it (1/0).
`grpo`: the prompt is the task prompt; the completion is the 1st attempt; the reward is its verdict.

TRL 1.16 hands the rollout the batch's prompts already repeated `num_generations` times (the
`RepeatSampler` repeats dataset rows), so this returns exactly one completion per prompt it receives.
Generation runs on the project's own backend over a copy of the policy that is re-synced from the
trained weights whenever the optimizer has stepped (a bf16 copy makes CPU decoding ~2.5x faster).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from r3.artifacts import read_parquet
from r3.inference import Request, SamplingParams
from r3.inference.transformers_backend import TransformersBackend
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
    dtype: str = "bfloat16"  # the generation copy's dtype
    batch_size: int = 32
    zero_copied: bool = False  # opt-in: a retry that copies an answer first written in the reflection earns 0
    generated_tokens: int = 0  # every token sampled so far, retries included (the budget GRPO is matched on)
    _by_prompt: dict[str, Query] = field(default_factory=dict, repr=False)
    _backend: TransformersBackend | None = field(default=None, repr=False)
    _synced_step: int = field(default=-1, repr=False)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown training method {self.method!r}; choose one of {list(METHODS)}")
        for q in self.queries:
            self._by_prompt[prompt_key(q.prompt(self.method, self.protocols[q.task.name]))] = q

    def dataset_rows(self) -> list[dict[str, Any]]:
        """The rows of the GRPO train dataset: the conversational prompt and the query id."""
        return [{"prompt": q.prompt(self.method, self.protocols[q.task.name]), "query_id": q.id}
                for q in self.queries]

    # ------------------------------------------------------------------ the policy copy used for sampling

    def backend_for(self, model, tokenizer, step: int) -> TransformersBackend:
        """A backend over the current weights of `model` (re-synced when `step` moved on)."""
        if self._backend is None:
            live = not isinstance(model, torch.nn.Module) or hasattr(model, "peft_config")
            # a PEFT model is sampled as is (its adapters change every step); a plain one through a copy
            sampler = model if live else copy.deepcopy(model).to(getattr(torch, self.dtype))
            if sampler is not model:
                # GRPOTrainer patches the instance's `forward` (fused LM head) with a closure over the
                # original model; the copy must run its own forward
                sampler.__dict__.pop("forward", None)
            self._backend = TransformersBackend("", batch_size=self.batch_size, model=sampler,
                                                tokenizer=copy.deepcopy(tokenizer),
                                                device=str(next(model.parameters()).device))
            self._synced_step = step
        elif step != self._synced_step:
            if self._backend.model is not model:
                self._backend.model.load_state_dict(model.state_dict())
            self._synced_step = step
        self._backend.model.eval()  # the live PEFT model is back in train mode after each rollout
        return self._backend

    # ------------------------------------------------------------------ the rollout

    def __call__(self, prompts: list[list[dict]], trainer) -> dict[str, list]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        backend = self.backend_for(model, trainer.processing_class, trainer.state.global_step)
        try:  # seeds: 2 per step (reflections, retries), never reused by another step
            out = self.generate(backend, prompts, seed=trainer.args.seed * 100_003 + 2 * trainer.state.global_step)
        finally:
            model.train(was_training)
        for key in ("retry_success", "copied_answer", "repeated_attempt", "retry_length"):
            if out.get(key):
                trainer._metrics["train"][f"r3/{key}"].append(sum(out[key]) / len(out[key]))
        trainer._metrics["train"]["r3/generated_tokens"].append(self.generated_tokens)
        return out

    def generate(self, backend: TransformersBackend, prompts: list[list[dict]], seed: int) -> dict[str, list]:
        """One completion per prompt, its reward, and (r3) the retry it led to."""
        queries = []
        for prompt in prompts:
            q = self._by_prompt.get(prompt_key(prompt))
            if q is None:
                raise KeyError(f"rollout: a prompt that is not in the training set: {str(prompt)[:200]}")
            queries.append(q)
        if len({q.task.name for q in queries}) > 1:
            raise ValueError("rollout: a batch mixes tasks; train one task per trainer")
        out = self._generate_task(prompts, queries, backend, self.protocols[queries[0].task.name], seed)
        return {**out, "logprobs": None}

    def _generate_task(self, prompts, queries: list[Query], backend: TransformersBackend, proto: ProtocolConfig,
                       seed: int) -> dict[str, list]:
        task = queries[0].task
        if self.method == "grpo":
            requests = [Request(p, proto.prefill) for p in prompts]
            attempts = [c[0] for c in backend.generate(requests, _one(proto.attempt, seed), desc="grpo attempts")]
            verdicts = [task.verify(attempt_text(proto.prefill, c), q.ground_truth)
                        for c, q in zip(attempts, queries, strict=True)]
            self.generated_tokens += sum(c.num_tokens for c in attempts)
            return {"prompt_ids": [backend.encode(r) for r in requests],
                    "completion_ids": [list(c.token_ids) for c in attempts],
                    "outcome": [float(v.correct) for v in verdicts], "category": [v.category for v in verdicts]}

        requests = [Request(p) for p in prompts]
        reflections = [c[0] for c in backend.generate(requests, _one(proto.reflection, seed), desc="r3 reflections")]
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
                "completion_ids": [list(c.token_ids) for c in reflections],
                "outcome": rewards, "category": [v.category for v in verdicts], "retry": texts,
                "retry_success": [float(v.correct) for v in verdicts], "copied_answer": [float(c) for c in copied],
                "repeated_attempt": [float(r) for _, r in origin],
                "retry_length": [c.num_tokens for c in retries]}


def _one(params: SamplingParams, seed: int) -> SamplingParams:
    return replace(params, n=1, seed=seed)


def outcome_reward(prompts=None, completions=None, outcome=None, **_) -> list[float]:
    """The GRPO reward function: the verdict the rollout computed (r3: the retry's; grpo: the attempt's)."""
    return list(outcome)
