"""Building the first user turn of a task: template style, few-shot demonstrations, prefill.

The turn layout (DESIGN.md section 8) is fixed: [system?] + [few-shot user/assistant pairs] +
user = task prompt; assistant = 1st attempt (starting with `prefill`); user = reflection
instruction; assistant = reflection; user = retry instruction; assistant = retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from r3.params import Params
from r3.tasks import Task


@dataclass(frozen=True)
class PromptConfig:
    style: str
    few_shot: int = 0
    prefill: str = ""  # text the assistant turn starts with; it is part of the attempt

    @classmethod
    def from_params(cls, p: Params, task: Task) -> PromptConfig:
        return cls(
            style=p.get("style", str, choices=task.prompt_styles),
            few_shot=p.get("few_shot", int, 0, min_value=0, max_value=8),
            prefill=p.get("prefill", str, ""),
        )


def build_prompt(task: Task, inputs: dict[str, Any], cfg: PromptConfig,
                 shots: list[tuple[dict[str, Any], dict[str, Any]]] = ()) -> list[dict[str, str]]:
    """Chat messages up to (not including) the first assistant turn."""
    messages = task.render_prompt(inputs, cfg.style)
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    demos: list[dict[str, str]] = []
    for shot_inputs, shot_truth in list(shots)[: cfg.few_shot]:
        shot = task.render_prompt(shot_inputs, cfg.style)
        shot_system = "\n\n".join(m["content"] for m in shot if m["role"] == "system")
        turns = [dict(m) for m in shot if m["role"] != "system"]
        # a demo whose system prompt differs (e.g. its own tool list) carries it in its user turn
        if shot_system and [shot_system] != [m["content"] for m in system]:
            turns[0]["content"] = f"{shot_system}\n\n{turns[0]['content']}"
        demos += turns + [{"role": "assistant", "content": task.render_answer(shot_truth)}]
    return system + demos + rest
