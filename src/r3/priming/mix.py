"""The priming set: behaviour-rich traces / demonstrations plus reflect-retry dialogues, as chat
examples with the assistant turns that carry the SFT loss (`train_turns`).

A plain example is [task prompt, assistant answer] with the answer trained. A reflect-retry
dialogue follows the protocol's turn layout — task prompt, failed 1st attempt, reflection
instruction, reflection, retry instruction, retry — and only the reflection and the retry are
trained: the failed attempt is context, never a target. Only train-split rows are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r3.dataset import Row
from r3.priming import countdown_traces, function_calling_demos
from r3.prompts import PromptConfig, build_prompt
from r3.protocol import ProtocolConfig, retry_conversation
from r3.tasks import Task


@dataclass(frozen=True)
class MixSpec:
    size: int  # examples for this task
    reflection_fraction: float  # share of them that are reflect-retry dialogues
    variant: str = "all_strategies"  # countdown trace variant
    check_fraction: float = 0.0  # function calling: demos that open with a one-line check


def _plain(prompt: list[dict], answer: str, kind: str, item_id: str) -> dict[str, Any]:
    return {"messages": prompt + [{"role": "assistant", "content": answer}], "train_turns": [len(prompt)],
            "kind": kind, "id": item_id}


def _dialogue(prompt: list[dict], attempt: str, reflection: str, retry: str, proto: ProtocolConfig,
              item_id: str) -> dict[str, Any]:
    messages = retry_conversation(prompt, attempt, reflection, proto) + [{"role": "assistant", "content": retry}]
    n = len(messages)
    return {"messages": messages, "train_turns": [n - 3, n - 1], "kind": "reflection", "id": item_id}


def priming_examples(task: Task, train: list[Row], spec: MixSpec, prompt_cfg: PromptConfig,
                     proto: ProtocolConfig, seed: int) -> list[dict[str, Any]]:
    """The task's share of the priming set, deterministic for a seed."""
    bad = [r.id for r in train if r.split != "train"]
    if bad:
        raise ValueError(f"priming data may only use train rows; got {bad[0]!r}")
    n_dialogues = round(spec.size * spec.reflection_fraction)
    n_plain = spec.size - n_dialogues
    if task.name == "countdown":
        items = [{"id": r.id, "split": r.split, **r.inputs} for r in train]
        traces = countdown_traces.generate_traces(items, spec.variant, n_plain, seed)
        dialogues = countdown_traces.generate_reflection_dialogues(items, n_dialogues, seed + 1)

        def prompt(x):
            return build_prompt(task, {"numbers": list(x.numbers), "target": x.target}, prompt_cfg)

        plain = [_plain(prompt(t), t.text, t.variant, t.id) for t in traces]
    elif task.name == "function_calling":
        demos = function_calling_demos.generate_demos(train, n_plain, seed, spec.check_fraction, prompt_cfg.prefill)
        dialogues = function_calling_demos.generate_reflection_dialogues(train, n_dialogues, seed + 1,
                                                                         prompt_cfg.prefill)

        def prompt(x):
            return build_prompt(task, x.inputs, prompt_cfg)

        plain = [_plain(prompt(d), d.text, "demo", d.id) for d in demos]
    else:
        raise ValueError(f"no priming data for task {task.name!r}")
    examples = plain + [_dialogue(prompt(d), d.first_attempt, d.reflection, d.retry, proto, d.id)
                        for d in dialogues]
    # the policy is prompted with the prefill already in its turn: every trained answer must start with it
    for ex in examples:
        for turn in ex["train_turns"][-1:]:
            if not ex["messages"][turn]["content"].startswith(prompt_cfg.prefill):
                raise ValueError(f"prompt.{task.name}.prefill {prompt_cfg.prefill!r} does not start the "
                                 f"{ex['kind']} answers of the priming data; use a prefill they share")
    return examples
