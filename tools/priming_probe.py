"""A reduced-size version of the priming-variant experiment that fits a CPU session.

For each Countdown trace variant: prime the raw model on `--size` traces of that variant only
(no function-calling data, no reflect-retry dialogues, `--epochs` epochs), then run the baseline
protocol on the Countdown test split and print the first- and second-try accuracies. Runs the
pipeline's own stage scripts in a scratch folder (the repo's models/raw and datasets are read,
nothing in the repo is written). The full experiment (prime -> RL -> evaluate per variant) is tools/variants.py.

  python tools/priming_probe.py --size 120 --epochs 1
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("all_strategies", "backtracking_only", "backtracking_verification", "negative_control", "empty_cot",
            "incorrect_with_behaviours")


def run(cwd: Path, script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, text=True,
                          capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"{script} failed:\n{proc.stderr[-3000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--size", type=int, default=120, help="Countdown traces per variant")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N test puzzles")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/r3-priming-probe"))
    args = ap.parse_args()

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["prime"]["epochs"] = args.epochs
    p["prime"]["mix"]["countdown"].update(size=args.size, reflection_fraction=0.0)
    p["baseline"]["limit"] = args.limit
    data = ROOT / "data/datasets/countdown.parquet"
    results = {}
    for variant in args.variants:
        work = args.workdir / variant
        shutil.rmtree(work, ignore_errors=True)
        (work / "models").mkdir(parents=True)
        (work / "models/raw").symlink_to(ROOT / "models/raw")
        p["prime"]["mix"]["countdown"]["variant"] = variant
        (work / "params.yaml").write_text(yaml.safe_dump(p))
        start = time.perf_counter()
        run(work, "prime.py", "--task", "countdown", "--data", str(data), "--out", "models/primed",
            "--metrics", "prime.json", "--checkpoints", "checkpoints", "--live", "live")
        prime_s = time.perf_counter() - start
        run(work, "baseline.py", "--task", "countdown", "--policy", "primed", "--data", str(data),
            "--out", "baseline.parquet", "--metrics", "baseline.json")
        m = json.loads((work / "baseline.json").read_text())
        results[variant] = {"n": m["n"], "first_try_acc": m["first_try_acc"], "first_try_ci95": m["first_try_ci95"],
                            "second_try_acc": m["second_try_acc"], "first_try_errors": m["first_try_errors"],
                            "prime_s": round(prime_s)}
        print(json.dumps({variant: results[variant]}), flush=True)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
