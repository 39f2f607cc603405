"""One table of experiments: the paper table (1st / 2nd try, vanilla vs trained, with CIs) per task.

Reads `dvc exp show --json` (run here, or a saved file with --json) and prints, per task, one row per
experiment: its name, train.method, policy, seed, every other param that differs between the rows
shown, and the accuracies of `data/metrics/table_<task>.json` with 95% CIs and the paired deltas.

    python tools/compare.py                   # workspace, HEAD and its experiments
    python tools/compare.py --all-commits     # every commit's experiments
    make compare
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from r3.params import flatten

FIXED = ("train.method", "policy", "seed")  # always shown: what a comparison of methods turns on


def experiments(shown: list[dict]) -> list[dict]:
    """(name, params, metrics per file) of the workspace, each commit and each of its experiments."""
    rows = []

    def add(entry: dict, fallback: str) -> None:
        data = entry.get("data") or {}
        if entry.get("error") or not data:
            return
        params = flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
        metrics = {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}
        rows.append({"name": entry.get("name") or fallback, "rev": entry.get("rev"), "params": params,
                     "metrics": metrics})

    for commit in shown:
        rev = commit.get("rev", "?")
        add(commit, rev if rev == "workspace" else rev[:7])
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev, rev.get("rev", "?")[:7])
    return rows


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _ci(table: dict, key: str) -> str:
    lo, hi = table.get(f"{key}_ci95") or (None, None)
    return f"{_pct(table.get(key))} [{_pct(lo)}, {_pct(hi)}]" if lo is not None else _pct(table.get(key))


def full_metrics(rev: str | None, path: str) -> dict | None:
    """The metrics file as written (`dvc exp show` drops lists such as the CIs): from git at the experiment's
    commit, or from the workspace."""
    if rev in (None, "workspace"):
        try:
            return json.loads(open(path, encoding="utf-8").read())
        except (OSError, ValueError):
            return None
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def table(rows: list[dict], task: str) -> list[list[str]]:
    """Header + one row per experiment that has the task's paper table."""
    path = f"data/metrics/table_{task}.json"
    rows = [r for r in rows if path in r["metrics"]]
    keys = sorted({k for r in rows for k in r["params"]})
    varying = [k for k in keys if k not in FIXED and len({json.dumps(r["params"].get(k)) for r in rows}) > 1]
    header = ["experiment", *FIXED, *varying, "n", "vanilla 1st", "vanilla 2nd", "trained 1st", "trained 2nd",
              "Δ 1st", "Δ 2nd"]
    out = [header]
    for r in rows:
        t = full_metrics(r["rev"], path) or r["metrics"][path]
        out.append([r["name"], *(str(r["params"].get(k)) for k in (*FIXED, *varying)), str(t.get("n")),
                     *(_ci(t, k) for k in ("vanilla_first", "vanilla_second", "trained_first", "trained_second",
                                           "delta_first", "delta_second"))])
    return out


def render(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="a saved `dvc exp show --json` (default: run it now)")
    parser.add_argument("--all-commits", action="store_true", help="every commit's experiments (dvc exp show -A)")
    parser.add_argument("--task", help="only this task's table (default: every task with a paper table)")
    args = parser.parse_args()
    if args.json:
        text = open(args.json, encoding="utf-8").read()
    else:
        cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *(["-A"] if args.all_commits else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"error: compare: `dvc exp show` failed: {proc.stderr.strip().splitlines()[-1:]}")
        text = proc.stdout
    rows = experiments(json.loads(text))
    tasks = sorted({path.split("table_", 1)[1].removesuffix(".json") for r in rows for path in r["metrics"]
                    if path.startswith("data/metrics/table_")})
    if args.task:
        if args.task not in tasks:
            sys.exit(f"error: compare: --task {args.task}: no experiment has data/metrics/table_{args.task}.json")
        tasks = [args.task]
    if not tasks:
        sys.exit("error: compare: no experiment has a paper table (data/metrics/table_<task>.json); run dvc repro")
    for task in tasks:
        print(f"\n{task} (accuracy %, 95% CI; Δ = trained − vanilla, paired)\n")
        print(render(table(rows, task)))


if __name__ == "__main__":
    main()
