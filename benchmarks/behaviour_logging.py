"""The cost of counting behaviours during RL (stages/train.py logs behaviour/<name> every step).

Each step the rules classifier reads the step's sampled answers: queries_per_step x num_generations texts
(grpo: attempts; r3: retries). This times the classifier on that many real answers of the primed policy
(data/baseline/primed/<task>.parquet: first attempts and retries, at their real lengths), repeated over
every batch of the file, and sets it against the mean step time of the last training run
(data/metrics/train_<method>_<task>.json: train_runtime / global_step). Needs `make repro` first.

    python benchmarks/behaviour_logging.py [--task countdown] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
import yaml

from r3.analysis.rules import RulesClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="countdown")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    params = yaml.safe_load(open("params.yaml", encoding="utf-8"))
    train = params["train"]
    batch = train["queries_per_step"] * train["num_generations"]
    df = pd.read_parquet(f"data/baseline/primed/{args.task}.parquet")
    texts = [t for col in ("first_attempt", "retry") for t in df[col] if isinstance(t, str)]
    batches = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    stats = json.load(open(f"data/metrics/train_{train['method']}_{args.task}.json", encoding="utf-8"))
    step_s = stats["train_runtime"] / stats["global_step"]
    classifier = RulesClassifier()
    per_round = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for b in batches:
            classifier.count(b)
        per_round.append((time.perf_counter() - start) / len(batches))
    best, worst = min(per_round), max(per_round)
    chars = sum(map(len, texts)) / len(texts)
    print(f"# Behaviour logging cost ({args.task}, {train['method']})\n")
    print(f"- texts per step: {batch} (queries_per_step x num_generations); mean length {chars:.0f} characters; "
          f"{len(batches)} batches x {args.rounds} rounds")
    print(f"- classifier per step: {1e3 * best:.2f} ms best, {1e3 * worst:.2f} ms worst round")
    print(f"- training step (last run, {stats['global_step']} steps): {step_s:.1f} s")
    print(f"- overhead: {100 * worst / step_s:.4f}% of a step (worst round; target <= 5%)")


if __name__ == "__main__":
    main()
