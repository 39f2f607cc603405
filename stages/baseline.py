"""baseline@<task>-<policy>: the policy's 1st try / reflection / 2nd try on the test split (`--split validation`
for tuning).

The `evaluate` stages run this same script on a trained model (`--model`), so vanilla and trained
policies go through one protocol by construction. A reference run, one that is not of the compared pair (a
policy other than the starting `policy`, e.g. the raw model, or a model trained on another task), measures
`baseline.reference_items` of the test items (drawn by id hash, the same for every run), so the compared pair
gets the whole test split within the time budget.
"""

import hashlib
import json

import pandas as pd

from r3 import cli, configs
from r3.artifacts import write_json, write_parquet
from r3.dataset import load_rows
from r3.errors import R3Error
from r3.metrics import protocol_metrics
from r3.params import Params
from r3.prompts import build_prompt
from r3.protocol import run_protocol
from r3.tasks import get_task

log = cli.log


def main(args):
    p = Params.load(args.params)
    task = get_task(args.task)
    seed = p.get("seed", int)
    stage = p.section("baseline")
    temperature = stage.get("temperature", float, min_value=0.0)
    top_p = stage.get("top_p", float, min_value=0.0, max_value=1.0)
    limit = stage.get("limit", (int, type(None)), None, min_value=1)
    reference_items = stage.get("reference_items", (int, type(None)), None, min_value=1)
    prompt_cfg = configs.prompt_config(p, task)
    proto_cfg = configs.protocol_config(p, task, temperature, top_p, seed)

    rows = load_rows(args.data, task.name)
    test = [r for r in rows if r.split == args.split][:limit]
    if not test:
        raise R3Error(f"{args.data}: no {args.split!r} items")
    if is_reference(args, p.get("policy", str), task.name) and reference_items is not None:
        test = reference_sample(test, reference_items)
        log.info("%s/%s: a reference run, on %d of the test items (baseline.reference_items)", task.name,
                 args.policy, len(test))
    shots = [(r.inputs, r.ground_truth) for r in rows if r.split == "train"][: prompt_cfg.few_shot]
    prompts = [build_prompt(task, r.inputs, prompt_cfg, shots) for r in test]
    backend = configs.backend(p, args.policy, args.model)

    records = run_protocol(backend, task, prompts, [r.ground_truth for r in test], proto_cfg)
    df = pd.DataFrame([{"id": r.id, "task": task.name, "split": r.split, "policy": args.policy,
                        "prompt": json.dumps(m, ensure_ascii=False), "ground_truth": json.dumps(r.ground_truth),
                        **rec} for r, m, rec in zip(test, prompts, records, strict=True)])
    metrics = protocol_metrics(records, task.error_categories, seed=seed)
    write_parquet(df, args.out)
    write_json(metrics, args.metrics)
    log.info("%s/%s: first %.3f second %.3f (n=%d)", task.name, args.policy,
             metrics["first_try_acc"], metrics["second_try_acc"], metrics["n"])


def is_reference(args, policy: str, task: str) -> bool:
    """A run that is not one of the compared pair (the starting `policy` and the model trained on this task):
    another policy's baseline (the raw model) or a model trained on another task (the forgetting check)."""
    return args.trained_on != task if args.trained_on else args.policy != policy


def reference_sample(items: list, n: int) -> list:
    """`n` of the items, drawn by a hash of their ids: the same items for every run and policy, and no bias
    from the id order (function-calling ids sort by BFCL category)."""
    chosen = set(sorted((r.id for r in items), key=lambda i: hashlib.sha256(i.encode()).hexdigest())[:n])
    return [r for r in items if r.id in chosen]


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True, policy=True)
    parser.add_argument("--data", required=True, help="the task's dataset Parquet")
    parser.add_argument("--model", help="model directory (default: models/<policy>)")
    parser.add_argument("--trained-on", help="the task --model was trained on (evaluate): another task than --task "
                        "makes this a reference run, on baseline.reference_items test items")
    parser.add_argument("--split", default="test", choices=("test", "validation"),
                        help="the split to measure (validation: tuning without touching test)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    cli.stage_main("baseline", main, parser)
