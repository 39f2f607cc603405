"""First-try accuracy on held-out items during RL: the learning curve of a training run.

`ValidationCurve` measures it before the first step and every `every` steps (and after the last one): greedy
first attempts, as evaluation makes them, from the rollout engine after the trainer has pushed the policy's
current weights into it. `curve` holds (step, accuracy) pairs; the values after step 0 are also logged with
their step's metrics (`eval/first_try_acc`), so DVCLive draws them beside the training curves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import TrainerCallback

from r3.errors import R3Error
from r3.inference import Backend, SamplingParams
from r3.protocol import sample_first_attempts
from r3.tasks import Task


@dataclass(frozen=True)
class HeldOut:
    """The items a curve is measured on, and how their first attempts are drawn."""

    task: Task
    prompts: list[list[dict]]
    truths: list[dict]
    params: SamplingParams  # n=1; evaluation's temperature
    prefill: str = ""

    def accuracy(self, backend: Backend) -> float:
        attempts = sample_first_attempts(backend, self.task, self.prompts, self.truths, self.params, self.prefill)
        return round(sum(item[0][1].correct for item in attempts) / len(attempts), 4)


def check_interval(every: int | None, max_steps: int) -> None:
    """`train.eval_every` must be a step count within the run (None: no curve)."""
    if every is not None and not 1 <= every <= max_steps:
        raise R3Error(f"train.eval_every={every} must lie in [1, train.max_steps={max_steps}]")


class ValidationCurve(TrainerCallback):
    """See the module docstring. `measure()` gives the accuracy of the engine's current weights; `sync()`
    pushes the policy's weights into the engine. Only the main process measures."""

    def __init__(self, measure: Callable[[], float], sync: Callable[[], None], every: int, main: bool = True):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.measure, self.sync, self.every, self.main = measure, sync, every, main
        self.curve: list[tuple[int, float]] = []
        self._pending: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0 and self.main:  # a resumed run measured its start before the interruption
            self.curve.append((0, self.measure()))  # the engine holds the starting weights

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.every and step < state.max_steps and not control.should_training_stop:
            return control
        self.sync()  # every process: under ZeRO-3 gathering the weights is collective
        if self.main:
            self._pending = self.measure()
            self.curve.append((step, self._pending))
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and self._pending is not None:
            logs["eval/first_try_acc"], self._pending = self._pending, None
