"""R3 optimizer steps with and without running the micro-batches that carry no advantage, side by side.

Usage (after `dvc repro` has written the failure set and the policy):
    python benchmarks/zero_advantage_skip.py [--task countdown] [--model models/primed] [--steps 3] [--varied 1]

`train.signal_only` skips the forward and backward of a micro-batch whose sequences all have a zero advantage
(they would add exactly zero to the gradient). This times whole optimizer steps of `make_trainer` with the
params.yaml `train` settings on the task's failure-set prompts, once as the stage runs it and once with that
skip turned off, in one process. The rollout is scripted so both runs train on the same batches: the reflections
are real-length texts and the verdicts give `--varied` of the step's `queries_per_step` groups a reward
difference (the CPU default's runs saw about 1 of 8 groups with one). Prints each run's mean step time, their
ratio and the skipped micro-batches; the final weights must be identical (checked).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch
from transformers import AutoTokenizer, TrainerCallback

from r3 import configs
from r3.inference.base import Backend, Completion
from r3.params import Params
from r3.tasks import get_task
from r3.tasks.base import Verdict
from r3.training import grpo
from r3.training.rollout import Rollout, failure_queries

REFLECTION = ("My answer used the numbers in the wrong order, and the check I wrote did not match the value I "
              "computed. I should compute each step again and compare the result with the target before I answer.")


class Script(Backend):
    """Reflections of a real length; a retry is right for the first reflection of the first `varied` groups."""

    def __init__(self, tokenizer, proto, group: int, varied: int):
        self.tokenizer, self.proto, self.group, self.varied = tokenizer, proto, group, varied

    def generate(self, requests, params, desc=""):
        out = []
        for i, r in enumerate(requests):
            retry = r.messages[-1]["content"] == self.proto.retry_instruction
            right = retry and i % self.group == 0 and i // self.group < self.varied
            text = ("RIGHT" if right else "WRONG") if retry else REFLECTION
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + (self.tokenizer.eos_token_id,)
            out.append([Completion(text, len(ids), "stop", ids)])
        return out


class StepClock(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t)


def run(model: str, rollout: Rollout, hp: dict, steps: int, skip: bool) -> tuple[list[float], int, dict]:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        trainer = grpo.make_trainer(model, rollout, out, max_steps=steps + 1, callbacks=[clock], signal_only=True,
                                    **hp)
        if not skip:
            trainer._skips_zero_advantage = lambda: False
        trainer.train()
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return clock.times[1:], trainer.skipped_micro_batches, weights  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="countdown")
    parser.add_argument("--model", default="models/primed")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--varied", type=int, default=1, help="groups with a reward difference per step")
    args = parser.parse_args()
    p, task = Params.load("params.yaml"), get_task(args.task)
    t = p.section("train")
    proto = configs.protocol_config(p, task, 1.0, 1.0, 0)
    g, q = t.get("num_generations", int), t.get("queries_per_step", int)
    hp = dict(num_generations=g, queries_per_step=q, micro_batch_size=t.get("micro_batch_size", (int, type(None))),
              gradient_checkpointing=t.get("gradient_checkpointing", bool), learning_rate=1e-5,
              bf16=t.get("bf16", bool), max_completion_length=proto.reflection.max_new_tokens, weight_decay=0.0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    scripted = replace(task, verify=lambda text, truth: Verdict("RIGHT" in text, "correct" if "RIGHT" in text
                                                                else "missed_target"))
    queries = [replace(x, task=scripted) for x in failure_queries(f"data/failures/{args.task}.parquet", task)]
    results = {}
    for skip in (True, False):
        rollout = Rollout("r3", queries, {args.task: proto}, engine=Script(tokenizer, proto, g, args.varied))
        torch.manual_seed(0)
        results[skip] = run(args.model, rollout, hp, args.steps, skip)
        times, skipped, _ = results[skip]
        print(f"{'skip' if skip else 'compute'}: {sum(times) / len(times):.1f} s per step over {len(times)} steps "
              f"({', '.join(f'{x:.1f}' for x in times)}); micro-batches skipped: {skipped}", flush=True)
    (a, _, wa), (b, _, wb) = results[True], results[False]
    same = all(torch.equal(wa[k], wb[k]) for k in wa)
    print(f"compute / skip step time: {(sum(b) / len(b)) / (sum(a) / len(a)):.2f}x "
          f"({args.varied} of {q} groups varied, G = {g}); final weights identical: {same}")


if __name__ == "__main__":
    main()
