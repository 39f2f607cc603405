"""One R3 training step vs one plain GRPO step with vLLM rollouts, split into weight sync, generation and the rest.

Usage (after `dvc repro` has written the failure set and the policy):
    python benchmarks/train_step.py [--task countdown] [--model models/primed] [--steps 2] [--no-old-path]

The current code path, as `stages/train.py` runs it: `make_trainer` with `Rollout(..., engine=VLLMBackend)` (the
engine built from params.yaml's `inference` section, compiled unless `inference.enforce_eager`), on the policy
model and the task's failure set, with G, queries per step, budgets, temperature, bf16 and the other `train`
params of params.yaml. R3: completion = reflection, then a retry (generation only); GRPO: completion = 1st
attempt. One engine serves both runs (TRL syncs the policy's weights into it before the first rollout of each
run); its start is timed apart.

Each method runs one warm-up step and then `--steps` timed optimizer steps. A step's wall time runs from
`on_step_begin` to `on_step_end` (rollout, logprobs, backward and optimizer step; logging excluded) and is split
into: weight sync (`EngineSync.sync_weights`, which TRL calls before the rollout whenever the step changed),
rollout generation (`Rollout.__call__`: generation and verification) and the rest (TRL's logprob passes,
backward, optimizer). The R3 step is expected to cost more than a GRPO step by about the retry's generation;
the aim is at most 1.7x.

The old path (unless --no-old-path): the rollout of commit OLD_COMMIT (the hand-written decode loop over a bf16
copy of the policy, re-synced by `load_state_dict`), loaded from git history with its backend import pointed
at `benchmarks/handwritten_backend.py`, under the current `make_trainer` (no engine, so no importance-sampling
correction). It runs before the engine starts, because the in-process engine binds the process's OpenMP
threads. Its sync is the copy's `backend_for` (inside the rollout; subtracted from its generation time).

After the runs, a sync check: the engine's greedy completion of one prompt with the policy's weights, with
those weights perturbed (synced in, the completion must change) and with them restored (it must come back),
which also times one real `VLLMBackend.sync_weights`. A compiled graph that kept stale weights would show here.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import replace

import torch
from transformers import TrainerCallback

from r3 import configs
from r3.inference.base import Request, SamplingParams
from r3.params import Params
from r3.tasks import get_task
from r3.training import grpo
from r3.training.rollout import Rollout, failure_queries

PREVIOUS_R3_STEP_S = 73.4  # R3 step on the previous code path, measured on this machine (README: 73.4 vs 74.9 s)
OLD_COMMIT = "f8d4f2e"  # the last commit whose rollout generated with the hand-written loop


class Clock(TrainerCallback):
    """Wall time of each optimizer step, and the time spent inside it in the wrapped parts (`Clock.add`)."""

    current: Clock | None = None  # the clock of the trainer now running

    def __init__(self, rollout):
        self.rollout, self.steps = rollout, []

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append({"sync": 0.0, "rollout": 0.0, "engine_sync_s": 0.0, "engine_syncs": 0, "logp_nograd": 0.0,
                           "start": time.perf_counter(),
                           "tokens": self.rollout.generated_tokens})

    def on_step_end(self, args, state, control, **kwargs):
        s = self.steps[-1]
        s["step"] = time.perf_counter() - s.pop("start")
        s["tokens"] = self.rollout.generated_tokens - s["tokens"]

    @classmethod
    def add(cls, key: str, value: float) -> None:
        if cls.current is not None and cls.current.steps:
            cls.current.steps[-1][key] += value


def clocked(cls, name: str, key: str, count: str | None = None) -> None:
    """Wrap `cls.name` so that its wall time is added to the running step's `key` (and 1 to `count`)."""
    original = getattr(cls, name)

    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            Clock.add(key, time.perf_counter() - start)
            if count:
                Clock.add(count, 1)

    setattr(cls, name, wrapper)


