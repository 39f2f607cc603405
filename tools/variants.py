"""Which priming makes RL work (second paper): every Countdown priming variant, prime -> RL -> evaluate.

    python tools/variants.py queue [--variants NAME ...] [--profile FILE] [-S key=value ...] [--dry-run]
        queues one `dvc exp run --queue -n variant-<name>` per variant with prime.mix.countdown.variant=<name>,
        the profile's overrides (configs/experiments/variants.yaml: CPU sizes, train.method=grpo, a validation
        curve every train.eval_every steps) and any extra -S; then `dvc queue start` runs them (one at a time
        on a 2-core machine: `dvc queue start -j 1`).
    python tools/variants.py run [--variants NAME ...] [--profile FILE] [-S key=value ...] [--out DIR]
        the whole experiment in one command: each variant's `dvc exp run --temp -n variant-<name>` in the
        foreground, one after another, then `report`
    python tools/variants.py report [--json FILE] [--out reports/variants]
        reads the variant-<name> experiments from `dvc exp show --json` (and their committed metrics and
        DVCLive curves from git) and writes into --out: table.md (variant x first-try accuracy before / after
        RL with 95% CIs, behaviour rates at the first / last RL step, and a paragraph saying whether the run
        supports the paper's claim), accuracy_vs_step.png, behaviours_vs_step.png, exp_show.md (the `dvc exp
        show` view of the variant experiments: the variant as a column, the params that differ, the metrics
        the comparison reads) and experiments.json (the rows the report was made from).

Before RL is the primed policy on the test split (baseline stage); after RL, the trained model on the same
items (evaluate stage); the curve is first-try accuracy on validation items during RL (train.eval_every); the
behaviour rates are the shares of each step's sampled attempts that show the behaviour (rules classifier).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling tool whose exp-show reader this shares
from compare import _pct, experiments, full_metrics  # noqa: E402

from r3.priming.countdown_traces import BEHAVIOURS, VARIANTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "configs" / "experiments" / "variants.yaml"
PREFIX = "variant-"
BEHAVIOUR_RICH = ("all_strategies", "backtracking_only", "backtracking_verification", "incorrect_with_behaviours")
CONTROLS = ("negative_control", "empty_cot")


class VariantsError(Exception):
    """Bad input; main prints it as one `error:` line and exits 1."""


# ---------------------------------------------------------------- queue


def parse_variants(names: list[str] | None) -> list[str]:
    if not names:
        return list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            raise VariantsError(f"--variants: unknown priming variant {name!r}; choose from {list(VARIANTS)}")
    return list(dict.fromkeys(names))


def load_profile(path: Path) -> dict[str, Any]:
    try:
        profile = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise VariantsError(f"--profile {path}: {' '.join(str(e).split())}") from None
    if not isinstance(profile, dict) or not all(isinstance(k, str) for k in profile):
        raise VariantsError(f"--profile {path}: expected a mapping of dotted param names to values")
    return profile


def overrides(profile: dict[str, Any], sets: list[str]) -> dict[str, str]:
    """key -> value text for `-S key=value`: the profile's, then the command line's (which win)."""
    out = {k: yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
           for k, v in profile.items()}
    for kv in sets:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise VariantsError(f"-S {kv!r}: expected key=value")
        out[key] = value
    if "prime.mix.countdown.variant" in out:
        raise VariantsError("-S prime.mix.countdown.variant: the variant is set per experiment (--variants)")
    return out


def check_steps(values: dict[str, str], params_file: Path) -> None:
    """train.eval_every must lie within train.max_steps (the run's values, else params.yaml's)."""
    from r3.params import flatten  # the base params fill in what the overrides leave alone

    base = flatten(yaml.safe_load(params_file.read_text(encoding="utf-8")) or {})

    def value(key: str) -> Any:
        return yaml.safe_load(values[key]) if key in values else base.get(key)

    every, steps = value("train.eval_every"), value("train.max_steps")
    if every is None:
        raise VariantsError("train.eval_every: the experiment needs a validation curve (set it in the profile)")
    if not isinstance(every, int) or not isinstance(steps, int) or not 1 <= every <= steps:
        raise VariantsError(f"train.eval_every={every} must lie in [1, train.max_steps={steps}]")


def queue_commands(variants: list[str], values: dict[str, str], mode: str = "--queue") -> list[list[str]]:
    """One experiment per variant. With a `tasks` override the experiment ends at those tasks' `results`
    stages: `analyze` declares the metrics file of every default task, so a run on fewer tasks cannot reach it
    (and the comparison reads nothing of it)."""
    extra = [arg for key, value in values.items() for arg in ("-S", f"{key}={value}")]
    targets = [f"results@{task}" for task in yaml.safe_load(values["tasks"])] if "tasks" in values else []
    return [["dvc", "exp", "run", mode, "-n", f"{PREFIX}{v}", "-S", f"prime.mix.countdown.variant={v}", *extra,
             *targets] for v in variants]


# ---------------------------------------------------------------- collect


def git_text(rev: str | None, path: str) -> str | None:
    """A committed file of an experiment (its metrics and DVCLive curves are committed), or the workspace's."""
    if rev in (None, "workspace"):
        p = ROOT / path
        return p.read_text(encoding="utf-8") if p.is_file() else None
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, cwd=ROOT)
    return proc.stdout if proc.returncode == 0 else None


