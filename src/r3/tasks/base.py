"""What every task module provides, and the uniform row schema of task datasets.

A dataset row (one per item, written by the `download` stage) has the columns
`id` (str, unique within the task), `task` (str), `split` ("train" | "validation" | "test"),
`source` (str: where the item came from), `inputs` (JSON str: what the prompt builder needs) and
`ground_truth` (JSON str: what the verifier needs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CORRECT = "correct"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Verdict:
    """A verifier's answer: binary feedback plus the taxonomy category and a short human detail."""

    correct: bool
    category: str  # CORRECT, or one of the task's error categories
    detail: str = ""


@dataclass(frozen=True)
class Item:
    """One task item before it is assigned to a split."""

    id: str
    inputs: dict[str, Any]
    ground_truth: dict[str, Any]
    source: str
    group: str  # items sharing a group always land in the same split (dedup / leakage key)


@dataclass(frozen=True)
class Task:
    """The registry entry of a task: everything the pipeline needs to know about it."""

    name: str
    error_categories: tuple[str, ...]
    # source name -> loader(config: dict, seed: int) -> list[Item]
    sources: dict[str, Callable[[dict[str, Any], int], list[Item]]]
    # assign splits: (items, sizes {"train": n, ...}, seed) -> {item.id: split}
    assign_splits: Callable[[list[Item], dict[str, int], int], dict[str, str]]
    # (inputs, style) -> chat messages of the task prompt ([system?] + user); style names a template
    render_prompt: Callable[[dict[str, Any], str], list[dict[str, str]]]
    prompt_styles: tuple[str, ...]
    # ground truth -> one reference answer in the task's answer format (few-shot demos, priming)
    render_answer: Callable[[dict[str, Any]], str]
    # (completion text, ground truth) -> Verdict; never raises on model output, bounded time
    verify: Callable[[str, dict[str, Any]], Verdict]
    # generation may stop once one of these is produced (the answer is closed)
    stop_strings: tuple[str, ...] = ()
    # completion -> the text of its answer (inside the answer tags), or None: finds reflections that
    # already spell out the answer a retry then copies (reward hacking)
    answer_span: Callable[[str], str | None] = lambda text: None
    # error category -> a regex (case-insensitive) that a reflection naming that error matches; the
    # analysis counts how often a reflection names the error its first attempt actually made
    error_cues: dict[str, str] = field(default_factory=dict)
