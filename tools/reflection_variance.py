"""How much signal would R3 GRPO get? Reward variance of reflect-retry groups on the failure set.

For each kept failure (task prompt + the recorded failed attempt), sample G reflections, follow
each with a retry, and reward the retry with the verifier. A group whose G rewards are not all
equal is one GRPO can learn from. Prints the fraction of such groups and the retry success rate.

    python tools/reflection_variance.py --task countdown --policy primed --queries 32 --group 4
"""

import argparse
import json
from dataclasses import replace

from r3 import configs
from r3.artifacts import read_parquet
from r3.inference import Request
from r3.params import Params
from r3.protocol import reflection_conversation, retry_conversation
from r3.tasks import get_task


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--policy", default="primed")
    ap.add_argument("--queries", type=int, default=32)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    p = Params.load(args.params)
    task = get_task(args.task)
    path = f"data/failures/{task.name}.parquet"
    df = read_parquet(path, {"prompt": str, "ground_truth": str, "attempt": str}).head(args.queries)
    proto = configs.protocol_config(p, task, args.temperature, 1.0, p.get("seed", int))
    backend = configs.backend(p, args.policy)
    prompts = [json.loads(x) for x in df["prompt"]]
    truths = [json.loads(x) for x in df["ground_truth"]]
    attempts = list(df["attempt"])
    reflections = backend.generate(
        [Request(reflection_conversation(pr, a, proto)) for pr, a in zip(prompts, attempts, strict=True)],
        replace(proto.reflection, n=args.group), desc="reflections")
    retry_requests = [Request(retry_conversation(pr, a, r.text, proto), proto.prefill)
                      for pr, a, group in zip(prompts, attempts, reflections, strict=True) for r in group]
    retries = [c[0] for c in backend.generate(retry_requests, proto.attempt, desc="retries")]
    rewards = [task.verify(proto.prefill + c.text, truths[i // args.group]).correct for i, c in enumerate(retries)]
    groups = [rewards[i:i + args.group] for i in range(0, len(rewards), args.group)]
    varied = sum(0 < sum(g) < len(g) for g in groups)
    print(json.dumps({"task": task.name, "policy": args.policy, "queries": len(groups), "group": args.group,
                      "retry_success": round(sum(rewards) / len(rewards), 4),
                      "groups_with_variance": varied, "fraction_with_variance": round(varied / len(groups), 4)}))


if __name__ == "__main__":
    main()
