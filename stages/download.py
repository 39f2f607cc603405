"""download@<task>: load a task's items from its source, deduplicate, split, write Parquet (and metrics)."""

from r3 import cli
from r3.artifacts import write_json, write_parquet
from r3.dataset import to_frame
from r3.errors import R3Error
from r3.params import Params
from r3.tasks import SPLITS, get_task

log = cli.log


def main(args):
    p = Params.load(args.params)
    task = get_task(args.task)
    data = p.section(f"data.{task.name}")
    source = data.get("source", str, choices=tuple(task.sources))
    sizes = {s: data.get(f"splits.{s}", int, min_value=0) for s in SPLITS}
    config = dict(data.get(source, dict, {}) or {})
    # task-wide options set directly under data.<task> (countdown's unary_minus) reach every source's loader
    config = {k: v for k, v in data.as_dict().items() if k not in ("source", "splits", *task.sources)} | config
    config.setdefault("n_items", sum(sizes.values()))
    # the data's own seed: the run's `seed` (priming, sampling, training) varies without changing the items or
    # the splits, so experiments over seeds are evaluated on the same test items (tools/seeds.py pools them)
    seed = p.get("data.seed", int)

    items = task.sources[source](config, seed)
    splits = task.assign_splits(items, sizes, seed)
    df = to_frame(task.name, items, splits)
    counts = df["split"].value_counts().to_dict()
    if not counts.get("test"):
        raise R3Error(f"data.{task.name}: the test split is empty")
    write_parquet(df, args.out)
    per_split = {s: counts.get(s, 0) for s in SPLITS}
    log.info("%s from %s: %s", task.name, source, per_split)
    # what the loader dropped or skipped (function_calling: ground-truth args the schema lacks), if it says
    report = getattr(items, "report", {})
    if report.get("dropped_unknown_args") or report.get("skipped_inconsistent_items"):
        log.warning("%s: %s", task.name, report)
    if args.metrics:
        write_json({"items": len(items), "per_split": per_split, **report}, args.metrics)


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", help="JSON: item counts and what the loader dropped")
    cli.stage_main("download", main, parser)
