"""vLLM compiled (CUDA/CPU graphs, `enforce_eager: false`) vs eager (`enforce_eager: true`) on the bundled model:
engine start and generation throughput side by side, in one process, on the stages' own workloads.

Usage (after `dvc repro` has written models/primed):
    python benchmarks/eager.py [--model models/primed] [--prompts 128] [--rounds 2]

Both engines are built from params.yaml's `inference` section with only `enforce_eager` differing, and both stay
up for the whole run. Workloads: the baseline's (Countdown test-style prompts in the priming format, greedy,
`protocol.countdown.max_attempt_tokens`, stop "</answer>") and the failure set's (the same prompts, 8 samples
each at T = 1). Each round runs every workload on the compiled engine and then on the eager one, with the prefix
cache emptied before each run; throughput is generated tokens / wall time, and the ratio is taken per round
(this machine is noisy; nothing else should run meanwhile). The question it answers: does compilation pay for
its ~70 s start in a stage that generates a few hundred completions?
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from r3 import configs
from r3.dataset import load_rows
from r3.inference.base import Request, SamplingParams
from r3.params import Params
from r3.prompts import build_prompt
from r3.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/primed")
    ap.add_argument("--data", default="data/datasets/countdown.parquet")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()

    from r3.inference.vllm_backend import VLLMBackend

    p = Params.load(args.params)
    task = get_task("countdown")
    cfg = configs.prompt_config(p, task)
    rows = [r for r in load_rows(args.data, task.name) if r.split == "train"][: args.prompts]
    requests = [Request(build_prompt(task, r.inputs, cfg), cfg.prefill) for r in rows]
    budget = p.get("protocol.countdown.max_attempt_tokens", int)
    workloads = {
        "greedy (baseline)": SamplingParams(max_new_tokens=budget, temperature=0.0, stop=task.stop_strings),
        f"{args.samples} samples (failures)": SamplingParams(max_new_tokens=budget, temperature=1.0,
                                                             n=args.samples, stop=task.stop_strings),
    }
    options = configs.engine_options(p)
    engines, starts = {}, {}
    for name, eager in (("compiled", False), ("eager", True)):
        start = time.perf_counter()
        engines[name] = VLLMBackend(args.model, **{**options, "enforce_eager": eager})
        starts[name] = time.perf_counter() - start
        print(f"{name} engine start: {starts[name]:.1f} s", flush=True)

    results: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for rnd in range(args.rounds):
        for wname, params in workloads.items():
            reqs = requests if params.n == 1 else requests[: max(1, len(requests) // 4)]
            for name, engine in engines.items():
                engine.llm.reset_prefix_cache()
                start = time.perf_counter()
                out = engine.generate(reqs, params)
                seconds = time.perf_counter() - start
                tokens = sum(c.num_tokens for per in out for c in per)
                results.setdefault((wname, name), []).append((tokens, seconds))
                print(f"round {rnd}: {wname:<24} {name:<8} {tokens:>7} tokens {seconds:6.1f} s "
                      f"{tokens / seconds:6.1f} tok/s", flush=True)

    print(f"\nmodel {Path(args.model)}, {len(requests)} prompts, cores {sorted(os.sched_getaffinity(0))}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"engine start: compiled {starts['compiled']:.1f} s, eager {starts['eager']:.1f} s")
    print("| workload | compiled tok/s | eager tok/s | eager / compiled (per round) |\n|---|---|---|---|")
    for wname in workloads:
        comp, eag = results[(wname, "compiled")], results[(wname, "eager")]
        rate = [t / s for t, s in comp], [t / s for t, s in eag]
        ratios = ", ".join(f"{e / c:.2f}" for c, e in zip(*rate, strict=True))
        print(f"| {wname} | {sum(rate[0]) / len(rate[0]):.1f} | {sum(rate[1]) / len(rate[1]):.1f} | {ratios} |")


if __name__ == "__main__":
    main()
