"""Prompt search on the validation split: first-try accuracy of prompt formats for one policy.

Tries each candidate (template style, few-shot demonstrations from train, assistant prefill) with
greedy decoding and prints accuracy and error categories per candidate, so the prompt in
params.yaml is chosen on validation, never on test.

    python tools/prompt_search.py --task countdown --policy raw [--limit 64]
"""

import argparse
import json
from collections import Counter

from r3 import configs
from r3.dataset import load_rows
from r3.inference import SamplingParams
from r3.params import Params
from r3.prompts import PromptConfig, build_prompt
from r3.protocol import sample_first_attempts
from r3.tasks import get_task

CANDIDATES = {
    "countdown": [
        PromptConfig("tinyzero"),
        PromptConfig("tinyzero", prefill="<think>"),
        PromptConfig("concise"),
        PromptConfig("concise", prefill="<answer>"),
        PromptConfig("concise", few_shot=3),
        PromptConfig("concise", few_shot=3, prefill="<answer>"),
        PromptConfig("tinyzero", few_shot=3),
    ],
    "function_calling": [
        PromptConfig("xlam"),
        PromptConfig("xlam", prefill="<tool_call>["),
        PromptConfig("xlam", prefill='<tool_call>[{"name": "'),
        PromptConfig("user"),
        PromptConfig("user", prefill="<tool_call>["),
        PromptConfig("xlam", few_shot=2, prefill="<tool_call>["),
        PromptConfig("user", few_shot=2, prefill="<tool_call>["),
    ],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, choices=sorted(CANDIDATES))
    ap.add_argument("--policy", default="raw")
    ap.add_argument("--data", help="dataset Parquet (default: data/datasets/<task>.parquet)")
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--only", type=int, nargs="*", help="indices of the candidates to try (default: all)")
    args = ap.parse_args()
    p = Params.load(args.params)
    task = get_task(args.task)
    rows = load_rows(args.data or f"data/datasets/{task.name}.parquet", task.name)
    val = [r for r in rows if r.split == "validation"][: args.limit]
    shots = [(r.inputs, r.ground_truth) for r in rows if r.split == "train"]
    backend = configs.backend(p, args.policy)
    max_tokens = p.get(f"protocol.{task.name}.max_attempt_tokens", int)
    results = []
    candidates = CANDIDATES[task.name]
    for cfg in [candidates[i] for i in args.only] if args.only else candidates:
        prompts = [build_prompt(task, r.inputs, cfg, shots) for r in val]
        params = SamplingParams(max_new_tokens=max_tokens, stop=task.stop_strings)
        samples = sample_first_attempts(backend, task, prompts, [r.ground_truth for r in val], params, cfg.prefill)
        cats = Counter(v.category for s in samples for _, v, _ in s)
        acc = cats.get("correct", 0) / len(val)
        results.append({"style": cfg.style, "few_shot": cfg.few_shot, "prefill": cfg.prefill,
                         "acc": round(acc, 4), "n": len(val), "categories": dict(cats)})
        print(json.dumps(results[-1]), flush=True)
    print(f"\n| style | few-shot | prefill | acc (n={len(val)}) | categories |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['style']} | {r['few_shot']} | `{r['prefill']}` | {r['acc']:.3f} | {r['categories']} |")


if __name__ == "__main__":
    main()
