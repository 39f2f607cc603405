"""table@<task>: the headline metrics of the selected policy, recomputed from its protocol records.

Writes data/metrics/baseline_<task>.json: the vanilla (starting policy) 1st/2nd-try accuracies with
bootstrap CIs. Evaluation of trained policies joins this table when training exists.
"""

from r3 import cli
from r3.artifacts import read_parquet, write_json
from r3.metrics import protocol_metrics
from r3.params import Params
from r3.tasks import get_task

log = cli.log

RECORD_COLUMNS = {"id": str, "first_correct": bool, "second_correct": bool, "first_category": str}


def main(args):
    p = Params.load(args.params)
    task = get_task(args.task)
    df = read_parquet(args.baseline, RECORD_COLUMNS)
    metrics = protocol_metrics(df.to_dict("records"), task.error_categories, seed=p.get("seed", int))
    write_json(metrics, args.metrics)
    log.info("%s: vanilla first %.3f %s, second %.3f %s (n=%d)", task.name, metrics["first_try_acc"],
             metrics["first_try_ci95"], metrics["second_try_acc"], metrics["second_try_ci95"], metrics["n"])


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--baseline", required=True, help="the selected policy's baseline Parquet")
    parser.add_argument("--metrics", required=True)
    cli.stage_main("table", main, parser)