def read_curve(text: str | None, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of a DVCLive metric TSV (columns timestamp, step, <name>)."""
    if not text:
        return []
    return [(int(row["step"]), float(row[name])) for row in csv.DictReader(io.StringIO(text), delimiter="\t")]


def _acc(metrics: dict | None) -> dict | None:
    if not metrics or metrics.get("first_try_acc") is None:
        return None
    lo, hi = metrics.get("first_try_ci95") or (None, None)
    return {"acc": metrics["first_try_acc"], "lo": lo, "hi": hi, "n": metrics.get("n")}


def collect(rows: list[dict], read=git_text, metrics=full_metrics) -> list[dict]:
    """One result per variant experiment: accuracies before / after RL, the validation curve, behaviour curves.

    `read(rev, path)` gives a committed text file, `metrics(rev, path)` a metrics JSON (tests pass fakes)."""
    out = []
    for r in rows:
        variant = r["params"].get("prime.mix.countdown.variant")
        if not str(r["name"]).startswith(PREFIX) or variant not in VARIANTS:
            continue
        method, rev = r["params"].get("train.method", "grpo"), r["rev"]
        train = metrics(rev, f"data/metrics/train_{method}_countdown.json") or {}
        live = "data/train_live/countdown/plots/metrics"
        behaviours = {b: read_curve(read(rev, f"{live}/behaviour/{b}.tsv"), b) for b in BEHAVIOURS}
        out.append({
            "variant": variant, "experiment": r["name"], "rev": rev, "method": method,
            "before": _acc(metrics(rev, "data/metrics/baseline_primed_countdown.json")),
            "after": _acc(metrics(rev, f"data/metrics/eval_{method}-countdown_countdown.json")),
            "validation_curve": [tuple(p) for p in train.get("validation_curve") or []],
            "behaviours": behaviours,
        })
    # a failed run of a variant (stopped before evaluation) stays in `dvc exp show` beside its finished rerun
    finished = {r["variant"] for r in out if r["after"] is not None}
    out = [r for r in out if r["after"] is not None or r["variant"] not in finished]
    out.sort(key=lambda x: VARIANTS.index(x["variant"]))
    return out


# ---------------------------------------------------------------- report


def _with_ci(a: dict | None) -> str:
    if a is None:
        return "–"
    return f"{_pct(a['acc'])} [{_pct(a['lo'])}, {_pct(a['hi'])}]" if a["lo"] is not None else _pct(a["acc"])


def _gain(r: dict) -> float | None:
    return None if r["before"] is None or r["after"] is None else r["after"]["acc"] - r["before"]["acc"]


def verdict(results: list[dict]) -> str:
    """Whether the numbers support the paper's claim: behaviour-rich priming gains more from RL than
    behaviour-free priming (negative control, empty CoT), by more than one variant's 95% CI half-width."""
    rich = [g for r in results if r["variant"] in BEHAVIOUR_RICH and (g := _gain(r)) is not None]
    ctrl = [g for r in results if r["variant"] in CONTROLS and (g := _gain(r)) is not None]
    if not rich or not ctrl:
        return ("Not enough finished variants to compare behaviour-rich priming with the behaviour-free controls "
                "(both kinds need before and after accuracies).")
    half = min((a["hi"] - a["lo"]) / 2 for r in results for a in (r["before"], r["after"])
               if a is not None and a["lo"] is not None)
    diff = sum(rich) / len(rich) - sum(ctrl) / len(ctrl)
    numbers = (f"The behaviour-rich variants gained {100 * sum(rich) / len(rich):+.1f} points on average under RL "
               f"({len(rich)} variants), the behaviour-free controls {100 * sum(ctrl) / len(ctrl):+.1f} "
               f"({len(ctrl)}): a difference of {100 * diff:+.1f} points, against a 95% CI half-width of at least "
               f"{100 * half:.1f} points for a single variant's accuracy.")
    if diff > half:
        return numbers + " This run supports the paper's claim at this scale."
    if diff < -half:
        return numbers + " This run contradicts the paper's claim at this scale."
    return numbers + (" The difference is within the noise of one variant's accuracy, so this run neither "
                      "supports nor contradicts the paper's claim at this scale.")


def table(results: list[dict]) -> str:
    header = ["variant", "1st try before RL", "1st try after RL", "gain",
              *(f"{b} first → last step" for b in BEHAVIOURS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        gain = _gain(r)
        rates = []
        for b in BEHAVIOURS:
            curve = r["behaviours"].get(b) or []
            rates.append(f"{_pct(curve[0][1])} → {_pct(curve[-1][1])}" if curve else "–")
        lines.append("| " + " | ".join([r["variant"], _with_ci(r["before"]), _with_ci(r["after"]),
                                         "–" if gain is None else f"{100 * gain:+.1f}", *rates]) + " |")
    return "\n".join(lines)


def figures(results: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        if r["validation_curve"]:
            steps, accs = zip(*r["validation_curve"], strict=True)
            ax.plot(steps, [100 * a for a in accs], marker="o", label=r["variant"])
    ax.set(xlabel="RL step", ylabel="first-try accuracy on validation (%)", title="Countdown: accuracy during RL")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_step.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    for ax, b in zip(axes.flat, BEHAVIOURS, strict=True):
        for r in results:
            if curve := r["behaviours"].get(b):
                steps, rates = zip(*curve, strict=True)
                ax.plot(steps, [100 * x for x in rates], label=r["variant"])
        ax.set(title=b.replace("_", " "), ylabel="% of sampled attempts")
    for ax in axes[1]:
        ax.set_xlabel("logged RL step")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "behaviours_vs_step.png", dpi=120)
    plt.close(fig)
    return ["accuracy_vs_step.png", "behaviours_vs_step.png"]


EXP_METRICS = (("1st try before RL", "data/metrics/baseline_primed_countdown.json", "first_try_acc"),
               ("1st try after RL", "data/metrics/eval_{method}-countdown_countdown.json", "first_try_acc"),
               ("val. 1st try, last step", "data/metrics/train_{method}_countdown.json", "validation_last"),
               ("reward", "data/metrics/train_{method}_countdown.json", "reward_mean"),
               ("zero-variance groups", "data/metrics/train_{method}_countdown.json", "frac_reward_zero_std"),
               ("RL steps", "data/metrics/train_{method}_countdown.json", "global_step"))


def exp_table(rows: list[dict]) -> str:
    """The `dvc exp show` view of the variant experiments: one row each, the params that differ between
    them (the variant first) and the metrics the comparison reads, as markdown."""
    rows = [r for r in rows if str(r["name"]).startswith(PREFIX)
            and r["params"].get("prime.mix.countdown.variant") in VARIANTS]
    rows.sort(key=lambda r: VARIANTS.index(r["params"]["prime.mix.countdown.variant"]))
    keys = sorted({k for r in rows for k in r["params"]})
    shown = ("prime.mix.countdown.variant", "train.method")
    varying = ["prime.mix.countdown.variant", *(k for k in keys if k not in shown
                                                and len({json.dumps(r["params"].get(k)) for r in rows}) > 1)]
    header = ["Experiment", *varying, "train.method", *(label for label, _, _ in EXP_METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        method = r["params"].get("train.method", "grpo")
        values = []
        for _, path, key in EXP_METRICS:
            value = (r["metrics"].get(path.format(method=method)) or {}).get(key)
            values.append("–" if value is None else str(value))
        lines.append("| " + " | ".join([r["name"], *(str(r["params"].get(k)) for k in varying), method, *values])
                     + " |")
    return "\n".join(lines) + "\n"


def report(results: list[dict], out: Path) -> str:
    """Write the report files into `out`; return the markdown."""
    if not results:
        raise VariantsError(f"no {PREFIX}<variant> experiment with results; run `tools/variants.py queue` and "
                            "`dvc queue start` first")
    out.mkdir(parents=True, exist_ok=True)
    names = figures(results, out)
    method = ", ".join(sorted({r["method"] for r in results}))
    text = "\n\n".join([
        "# Which priming makes RL work: Countdown priming variants",
        f"RL method: {method}. Before RL: the primed policy on the test split; after RL: the trained model on the "
        "same items (accuracy %, 95% CI). Behaviour rates: share of each RL step's sampled attempts showing "
        "the behaviour (rules classifier), at the first and the last logged step.",
        table(results), verdict(results),
        *(f"![{n.removesuffix('.png')}]({n})" for n in names)]) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    (out / "experiments.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return text


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="queue one experiment per variant")
    run = sub.add_parser("run", help="run every variant now, one after another, then write the report")
    r = sub.add_parser("report", help="the comparison of the finished variant experiments")
    for sp in (q, run):
        sp.add_argument("--variants", nargs="+", help=f"default: all six ({', '.join(VARIANTS)})")
        sp.add_argument("--profile", type=Path, default=PROFILE, help="overrides as data (default: %(default)s)")
        sp.add_argument("-S", "--set", dest="sets", action="append", default=[], help="extra key=value override")
        sp.add_argument("--dry-run", action="store_true", help="print the commands only")
    for sp in (run, r):
        sp.add_argument("--out", type=Path, default=ROOT / "reports" / "variants", help="the report's folder")
    r.add_argument("--json", help="a saved `dvc exp show --json` (default: run it now)")
    args = parser.parse_args()
    try:
        if args.command in ("queue", "run"):
            values = overrides(load_profile(args.profile), args.sets)
            check_steps(values, ROOT / "params.yaml")
            # run: each experiment now, in a temporary copy of the workspace (dvc exp run --temp)
            mode = "--queue" if args.command == "queue" else "--temp"
            for cmd in queue_commands(parse_variants(args.variants), values, mode):
                print(shlex.join(cmd), flush=True)
                if not args.dry_run and subprocess.run([sys.executable, "-m", *cmd]).returncode:
                    raise VariantsError(f"`{shlex.join(cmd)}` failed")
            if args.dry_run:
                return
            if args.command == "queue":
                print("queued; run them with: dvc queue start -j 1")
                return
        if getattr(args, "json", None):
            shown = json.loads(Path(args.json).read_text(encoding="utf-8"))
        else:
            proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--hide-queued"],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode:
                raise VariantsError(f"`dvc exp show` failed: {proc.stderr.strip().splitlines()[-1:]}")
            shown = json.loads(proc.stdout)
        rows = experiments(shown)
        print(report(collect(rows), args.out))
        (args.out / "exp_show.md").write_text(exp_table(rows), encoding="utf-8")
    except VariantsError as e:
        sys.exit(f"error: variants: {e}")


if __name__ == "__main__":
    main()
