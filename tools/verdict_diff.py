"""How many recorded verdicts a verifier change flips, and between which categories.

Re-verifies every 1st attempt and retry stored in baseline / evaluation Parquet files (they keep the
raw completions and the ground truth) with the verifiers of the current checkout and with those of an
older git revision, and prints the changed verdicts per task and (old category -> new category).

    python tools/verdict_diff.py --ref 35b8d50 data/baseline data/eval

The old revision's `src/` is exported to a temporary folder and run in a subprocess, so the two
versions of the `r3` package never share an interpreter.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def completions(paths: list[Path]) -> list[dict]:
    """(file, id, which attempt, task, text, ground truth) of every recorded attempt."""
    rows = []
    for path in sorted(p for base in paths for p in ([base] if base.is_file() else base.rglob("*.parquet"))):
        df = pd.read_parquet(path)
        for r in df.itertuples():
            for kind in ("first_attempt", "retry"):
                text = getattr(r, kind)
                if isinstance(text, str):
                    rows.append({"file": str(path), "id": r.id, "kind": kind, "task": r.task, "text": text,
                                 "ground_truth": json.loads(r.ground_truth)})
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """The current interpreter's `r3` verifiers: one category per row."""
    from r3.tasks import get_task

    return [get_task(r["task"]).verify(r["text"], r["ground_truth"]).category for r in rows]


def verdicts_at(ref: str, rows: list[dict]) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        proc = subprocess.run([sys.executable, __file__, "--worker"], input=json.dumps(rows), text=True,
                              capture_output=True, check=True, env={"PYTHONPATH": f"{tmp}/src", "PATH": ""})
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="Parquet files or folders of them")
    parser.add_argument("--ref", help="the git revision whose verifiers are compared with the checkout's")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # inside the old revision's package: rows on stdin, categories on stdout
        print(json.dumps(verdicts(json.load(sys.stdin))))
        return
    if not args.ref or not args.paths:
        parser.error("give --ref and at least one path")
    rows = completions(args.paths)
    old, new = verdicts_at(args.ref, rows), verdicts(rows)
    changed = Counter((r["task"], o, n) for r, o, n in zip(rows, old, new, strict=True) if o != n)
    per_task = Counter(r["task"] for r in rows)
    print(f"{len(rows)} recorded attempts re-verified ({dict(per_task)}); {sum(changed.values())} verdicts changed")
    for (task, o, n), count in sorted(changed.items()):
        print(f"  {task}: {o} -> {n}: {count}")
    flipped = Counter((r["task"], r["kind"], (o == "correct") - (n == "correct"))
                      for r, o, n in zip(rows, old, new, strict=True) if (o == "correct") != (n == "correct"))
    for (task, kind, sign), count in sorted(flipped.items()):
        print(f"  {task} {kind}: {count} {'correct -> wrong' if sign > 0 else 'wrong -> correct'}")


if __name__ == "__main__":
    main()
