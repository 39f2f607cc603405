"""download@<task>: load a task's items from its source, deduplicate, split, write Parquet."""

from r3 import cli
from r3.artifacts import write_parquet
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
    config.setdefault("n_items", sum(sizes.values()))
    seed = p.get("seed", int)

    items = task.sources[source](config, seed)
    splits = task.assign_splits(items, sizes, seed)
    df = to_frame(task.name, items, splits)
    counts = df["split"].value_counts().to_dict()
    if not counts.get("test"):
        raise R3Error(f"data.{task.name}: the test split is empty")
    write_parquet(df, args.out)
    log.info("%s from %s: %s", task.name, source, {s: counts.get(s, 0) for s in SPLITS})


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--out", required=True)
    cli.stage_main("download", main, parser)
