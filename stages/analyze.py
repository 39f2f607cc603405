"""analyze: error analysis, cognitive-behaviour counts and the experiment report, from the protocol records.

Reads, per task, every policy's baseline records (data/baseline/<policy>/<task>.parquet) and the
trained model's evaluation on its own task (data/eval/<task>/<task>.parquet), plus the DVCLive
training curves. Writes:
  <analysis>/<task>/analysis.json         everything computed (counts, rates, transitions, statistics)
  <analysis>/<task>/errors.csv, behaviours.csv, transitions/<policy>.csv   `dvc plots` data
  <metrics-dir>/analysis_<task>.json      the key numbers (`dvc exp show` columns)
  <report>/report.md, report.html (self-contained), figures/*.png
"""

from pathlib import Path

import pandas as pd

from r3 import cli
from r3.analysis.behaviours import Classifier
from r3.analysis.document import Document
from r3.analysis.errors import answer_rate
from r3.analysis.judge import LLMJudge, api_key_from_env, backend_chat, openai_chat
from r3.analysis.report import add_task_section, analyze_task, plot_rows, read_curves, summary_metrics, transition_rows
from r3.analysis.rules import RulesClassifier
from r3.artifacts import atomic_path, read_parquet, records, write_json
from r3.configs import POLICIES, backend
from r3.errors import R3Error
from r3.params import Params
from r3.tasks import get_task
from r3.tasks.countdown import uses_unary_minus

log = cli.log

RECORD_COLUMNS = {"id": str, "prompt": str, "first_attempt": str, "first_correct": bool, "second_correct": bool,
                  "first_category": str}
# DVCLive metric names of the GRPO trainer's log (reflection length = completions/mean_length for r3)
CURVES = ("reward", "frac_reward_zero_std", "completions/mean_length", "r3/retry_success", "loss")


def classifier(p: Params) -> Classifier:
    kind = p.get("analyze.classifier", str, choices=("rules", "llm"))
    if kind == "rules":
        return RulesClassifier()
    judge = p.section("analyze.judge")
    model = judge.get("model", str)
    max_tokens = judge.get("max_tokens", int, min_value=1)
    endpoint = judge.get("endpoint", (str, type(None)))
    if endpoint:
        key = api_key_from_env(judge.get("api_key_env", (str, type(None))))
        return LLMJudge(openai_chat(endpoint, model, key, max_tokens))
    # a policy name (models/<policy>) or any local model directory
    local = backend(p, model) if model in POLICIES else backend(p, "", model)
    return LLMJudge(backend_chat(local, max_tokens))


def load_runs(baseline: Path, evals: Path, task: str, policies: list[str], method: str) -> dict[str, list[dict]]:
    """policy -> protocol records, for every policy whose records exist (trained last, named by the method)."""
    paths = {p: baseline / p / f"{task}.parquet" for p in policies}
    paths[method] = evals / task / f"{task}.parquet"
    return {p: records(read_parquet(path, RECORD_COLUMNS)) for p, path in paths.items() if path.is_file()}


def main(args):
    p = Params.load(args.params)
    seed = p.get("seed", int)
    vanilla = p.get("policy", str)
    method = p.get("train.method", str)
    examples = p.get("analyze.examples", int, min_value=0)
    judge = classifier(p)

    doc = Document("r3 experiment report")
    doc.text(f"Vanilla policy: {vanilla}; training method: {method}; behaviour classifier: {judge.name}. "
             "Every number below comes from this run's DVC artifacts (data/baseline, data/eval, data/train_live).")
    summaries = {}
    with atomic_path(args.analysis, is_dir=True) as out:
        for name in p.get("tasks", list):
            task = get_task(name)
            runs = load_runs(args.baseline, args.eval, name, p.get("policies", list), method)
            if vanilla not in runs:
                raise R3Error(f"{args.baseline / vanilla / name}.parquet: the vanilla policy's records are missing")
            trained = method if method in runs else None
            analysis = analyze_task(task, runs, vanilla, trained, judge, seed)
            (out / name / "transitions").mkdir(parents=True)
            write_json(analysis, out / name / "analysis.json")
            for file, rows in plot_rows(analysis).items():
                pd.DataFrame(rows).to_csv(out / name / f"{file}.csv", index=False)
            for policy, recs in runs.items():
                pd.DataFrame(transition_rows(recs), columns=["first", "retry"]).to_csv(
                    out / name / "transitions" / f"{policy}.csv", index=False)
            summaries[name] = summary_metrics(analysis)
            if name == "countdown":  # how often answers lean on the unary-minus rule (data.countdown.unary_minus)
                for policy, recs in runs.items():
                    summaries[name][policy]["unary_minus_rate"] = answer_rate(recs, uses_unary_minus)
            add_task_section(doc, task, analysis, runs, read_curves(args.live / name, CURVES), examples)
            log.info("%s: policies %s", name, ", ".join(runs))
        if getattr(judge, "unparsed", 0):
            doc.text(f"The judge gave no <count> tag in {judge.unparsed} replies (counted as 0).")
        with atomic_path(args.report, is_dir=True) as report:
            doc.write(report)
    for name, summary in summaries.items():  # last, so a failed run changes no metrics
        write_json(summary, args.metrics_dir / f"analysis_{name}.json")
    log.info("report: %s", args.report / "report.html")


if __name__ == "__main__":
    parser = cli.parser(__doc__)
    parser.add_argument("--baseline", required=True, type=Path, help="baseline records: <policy>/<task>.parquet")
    parser.add_argument("--eval", required=True, type=Path, help="evaluation records: <trained on>/<task>.parquet")
    parser.add_argument("--live", required=True, type=Path, help="folder of DVCLive training logs: <task>/")
    parser.add_argument("--analysis", required=True, type=Path, help="output folder of analysis data")
    parser.add_argument("--report", required=True, type=Path, help="output folder of the report")
    parser.add_argument("--metrics-dir", required=True, type=Path)
    cli.stage_main("analyze", main, parser)
