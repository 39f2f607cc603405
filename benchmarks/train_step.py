"""One R3 training step vs one plain GRPO step, on the same failure-set queries and budgets, in one run.

Usage (after `dvc repro` has written the failure set and the policy):
    python benchmarks/train_step.py [--task countdown] [--model models/primed] [--steps 2]

R3: completion = reflection (max_reflection_tokens), then a retry (max_attempt_tokens, generation only);
GRPO: completion = 1st attempt (max_attempt_tokens). Both: the same queries, G, queries per step, bf16
autocast, the same seed. Each method runs `--steps` optimizer steps after one warm-up step; the figure is
the mean wall time of the timed steps (TRL's `step_time`), split into generation and the rest. The R3 step
is expected to cost more by about the retry's generation; the aim is at most 1.7x a plain step.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from r3 import configs
from r3.params import Params
from r3.tasks import get_task
from r3.training.grpo import make_trainer
from r3.training.rollout import Query, Rollout, failure_queries


class TimedRollout(Rollout):
    """A rollout that records its wall time per call."""

    seconds: list

    def __call__(self, prompts, trainer):
        start = time.perf_counter()
        out = super().__call__(prompts, trainer)
        self.seconds.append(time.perf_counter() - start)
        return out


def run(method: str, model: str, queries: list[Query], proto, args) -> dict:
    rollout = TimedRollout(method, queries, {queries[0].task.name: proto})
    rollout.seconds = []
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(model, rollout, out, num_generations=args.group, queries_per_step=args.queries,
                               max_steps=args.steps + 1, bf16=True, learning_rate=1e-6, seed=0,
                               max_completion_length=proto.attempt.max_new_tokens)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
    steps = [e["step_time"] for e in trainer.state.log_history if "step_time" in e]
    timed, gen = steps[1:] or steps, rollout.seconds[1:] or rollout.seconds
    return {"method": method, "step_s": sum(timed) / len(timed), "generation_s": sum(gen) / len(gen),
            "generated_tokens_per_step": rollout.generated_tokens / len(steps), "wall_s": total}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="countdown")
    ap.add_argument("--model", default=None, help="default: models/<policy> from params.yaml")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    p = Params.load(args.params)
    task = get_task(args.task)
    model = args.model or str(configs.model_dir(p.get("policy", str)))
    proto = configs.protocol_config(p, task, 1.0, 1.0, 0)
    queries = failure_queries(f"data/failures/{task.name}.parquet", task)[: args.queries * (args.steps + 1)]
    results = [run(method, model, queries, proto, args) for method in ("grpo", "r3")]
    for r in results:
        print(f"{r['method']:5s} step {r['step_s']:7.1f} s  (generation {r['generation_s']:6.1f} s, "
              f"{r['generated_tokens_per_step']:.0f} generated tokens/step)")
    print(f"R3 step / GRPO step = {results[1]['step_s'] / results[0]['step_s']:.2f}x (aim: <= 1.7x)")


if __name__ == "__main__":
    main()
