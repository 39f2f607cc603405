"""The task registry: task name -> Task (loaders, splits, prompts, verifier, error taxonomy).

A new task is one module exposing `TASK` plus one line here.
"""

from __future__ import annotations

from r3.errors import R3Error
from r3.tasks import countdown, function_calling
from r3.tasks.base import CORRECT, SPLITS, Item, Task, Verdict

TASKS: dict[str, Task] = {t.name: t for t in (countdown.TASK, function_calling.TASK)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise R3Error(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


__all__ = ["CORRECT", "SPLITS", "TASKS", "Item", "Task", "Verdict", "get_task"]
