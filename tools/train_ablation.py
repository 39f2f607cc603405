"""Training settings compared on the validation split (never on test): one row per setting.

    python tools/train_ablation.py --task countdown --name lora-lr1e-4 -S train.lora.enabled=true \
        -S train.learning_rate=1e-4 [--out reports/ablation]
    python tools/train_ablation.py --task countdown --name primed --no-train     # the starting policy's row

Each setting trains the task's model with the workspace's params.yaml plus the -S overrides (`stages/train.py`
on the workspace's failure set and starting policy, which `dvc repro` made), then runs the protocol on the
validation split with it (`stages/baseline.py --split validation`, greedy). The row: reward variance and retry
success during training (train queries), and the validation 1st / 2nd try with the retries that fixed a failed
first try. Everything goes to <out>/<task>/<name>/ (params, model, metrics); <out>/<task>.md is the table of
every row there. Run it alone on a 2-core machine: each row trains a model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from r3.params import load_yaml

ROOT = Path(__file__).resolve().parent.parent


def with_overrides(params: dict, sets: list[str]) -> dict:
    """`params` with each `key.path=value` (a YAML value) set; an unknown key is an error naming it."""
    out = json.loads(json.dumps(params))
    for kv in sets:
        key, sep, text = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: -S {kv!r}: expected key=value")
        node, *path = key.split(".")
        parent, name = out, node
        for part in path:
            if not isinstance(parent.get(name), dict):
                raise SystemExit(f"error: -S {kv}: params.yaml has no field {key!r}")
            parent, name = parent[name], part
        if name not in parent:
            raise SystemExit(f"error: -S {kv}: params.yaml has no field {key!r}")
        parent[name] = load_yaml(text)
    return out


def row(name: str, sets: list[str], train: dict | None, val: dict) -> dict:
    zero = None if train is None else train.get("frac_reward_zero_std")
    return {"name": name, "overrides": sets, "steps": None if train is None else train.get("global_step"),
            "groups_with_variance": None if zero is None else round(1 - zero, 4),
            "retry_success_train": None if train is None else train.get("retry_success"),
            "val_n": val["n"], "val_first": val["first_try_acc"], "val_second": val["second_try_acc"],
            "val_fixed": round(val["retry_success_rate"] * val["n_retried"]), "val_retried": val["n_retried"]}


def markdown(rows: list[dict]) -> str:
    def pct(x):
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = ["| setting | overrides | steps | groups with reward variance | retry success in training (T = train."
             "temperature) | validation 1st try | validation 2nd try | retries fixing a failed validation item |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {' '.join(f'`{s}`' for s in r['overrides']) or '–'} | {r['steps'] or '–'} | "
                     f"{pct(r['groups_with_variance'])} | {pct(r['retry_success_train'])} | {pct(r['val_first'])} | "
                     f"{pct(r['val_second'])} | {r['val_fixed']} of {r['val_retried']} |")
    return "\n".join(lines) + "\n"


def stage(script: str, *args: str) -> None:
    cmd = [sys.executable, str(ROOT / "stages" / script), *args]
    if subprocess.run(cmd, cwd=ROOT).returncode:
        raise SystemExit(f"error: train_ablation: `{' '.join(cmd)}` failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="countdown")
    parser.add_argument("--name", required=True, help="the row's name (its folder under --out/<task>)")
    parser.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-train", action="store_true", help="the starting policy itself (no training)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "ablation")
    args = parser.parse_args()

    params = with_overrides(load_yaml((ROOT / "params.yaml").read_text(encoding="utf-8")), args.sets)
    run = (args.out / args.task / args.name).resolve()
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    p, data = str(run / "params.yaml"), f"data/datasets/{args.task}.parquet"
    train = None
    if args.no_train:
        policy, model = params["policy"], []
    else:
        method = params["train"]["method"]
        stage("train.py", "--params", p, "--task", args.task, "--failures", f"data/failures/{args.task}.parquet",
              "--data", data, "--out", str(run / "model"), "--metrics", str(run / "train.json"),
              "--checkpoints", str(run / "checkpoints"), "--live", str(run / "live"))
        train = json.loads((run / "train.json").read_text())
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
        policy, model = method, ["--model", str(run / "model"), "--trained-on", args.task]
    stage("baseline.py", "--params", p, "--task", args.task, "--policy", policy, *model, "--data", data,
          "--split", "validation", "--out", str(run / "validation.parquet"), "--metrics", str(run / "validation.json"))
    shutil.rmtree(run / "model", ignore_errors=True)  # the row's numbers are kept, not its weights
    (run / "row.json").write_text(json.dumps(row(args.name, args.sets, train,
                                                 json.loads((run / "validation.json").read_text())), indent=1))
    rows = [json.loads(f.read_text()) for f in sorted((args.out / args.task).glob("*/row.json"))]
    table = markdown(rows)
    (args.out / f"{args.task}.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