def clock_logprob_passes() -> None:
    """Time GRPOTrainer's no-grad logprob passes (the old-policy logprobs that importance sampling needs)."""
    from trl import GRPOTrainer

    original = GRPOTrainer._get_per_token_logps_and_entropies

    def wrapper(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return original(self, *args, **kwargs)
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            Clock.add("logp_nograd", time.perf_counter() - start)

    GRPOTrainer._get_per_token_logps_and_entropies = wrapper


def old_rollout_module():
    """The rollout module of OLD_COMMIT, its `r3.inference.transformers_backend` import served by the frozen copy."""
    import handwritten_backend

    sys.modules.setdefault("r3.inference.transformers_backend", handwritten_backend)
    path = "src/r3/training/rollout.py"
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:{path}"], check=True, capture_output=True, text=True).stdout
    module = sys.modules["r3_old_rollout"] = types.ModuleType("r3_old_rollout")
    exec(compile(source, f"{OLD_COMMIT}:{path}", "exec"), module.__dict__)
    return module


def run(name: str, label: str, rollout, model: str, hparams: dict, steps: int, nested_sync: bool = False) -> dict:
    clock = Clock.current = Clock(rollout)
    with tempfile.TemporaryDirectory() as out:
        trainer = grpo.make_trainer(model, rollout, out, max_steps=steps + 1, callbacks=[clock], **hparams)
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's log lines: terminal, not the report
            trainer.train()
    Clock.current = None
    timed = clock.steps[1:] or clock.steps

    def mean(key):
        return sum(s[key] for s in timed) / len(timed)

    sync, rollout_s = mean("sync"), mean("rollout")
    generation = rollout_s - sync if nested_sync else rollout_s
    logp = [e for e in trainer.state.log_history if "sampling/sampling_logp_difference/mean" in e]
    return {"name": name, "label": label, "step": mean("step"), "sync": sync, "generation": generation,
            "rest": mean("step") - sync - generation, "logp_nograd": mean("logp_nograd"), "tokens": mean("tokens"),
            "steps": len(timed),
            "engine_syncs": sum(s["engine_syncs"] for s in clock.steps), "all_steps": clock.steps,
            "logp_diff": [(e["sampling/sampling_logp_difference/mean"], e["sampling/sampling_logp_difference/max"])
                          for e in logp], "trainer": trainer}


def sync_check(engine, model) -> list[str]:
    """Greedy completion with the policy's weights, perturbed weights synced in, and the weights restored."""
    request = [Request([{"role": "user", "content": "Using the numbers [3, 5, 7], make an equation that equals 22."}])]
    greedy = SamplingParams(max_new_tokens=24)
    with grpo.policy_weights(model) as weights:
        weights = [(n, t.clone()) for n, t in weights]
    start = time.perf_counter()
    engine.sync_weights(weights)
    seconds = time.perf_counter() - start
    text = engine.generate(request, greedy)[0][0].text
    generator = torch.Generator().manual_seed(0)
    engine.sync_weights([(n, t + t.float().std() * torch.randn(t.shape, generator=generator).to(t.dtype))
                         for n, t in weights])
    perturbed = engine.generate(request, greedy)[0][0].text
    engine.sync_weights(weights)
    restored = engine.generate(request, greedy)[0][0].text
    ok = perturbed != text and restored == text
    return [f"Sync check ({'PASS' if ok else 'FAIL'}): one `VLLMBackend.sync_weights` of the policy's "
            f"{len(weights)} tensors took {seconds:.2f} s; a perturbed copy synced in "
            f"{'changed' if perturbed != text else 'did NOT change'} the greedy completion, restoring the weights "
            f"{'brought it back' if restored == text else 'did NOT bring it back'} ({text[:60]!r} / "
            f"{perturbed[:60]!r} / {restored[:60]!r})."]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="countdown")
    ap.add_argument("--model", default=None, help="default: models/<policy> from params.yaml")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per method (after one warm-up step)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-old-path", action="store_true", help="skip the old rollout path (hand-written loop)")
    args = ap.parse_args()
    p = Params.load(args.params)
    task = get_task(args.task)
    policy = p.get("policy", str, choices=configs.POLICIES)
    model = args.model or str(configs.model_dir(policy))
    seed, t = p.get("seed", int), p.section("train")
    temperature, top_p = t.get("temperature", float, min_value=0.0), t.get("top_p", float)
    proto = configs.protocol_config(p, task, temperature, top_p, seed)
    # train.max_reflection_tokens / max_retry_tokens override the protocol's budgets (as stages/train.py does)
    proto = replace(proto, reflection=replace(proto.reflection, max_new_tokens=t.get(
        "max_reflection_tokens", (int, type(None)), None) or proto.reflection.max_new_tokens),
        attempt=replace(proto.attempt, max_new_tokens=t.get(
            "max_retry_tokens", (int, type(None)), None) or proto.attempt.max_new_tokens))
    group, per_step = t.get("num_generations", int), t.get("queries_per_step", int)
    hparams = dict(num_generations=group, queries_per_step=per_step, learning_rate=t.get("learning_rate", float),
                   beta=t.get("beta", float), loss_type=t.get("loss_type", str),
                   scale_rewards=t.get("scale_rewards", str), bf16=t.get("bf16", bool),
                   micro_batch_size=t.get("micro_batch_size", (int, type(None)), None),
                   gradient_checkpointing=t.get("gradient_checkpointing", bool), temperature=temperature,
                   top_p=top_p, seed=seed, lora=t.get("lora", dict) if t.get("lora.enabled", bool) else None)
    failures = f"data/failures/{task.name}.parquet"
    n_queries = per_step * (args.steps + 1)
    say = lambda *a: print(*a, flush=True)  # noqa: E731
    say(f"# Training step benchmark\n\nmodel `{model}`, task {task.name}, {n_queries} queries of `{failures}`, "
        f"G {group}, {per_step} queries/step, reflection budget {proto.reflection.max_new_tokens}, attempt/retry "
        f"budget {proto.attempt.max_new_tokens} tokens, temperature {temperature}, bf16 {hparams['bf16']}; 1 warm-up "
        f"+ {args.steps} timed steps per method; {os.cpu_count()} CPUs, "
        "load average {:.2f} {:.2f} {:.2f} at the start.\n".format(*os.getloadavg()))
    budget = {"r3": proto.reflection.max_new_tokens, "grpo": proto.attempt.max_new_tokens}
    results, notes = [], []

    clock_logprob_passes()
    if not args.no_old_path:  # before the engine exists (it binds the process's OpenMP threads)
        old = old_rollout_module()
        rollout = old.Rollout("r3", old.failure_queries(failures, task)[:n_queries], {task.name: proto})
        rollout.engine = None  # the current make_trainer reads it; None: no engine, no weight sync
        clocked(old.Rollout, "__call__", "rollout")
        clocked(old.Rollout, "backend_for", "sync")
        results.append(run("R3 old", f"R3, old path (hand-written loop, rollout.py of {OLD_COMMIT})", rollout, model,
                           {**hparams, "max_completion_length": budget["r3"]}, args.steps, nested_sync=True))
        del results[-1]["trainer"], rollout
        gc.collect()

    from r3.inference.vllm_backend import VLLMBackend

    clocked(grpo.EngineSync, "sync_weights", "sync")
    clocked(VLLMBackend, "sync_weights", "engine_sync_s", "engine_syncs")
    clocked(Rollout, "__call__", "rollout")
    start = time.perf_counter()
    engine = configs.backend(p, policy, model)
    notes.append(f"vLLM engine start: {time.perf_counter() - start:.1f} s (params.yaml `inference`, enforce_eager "
                 f"{p.get('inference.enforce_eager', bool)}; excluded from the steps); torch threads with the engine "
                 f"up: {torch.get_num_threads()}.")
    queries = failure_queries(failures, task)[:n_queries]
    new = {}
    for method in ("grpo", "r3"):
        rollout = Rollout(method, queries, {task.name: proto}, engine=engine)
        name = "R3" if method == "r3" else "GRPO"
        new[method] = run(name, f"{name}, vLLM rollouts", rollout, model,
                          {**hparams, "max_completion_length": budget[method]}, args.steps)
        results.insert(len(new) - 1, new[method])
    del new["grpo"]["trainer"]

    say("| run | step (s) | weight sync (s) | rollout generation (s) | rest: logprobs + backward + optimizer (s) | "
        "of the rest: no-grad logprob pass (s) | generated tokens/step |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        say(f"| {r['label']} | {r['step']:.1f} | {r['sync']:.2f} | {r['generation']:.1f} | {r['rest']:.1f} | "
            f"{r['logp_nograd']:.1f} | {r['tokens']:.0f} |")
    say("\nMeans over the timed steps. Every step, warm-up first (step / sync / rollout seconds): " + "; ".join(
        f"{r['name']}: " + ", ".join(f"{s['step']:.1f}/{s['sync']:.2f}/{s['rollout']:.1f}" for s in r["all_steps"])
        for r in results) + ".\n")
    r3, grpo_ = new["r3"], new["grpo"]
    say(f"- R3 step / GRPO step (this run) = {r3['step']:.1f} / {grpo_['step']:.1f} s = "
        f"{r3['step'] / grpo_['step']:.2f}x (aim: <= 1.7x)")
    say(f"- R3 step vs the previous code path's R3 step of {PREVIOUS_R3_STEP_S:.1f} s (previous measurement, not this "
        f"run): {PREVIOUS_R3_STEP_S:.1f} / {r3['step']:.1f} s = {PREVIOUS_R3_STEP_S / r3['step']:.2f}x "
        "(> 1: faster now)")
    old_runs = [r for r in results if "old path" in r["label"]]
    if old_runs:
        o = old_runs[0]
        say(f"- R3 step vs the old path measured in this run: {o['step']:.1f} / {r3['step']:.1f} s = "
            f"{o['step'] / r3['step']:.2f}x (> 1: faster now); rollout generation {o['generation']:.1f} / "
            f"{r3['generation']:.1f} s = {o['generation'] / r3['generation']:.2f}x")
    else:
        say("- old path: not measured in this run (--no-old-path)")
    for r in (grpo_, r3):
        syncs = r["engine_syncs"]
        diffs = ", ".join(f"{m:.4f}/{x:.3f}" for m, x in r["logp_diff"])
        say(f"- {r['label']}: {syncs} weight sync(s) reached the engine in {len(r['all_steps'])} steps"
            f"{'' if syncs else ' -- EngineSync.sync_weights pushed NO weights into the engine'}; |engine - policy| "
            f"logprob difference per step (mean/max): {diffs or 'not logged'}")
    say("\n" + "\n".join(notes + sync_check(engine, r3["trainer"].accelerator.unwrap_model(r3["trainer"].model))))
    say("\nLoad average {:.2f} {:.2f} {:.2f} at the end (other processes on this machine slow every step).".format(
        *os.getloadavg()))


if __name__ == "__main__":
    main()
