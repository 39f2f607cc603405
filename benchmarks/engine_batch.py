"""Decoding throughput of the engine by batch size (vLLM max_num_seqs, `inference.batch_size`), side by side.

Usage (after `dvc repro` has written the policy and the dataset):
    python benchmarks/engine_batch.py [--model models/primed] [--prompts 512] [--sizes 64 128 256 512]

Greedy first attempts on the first --prompts Countdown test prompts (params.yaml's prompt, budget and stop
string), as the baseline stage makes them, once per batch size. The engine is one per process, so each size
runs in a fresh subprocess, one after another on an otherwise idle machine; the KV cache is
`inference.kv_cache_gib`. Prints tokens, seconds, tok/s and the speed relative to the first size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def one(model: str, batch_size: int, prompts: int) -> dict:
    from r3 import configs
    from r3.dataset import load_rows
    from r3.inference import Request, SamplingParams
    from r3.params import Params
    from r3.prompts import build_prompt
    from r3.tasks import get_task

    p, task = Params.load("params.yaml"), get_task("countdown")
    rows = [r for r in load_rows("data/datasets/countdown.parquet", "countdown") if r.split == "test"][:prompts]
    cfg = configs.prompt_config(p, task)
    backend = configs.backend(p, "primed", model, batch_size=batch_size)
    params = SamplingParams(max_new_tokens=p.get("protocol.countdown.max_attempt_tokens", int), temperature=0.0,
                            stop=tuple(task.stop_strings))
    start = time.perf_counter()
    out = backend.generate([Request(build_prompt(task, r.inputs, cfg), cfg.prefill) for r in rows], params)
    seconds = time.perf_counter() - start
    return {"batch_size": batch_size, "prompts": len(rows), "tokens": sum(c[0].num_tokens for c in out),
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/primed")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a single size, in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.model, args.one, args.prompts)), flush=True)
        return
    rows = []
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--model", args.model, "--prompts", str(args.prompts),
                               "--one", str(size)], capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"error: batch size {size} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
        rows.append(json.loads(line.removeprefix("RESULT ")))
        r = rows[-1]
        speed = r["tokens"] / r["seconds"]
        first = rows[0]["tokens"] / rows[0]["seconds"]
        print(f"batch {size:4d}: {r['prompts']} prompts, {r['tokens']} tokens in {r['seconds']:.1f} s = "
              f"{speed:.0f} tok/s ({speed / first:.2f}x batch {args.sizes[0]})", flush=True)


if __name__ == "__main__":
    main()
