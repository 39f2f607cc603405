"""The reflect-retry protocol: 1st attempt -> verify -> reflect -> retry -> verify.

One implementation serves the baseline, evaluation and (through the conversation builders)
the training rollouts, so every stage sees the same turn layout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from r3.inference import Backend, Completion, Request, SamplingParams
from r3.tasks import Task


@dataclass(frozen=True)
class ProtocolConfig:
    reflection_instruction: str
    retry_instruction: str
    attempt: SamplingParams  # first attempt and retry
    reflection: SamplingParams
    prefill: str = ""


def reflection_conversation(prompt: list[dict], attempt: str, cfg: ProtocolConfig) -> list[dict]:
    """The conversation the model continues with its reflection."""
    return prompt + [
        {"role": "assistant", "content": attempt},
        {"role": "user", "content": cfg.reflection_instruction},
    ]


def retry_conversation(prompt: list[dict], attempt: str, reflection: str, cfg: ProtocolConfig) -> list[dict]:
    """The conversation the model continues with its retry: its own reflection is in context."""
    return reflection_conversation(prompt, attempt, cfg) + [
        {"role": "assistant", "content": reflection},
        {"role": "user", "content": cfg.retry_instruction},
    ]


def attempt_text(prefill: str, completion: Completion) -> str:
    return prefill + completion.text


def verify_all(task: Task, texts: list[str], truths: list[dict]) -> list[Any]:
    return [task.verify(text, truth) for text, truth in zip(texts, truths, strict=True)]


def run_protocol(backend: Backend, task: Task, prompts: list[list[dict]], truths: list[dict],
                 cfg: ProtocolConfig) -> list[dict[str, Any]]:
    """Run the protocol on every item; return one record per item with every text and verdict."""
    firsts = [c[0] for c in backend.generate([Request(p, cfg.prefill) for p in prompts],
                                              replace(cfg.attempt, n=1), desc=f"{task.name} 1st try")]
    first_texts = [attempt_text(cfg.prefill, c) for c in firsts]
    first_verdicts = verify_all(task, first_texts, truths)
    failed = [i for i, v in enumerate(first_verdicts) if not v.correct]

    reflections = backend.generate(
        [Request(reflection_conversation(prompts[i], first_texts[i], cfg)) for i in failed],
        replace(cfg.reflection, n=1), desc=f"{task.name} reflect")
    retries = backend.generate(
        [Request(retry_conversation(prompts[i], first_texts[i], r[0].text, cfg), cfg.prefill)
         for i, r in zip(failed, reflections, strict=True)],
        replace(cfg.attempt, n=1), desc=f"{task.name} retry")
    second = {i: (r[0], t[0]) for i, r, t in zip(failed, reflections, retries, strict=True)}

    records = []
    for i, (first, verdict) in enumerate(zip(firsts, first_verdicts, strict=True)):
        rec = {
            "first_attempt": first_texts[i], "first_tokens": first.num_tokens,
            "first_finish": first.finish_reason, "first_correct": verdict.correct,
            "first_category": verdict.category, "first_detail": verdict.detail,
            "reflection": None, "reflection_tokens": None, "retry": None, "retry_tokens": None,
            "retry_correct": None, "retry_category": None, "retry_detail": None,
        }
        if i in second:
            reflection, retry = second[i]
            retry_text = attempt_text(cfg.prefill, retry)
            retry_verdict = task.verify(retry_text, truths[i])
            rec.update(reflection=reflection.text, reflection_tokens=reflection.num_tokens, retry=retry_text,
                       retry_tokens=retry.num_tokens, retry_correct=retry_verdict.correct,
                       retry_category=retry_verdict.category, retry_detail=retry_verdict.detail)
        # the paper's 2nd-try accuracy: right on the 1st try, or right on the retry
        rec["second_correct"] = bool(verdict.correct or rec["retry_correct"])
        records.append(rec)
    return records


def sample_first_attempts(backend: Backend, task: Task, prompts: list[list[dict]], truths: list[dict],
                          params: SamplingParams, prefill: str = "") -> list[list[tuple[str, Any, Completion]]]:
    """k sampled first attempts per item, each with its verdict (the failure-set stage)."""
    samples = backend.generate([Request(p, prefill) for p in prompts], params, desc=f"{task.name} samples")
    out = []
    for per_item, truth in zip(samples, truths, strict=True):
        texts = [attempt_text(prefill, c) for c in per_item]
        out.append([(t, task.verify(t, truth), c) for t, c in zip(texts, per_item, strict=True)])
    return out
