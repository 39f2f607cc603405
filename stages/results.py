"""results@<task>: the paper's table for the task, from the protocol records of baseline and evaluate.

Writes, for the selected vanilla policy (`policy`) and the trained model of `train.method`:
  data/metrics/baseline_<task>.json  the vanilla policy's 1st/2nd-try accuracies with CIs, error counts;
  data/metrics/eval_<task>.json      the same for the model trained on this task;
  data/metrics/table_<task>.json     vanilla 1st / 2nd, trained 1st / 2nd with 95% bootstrap CIs, paired
                                     deltas, the minimum detectable effect of each delta at this n (`mde_first`,
                                     `mde_second`: 80% power, alpha 0.05), the raw model for reference, and the
                                     out-of-domain check: every model trained on another task, evaluated here,
                                     against the vanilla policy.
"""

from pathlib import Path

from r3 import cli
from r3.artifacts import read_parquet, records, write_json
from r3.errors import R3Error
from r3.metrics import minimum_detectable_effect, paper_table, protocol_metrics
from r3.params import Params
from r3.tasks import get_task

log = cli.log

RECORD_COLUMNS = {"id": str, "first_correct": bool, "second_correct": bool, "first_category": str}


def load(path: Path) -> list[dict]:
    if not path.is_file():
        raise R3Error(f"{path}: missing protocol records (run the stage that writes it: dvc repro)")
    return records(read_parquet(path, RECORD_COLUMNS))


def paired_differences(vanilla: list[dict], trained: list[dict], key: str) -> list[float]:
    """trained - vanilla correctness per item, paired by id (paper_table has checked that the ids match)."""
    by_id = {r["id"]: r for r in trained}
    return [float(by_id[v["id"]][key]) - float(v[key]) for v in vanilla]


def on_items(vanilla: list[dict], other: list[dict]) -> list[dict]:
    """The vanilla records of the items `other` covers: a reference run (`baseline.reference_items`) measures
    only the first N test items, and is compared with the vanilla policy on those."""
    ids = {r["id"] for r in other}
    return [r for r in vanilla if r["id"] in ids]


def main(args):
    p = Params.load(args.params)
    task = get_task(args.task)
    seed = p.get("seed", int)
    policy = p.get("policy", str)
    method = p.get("train.method", str)
    tasks = p.get("tasks", list)
    baseline, evals = Path(args.baseline), Path(args.eval)

    vanilla = load(baseline / policy / f"{task.name}.parquet")
    trained = load(evals / task.name / f"{task.name}.parquet")
    table = {"vanilla_policy": policy, "trained_method": method, **paper_table(vanilla, trained, seed)}
    for name in ("first", "second"):  # the smallest paired delta this n detects (80% power, alpha 0.05)
        diffs = paired_differences(vanilla, trained, f"{name}_correct")
        table[f"mde_{name}"] = minimum_detectable_effect(diffs) if diffs else None
    if policy != "raw" and (baseline / "raw" / f"{task.name}.parquet").is_file():
        raw = protocol_metrics(load(baseline / "raw" / f"{task.name}.parquet"), task.error_categories, seed)
        table.update(raw_first=raw["first_try_acc"], raw_second=raw["second_try_acc"])
    for other in tasks:
        if other != task.name:  # out of domain: trained on `other`, evaluated on this task
            ood = load(evals / other / f"{task.name}.parquet")
            table[f"ood_trained_on_{other}"] = {k: v for k, v in paper_table(on_items(vanilla, ood), ood, seed).items()
                                                if not k.startswith("vanilla")}

    write_json(protocol_metrics(vanilla, task.error_categories, seed), args.metrics_dir / f"baseline_{task.name}.json")
    write_json(protocol_metrics(trained, task.error_categories, seed), args.metrics_dir / f"eval_{task.name}.json")
    write_json(table, args.metrics_dir / f"table_{task.name}.json")
    log.info("%s (n=%d): vanilla %s first %.3f second %.3f | %s first %.3f second %.3f | delta second %+.3f %s",
             task.name, table["n"], policy, table["vanilla_first"], table["vanilla_second"], method,
             table["trained_first"], table["trained_second"], table["delta_second"], table["delta_second_ci95"])


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--baseline", required=True, help="folder of baseline records: <policy>/<task>.parquet")
    parser.add_argument("--eval", required=True, help="folder of evaluation records: <trained on>/<task>.parquet")
    parser.add_argument("--metrics-dir", required=True, type=Path)
    cli.stage_main("results", main, parser)
