"""First-try accuracy of a policy on generated Countdown puzzles of several difficulty settings.

    python tools/difficulty_probe.py [--policy primed] [--items 128] [--seed 777]

Each setting (SETTINGS below: numbers per puzzle, number range, target range) generates --items puzzles
with its own seed (not the pipeline's splits), prompts them as params.yaml prompts Countdown, and draws
one greedy first attempt each from models/<policy> on the project's engine. Prints one line per setting:
accuracy and error categories. The README's difficulty table came from this on the primed model.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from r3 import configs
from r3.inference import SamplingParams
from r3.params import Params
from r3.prompts import build_prompt
from r3.protocol import sample_first_attempts
from r3.tasks import countdown, get_task

SETTINGS = {
    "3 numbers 1-10, targets 1-50 (default)": {"num_numbers": 3, "number_range": [1, 10], "target_range": [1, 50]},
    "2-3 numbers 1-10, targets 1-50": {"num_numbers": [2, 3], "number_range": [1, 10], "target_range": [1, 50]},
    "3 numbers 1-10, targets 1-20": {"num_numbers": 3, "number_range": [1, 10], "target_range": [1, 20]},
    "3 numbers 1-6, targets 1-30": {"num_numbers": 3, "number_range": [1, 6], "target_range": [1, 30]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default="primed")
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()
    p, task = Params.load("params.yaml"), get_task("countdown")
    prompt_cfg = configs.prompt_config(p, task)
    budget = p.get("protocol.countdown.max_attempt_tokens", int, min_value=1)
    params = SamplingParams(max_new_tokens=budget, stop=tuple(task.stop_strings))
    backend = configs.backend(p, args.policy)
    for name, setting in SETTINGS.items():
        items = countdown.load_generated({**setting, "n_items": args.items}, seed=args.seed)
        start = time.perf_counter()
        out = sample_first_attempts(backend, task, [build_prompt(task, it.inputs, prompt_cfg) for it in items],
                                    [it.ground_truth for it in items], params, prompt_cfg.prefill)
        verdicts = [item[0][1] for item in out]
        right = sum(v.correct for v in verdicts)
        print(f"{name}: {right}/{len(verdicts)} = {right / len(verdicts):.3f} "
              f"{dict(Counter(v.category for v in verdicts))} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
