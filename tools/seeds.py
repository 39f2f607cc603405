"""Several training seeds of one setting: queue them, then pool their paired deltas (trained - vanilla, 2nd try).

    python tools/seeds.py queue --seeds 0 1 2 [-S key=value ...] [--dry-run]
        runs `dvc exp run --queue -n <method>-seed<s> -S seed=<s> [-S key=value ...]` once per seed (--dry-run:
        only prints them); then `dvc queue start` runs the queue.
    python tools/seeds.py run --seeds 0 1 2 [--no-control] [--max-steps N] [-S key=value ...] [--dry-run]
        the whole experiment in the foreground, one command, seed after seed in the workspace:
        `dvc exp run -n r3-seed<s>`, then the plain-GRPO control of that seed at that seed's R3 cost
        (`grpo-seed<s>`, as `control` below), which reuses the seed's primed model, baselines and failure set
        (they are up to date in the workspace; a temporary copy would rerun them); then the pooled tables of
        every task (as `pool` below, over exactly these experiments). With a `tasks` override every experiment
        ends at those tasks' `results` stages (`analyze` declares every default task's files). params.yaml is
        put back as it was before each experiment and at the end; the rest of the workspace keeps the last
        experiment's outputs (`git checkout dvc.lock && dvc checkout` returns to HEAD's)
    python tools/seeds.py control [--seeds 0 1 2] [--max-steps N] [-S key=value ...] [--dry-run]
        the plain-GRPO control at R3's cost: for each finished r3 experiment of HEAD (those seeds), queues
        `-S seed=<s> -S train.method=grpo -S train.token_budget={<task>: R3's generated tokens, ...}` with
        train.max_steps raised (--max-steps, default 8 x R3's) so that the budget, not the step count, stops it:
        each control stops at the first step that reaches its R3 run's generated-token count (train_r3_<task>.json)
    python tools/seeds.py pool [--task countdown] [--exps NAME ...]
        reads, for each experiment (default: every finished <method>-seed<N> experiment of HEAD), the
        per-item records of the vanilla policy (data/baseline/<policy>/<task>.parquet) and of the model trained
        on the task (data/eval/<task>/<task>.parquet) with dvc.api, pairs them by item id, and prints one
        markdown table per train.method: each seed's 2nd-try accuracies and delta, and the pooled delta over
        seeds with a 95% CI (two-level bootstrap: items and seeds, r3.metrics.pooled_paired_delta) and its
        minimum detectable effect (80% power, alpha 0.05). With both methods present, a third table pairs
        them: R3-trained minus GRPO-trained 2nd try, item by item, over the seeds both ran.

Pooling pairs items across seeds, so every seed of a method must be evaluated on the same test items; the
tool stops with an error otherwise. The experiments of one method must differ in nothing but `seed` (and, for the
control, its per-seed `train.token_budget`).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from r3.metrics import minimum_detectable_effect, paired_delta, pooled_paired_delta
from r3.params import flatten

COLUMNS = ("id", "first_correct", "second_correct")
ROOT = Path(__file__).resolve().parent.parent


class PoolError(Exception):
    """A problem with the experiments to pool; main prints it as one `error:` line."""


def parse_seeds(values: list[str]) -> list[int]:
    """The seeds as integers; ValueError with the message main prints after `error: --seeds: `."""
    seeds = []
    for value in values:
        try:
            seed = int(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if seed < 0:
            raise ValueError(f"{value!r} is negative")
        if seed in seeds:
            raise ValueError(f"{value!r} is given twice")
        seeds.append(seed)
    return seeds


def queue_commands(seeds: list[int], sets: list[str], mode: str | None = "--queue", prefix: str | None = None
                   ) -> list[list[str]]:
    """One `dvc exp run --queue` (mode `--temp`: run now, in a temporary copy; None: in the workspace) per seed,
    with the extra
    `-S key=value` overrides; `prefix` names them `<prefix>-seed<s>`."""
    extra = [arg for kv in sets for arg in ("-S", kv)]
    return [["dvc", "exp", "run", *([mode] if mode else []), *(["-n", f"{prefix}-seed{s}"] if prefix else []),
             "-S", f"seed={s}", *extra] for s in seeds]


def control_commands(budgets: dict[int, dict[str, int]], max_steps: int, sets: list[str], mode: str | None = "--queue"
                     ) -> list[list[str]]:
    """One queued (mode `--temp`: run now; None: in the workspace) plain-GRPO experiment per seed, stopped by
    the generated-token budget of that seed's R3 run (`budgets[seed][task]`); `max_steps` only caps it."""
    extra = [arg for kv in sets for arg in ("-S", kv)]
    cmds = []
    for seed, per_task in sorted(budgets.items()):
        budget = "{" + ", ".join(f"{task}: {n}" for task, n in sorted(per_task.items())) + "}"
        cmds.append(["dvc", "exp", "run", *([mode] if mode else []), "-n", f"grpo-seed{seed}", "-S", f"seed={seed}",
                     "-S", "train.method=grpo", "-S", f"train.token_budget={budget}",
                     "-S", f"train.max_steps={max_steps}", *extra])
    return cmds


def r3_budgets(exps: dict[str, dict], seeds: list[int] | None, read_json) -> tuple[dict[int, dict[str, int]], int]:
    """{seed: {task: generated tokens}} of the finished r3 experiments (of `seeds`, default all), and their
    largest train.max_steps. `read_json(path, experiment)` reads a committed metrics file of an experiment."""
    runs = {params["seed"]: name for name, params in exps.items()
            if params.get("train.method") == "r3" and isinstance(params.get("seed"), int)}
    missing = sorted(set(seeds or []) - set(runs))
    if missing:
        raise PoolError(f"no finished r3 experiment of HEAD for seed(s) {missing} (queue them first: seeds.py queue)")
    if not runs:
        raise PoolError("no finished r3 experiment of HEAD to take the control's budget from (seeds.py queue)")
    budgets, steps = {}, 0
    for seed in sorted(seeds or runs):
        name, params = runs[seed], exps[runs[seed]]
        tasks = params.get("tasks") or []
        budgets[seed] = {}
        for task in tasks:
            metrics = read_json(f"data/metrics/train_r3_{task}.json", name)
            tokens = metrics.get("generated_tokens")
            if not isinstance(tokens, int) or tokens < 1:
                raise PoolError(f"{name}: data/metrics/train_r3_{task}.json has no generated_tokens count")
            budgets[seed][task] = tokens
        steps = max(steps, int(params.get("train.max_steps") or 0))
    return budgets, steps


def head_experiments(shown: list[dict]) -> dict[str, dict]:
    """{name: flattened params} of the finished experiments of the baseline commit(s) in `dvc exp show --json`."""
    out = {}
    for commit in shown:
        if commit.get("rev") == "workspace":
            continue
        for exp in commit.get("experiments") or []:
            if (exp.get("executor") or {}).get("state", "success") != "success" or not exp.get("revs"):
                continue  # queued, running or failed
            tip = exp["revs"][0]
            data = tip.get("data") or {}
            if tip.get("error") or not data:
                continue
            name = exp.get("name") or tip.get("name") or tip.get("rev")
            out[name] = flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    return out


def align(vanilla: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """The two runs' records paired by item id, sorted by id: id, vanilla_first/second, trained_first/second."""
    for who, df in (("vanilla", vanilla), ("trained", trained)):
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise PoolError(f"{who} records lack column(s) {missing}")
        if df["id"].duplicated().any():
            raise PoolError(f"{who} records repeat item id {df['id'][df['id'].duplicated()].iloc[0]!r}")
    if set(vanilla["id"]) != set(trained["id"]):
        raise PoolError(f"vanilla and trained records cover different items "
                        f"({len(set(vanilla['id']) ^ set(trained['id']))} ids in only one of them)")
    frames = [df[list(COLUMNS)].rename(columns={"first_correct": f"{who}_first", "second_correct": f"{who}_second"})
              for who, df in (("vanilla", vanilla), ("trained", trained))]
    paired = frames[0].merge(frames[1], on="id").sort_values("id", ignore_index=True)
    for col in paired.columns[1:]:
        paired[col] = paired[col].astype(float)
    return paired


def summarise(runs: dict[int, tuple[str, pd.DataFrame]], seed: int = 0) -> dict:
    """Per-seed and pooled 2nd-try numbers of one method; `runs` maps a seed to (experiment, aligned frame)."""
    if not runs:
        raise PoolError("no experiments to pool")
    seeds = sorted(runs)
    ids = list(runs[seeds[0]][1]["id"])
    for s in seeds[1:]:
        if list(runs[s][1]["id"]) != ids:
            raise PoolError(f"seeds {seeds[0]} and {s} were evaluated on different test items; pooling pairs "
                            f"items across seeds (does `seed` also draw the data and its splits?)")
    before = {s: list(runs[s][1]["vanilla_second"]) for s in seeds}
    after = {s: list(runs[s][1]["trained_second"]) for s in seeds}
    per_seed = []
    for s in seeds:
        delta, ci = paired_delta(before[s], after[s], seed=seed)
        diffs = [a - b for a, b in zip(after[s], before[s], strict=True)]
        per_seed.append({"seed": s, "experiment": runs[s][0], "vanilla_second": _mean(before[s]),
                         "trained_second": _mean(after[s]), "delta": delta, "ci95": ci,
                         "mde": minimum_detectable_effect(diffs)})
    pooled = pooled_paired_delta(before, after, seed=seed)
    item_diffs = [sum(after[s][i] - before[s][i] for s in seeds) / len(seeds) for i in range(len(ids))]
    return {"n_items": len(ids), "seeds": seeds, "per_seed": per_seed,
            "pooled": {"vanilla_second": round(sum(r["vanilla_second"] for r in per_seed) / len(seeds), 4),
                       "trained_second": round(sum(r["trained_second"] for r in per_seed) / len(seeds), 4),
                       "delta": pooled["delta"], "ci95": pooled["ci95"], "mde": minimum_detectable_effect(item_diffs)}}


def compare_methods(r3: dict[int, tuple[str, pd.DataFrame]], grpo: dict[int, tuple[str, pd.DataFrame]],
                    seed: int = 0) -> dict:
    """R3-trained vs GRPO-trained 2nd try, paired by item over the seeds both methods ran (the control as the
    `before` side: a positive delta favours R3)."""
    seeds = sorted(set(r3) & set(grpo))
    if not seeds:
        raise PoolError("r3 and grpo share no seed; run the control on the seeds of the r3 experiments")
    runs = {}
    for s in seeds:
        a, b = r3[s][1], grpo[s][1]
        if list(a["id"]) != list(b["id"]):
            raise PoolError(f"seed {s}: the r3 and grpo models were evaluated on different test items")
        frame = pd.DataFrame({"id": a["id"], "vanilla_first": b["trained_first"], "vanilla_second": b["trained_second"],
                              "trained_first": a["trained_first"], "trained_second": a["trained_second"]})
        runs[s] = (f"{r3[s][0]} vs {grpo[s][0]}", frame)
    return summarise(runs, seed)


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def _pct(value: float, sign: bool = False) -> str:
    return f"{100 * value:+.1f}" if sign else f"{100 * value:.1f}"


def markdown(summary: dict) -> str:
    """One markdown table: a row per seed, then the pooled row (accuracies and deltas in points)."""
    rows = [["seed", "experiment", "n items", "vanilla 2nd", "trained 2nd", "Δ 2nd [95% CI]", "MDE"]]
    for r in summary["per_seed"]:
        rows.append([str(r["seed"]), r["experiment"], str(summary["n_items"]), _pct(r["vanilla_second"]),
                     _pct(r["trained_second"]), _delta(r), _pct(r["mde"])])
    p = summary["pooled"]
    rows.append([f"pooled ({', '.join(map(str, summary['seeds']))})", f"{len(summary['seeds'])} seeds",
                 str(summary["n_items"]), _pct(p["vanilla_second"]), _pct(p["trained_second"]), _delta(p),
                 _pct(p["mde"])])
    return _table(rows)


def _table(rows: list[list[str]]) -> str:
    """A markdown table: the first row is the header."""
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in rows[0]) + "|")
    return "\n".join(lines)


def _delta(row: dict) -> str:
    lo, hi = row["ci95"]
    return f"{_pct(row['delta'], True)} [{_pct(lo, True)}, {_pct(hi, True)}]"


def _read_records(path: str, rev: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(_read(path, rev)))


def _read_json(path: str, rev: str) -> dict:
    return json.loads(_read(path, rev))


def _read(path: str, rev: str) -> bytes:
    import dvc.api

    try:
        with dvc.api.open(path, rev=rev, mode="rb") as f:
            return f.read()
    except Exception as exc:  # dvc raises many kinds: missing file, missing cache, unknown rev
        raise PoolError(f"{rev}: cannot read {path} ({type(exc).__name__}: {exc})") from None


def finished_experiments(names: list[str] | None) -> dict[str, dict]:
    """{name: flattened params}: the named experiments, or every finished `<method>-seed<N>` experiment of HEAD."""
    if names:
        import dvc.api

        return {name: flatten(dvc.api.params_show("params.yaml", rev=name)) for name in names}
    proc = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--hide-queued", "--hide-failed"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise PoolError(f"`dvc exp show` failed: {proc.stderr.strip().splitlines()[-1:]}")
    exps = {name: params for name, params in head_experiments(json.loads(proc.stdout)).items()
            if SEED_RUN.fullmatch(str(name))}
    if not exps:
        raise PoolError("no finished <method>-seed<N> experiment of HEAD (dvc exp show); run some with "
                        "`seeds.py run` or `seeds.py queue`")
    return exps


# the names this tool gives its experiments (others, such as tools/variants.py's, are left alone)
SEED_RUN = re.compile(r"[\w.]+-seed\d+")


# params that may differ between the seeds of one method: the seed, and the control's per-seed budget
PER_SEED = ("seed", "train.token_budget")


def by_method(exps: dict[str, dict]) -> dict[str, dict[int, str]]:
    """{method: {seed: experiment}}, checking that the seeds of a method differ in nothing else."""
    out: dict[str, dict[int, str]] = {}
    for name, params in exps.items():
        method, seed = params.get("train.method"), params.get("seed")
        if not isinstance(seed, int) or not isinstance(method, str):
            raise PoolError(f"{name}: params.yaml lacks an integer `seed` or a `train.method`")
        if seed in out.setdefault(method, {}):
            raise PoolError(f"{out[method][seed]} and {name} are both {method} with seed {seed}; "
                            f"choose one with --exps")
        out[method][seed] = name
    for method, names in sorted(out.items()):
        keys = {k for name in names.values() for k in exps[name]}
        keys = {k for k in keys if not any(k == p or k.startswith(p + ".") for p in PER_SEED)}
        differ = sorted(k for k in keys if len({json.dumps(exps[name].get(k)) for name in names.values()}) > 1)
        if differ:
            raise PoolError(f"the {method} experiments differ in {differ} besides seed; choose them with --exps")
    return out


def training_table(exps: dict[str, dict], task: str, read_json) -> str:
    """One markdown row per experiment: what its training saw (steps, optimizer steps, groups with reward
    variance, generated tokens) and its trained model on the test split (1st / 2nd try, retries that fixed a
    failed 1st try). `read_json(path, experiment)` reads a committed metrics file."""
    rows = [["experiment", "steps", "optimizer steps", "groups with variance", "generated tokens",
             "test 1st / 2nd", "retries fixing a failure"]]
    for name, params in sorted(exps.items(), key=lambda kv: (kv[1].get("train.method", ""), kv[1].get("seed", 0))):
        method = params.get("train.method")
        train = read_json(f"data/metrics/train_{method}_{task}.json", name)
        test = read_json(f"data/metrics/eval_{method}-{task}_{task}.json", name)
        steps, skipped = train["global_step"], train.get("skipped_steps") or 0
        fixed = round(test["retry_success_rate"] * test["n_retried"])
        retried = test["n_retried"]
        rows.append([name, str(steps), str(steps - skipped), f"{_pct(1 - train['frac_reward_zero_std'])}%",
                     f"{train['generated_tokens']:,}",
                     f"{_pct(test['first_try_acc'])} / {_pct(test['second_try_acc'])}%",
                     f"{fixed} of {retried} ({_pct(fixed / retried) if retried else '–'}%)"])
    return _table(rows)


def pool(exps: dict[str, dict], task: str) -> None:
    runs_of: dict[str, dict[int, tuple[str, pd.DataFrame]]] = {}
    policy = None
    for method, names in sorted(by_method(exps).items()):
        policy = exps[names[min(names)]].get("policy")
        runs = {}
        for seed, name in names.items():
            vanilla = _read_records(f"data/baseline/{policy}/{task}.parquet", name)
            trained = _read_records(f"data/eval/{task}/{task}.parquet", name)
            try:
                runs[seed] = (name, align(vanilla, trained))
            except PoolError as exc:
                raise PoolError(f"{name}: {exc}") from None
        try:
            summary = summarise(runs)
        except PoolError as exc:
            raise PoolError(f"{method}: {exc}") from None
        runs_of[method] = runs
        print(f"\n### {method} on {task}: {len(runs)} seeds, {summary['n_items']} items "
              f"(accuracy %, Δ = trained − vanilla {policy}, paired; MDE: 80% power, α 0.05)\n")
        print(markdown(summary))
    if "r3" in runs_of and "grpo" in runs_of:
        summary = compare_methods(runs_of["r3"], runs_of["grpo"])
        print(f"\n### r3 vs the grpo control on {task}: {len(summary['seeds'])} seeds, {summary['n_items']} items "
              f"(the 'vanilla' column is the GRPO-trained model; Δ = R3-trained − GRPO-trained, paired)\n")
        print(markdown(summary))
    print(f"\n### training and test figures per experiment on {task}\n")
    print(training_table(exps, task, _read_json))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="queue one experiment per seed")
    q.add_argument("--seeds", nargs="+", required=True, metavar="SEED", help="integer training seeds")
    r = sub.add_parser("run", help="run R3 for each seed, then the control at each seed's R3 cost, then pool")
    r.add_argument("--seeds", nargs="+", required=True, metavar="SEED", help="integer training seeds")
    r.add_argument("--no-control", action="store_true", help="only the R3 runs and their pooled table")
    c = sub.add_parser("control", help="queue the plain-GRPO control of each finished r3 seed, at its token cost")
    c.add_argument("--seeds", nargs="+", metavar="SEED", help="integer seeds (default: every finished r3 seed)")
    for sp in (r, c):
        sp.add_argument("--max-steps", type=int, metavar="N", help="the control's step cap (default: 8 x R3's)")
    for sp in (q, r, c):
        sp.add_argument("-S", "--set-param", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra param override for every seed (repeatable)")
        sp.add_argument("--dry-run", action="store_true", help="only print the commands")
    p = sub.add_parser("pool", help="pool the paired deltas of the seeds of each method")
    p.add_argument("--task", default="countdown", help="the task the models were trained and evaluated on")
    p.add_argument("--exps", nargs="+", metavar="NAME", help="these experiments (default: every one of HEAD)")
    args = parser.parse_args()

    try:
        if args.command == "pool":
            pool(finished_experiments(args.exps), args.task)
            return
        try:
            seeds = parse_seeds(args.seeds) if args.seeds else None
        except ValueError as exc:
            sys.exit(f"error: --seeds: {exc}")
        reserved = ("seed",) if args.command == "queue" else ("seed", "train.method", "train.token_budget",
                                                              "train.max_steps")
        for kv in args.sets:
            if "=" not in kv or kv.split("=", 1)[0].strip() in reserved:
                sys.exit(f"error: -S {kv}: expected key=value other than {', '.join(reserved)} (set by the tool)")
        if getattr(args, "max_steps", None) is not None and args.max_steps < 1:
            sys.exit(f"error: --max-steps: {args.max_steps} is not a positive step count")
        if args.command == "queue":
            method = next((kv.split("=", 1)[1].strip() for kv in reversed(args.sets)
                           if kv.split("=", 1)[0].strip() == "train.method"), "r3")
            execute(queue_commands(seeds, args.sets, prefix=method), args.dry_run, "queue")
            if not args.dry_run:
                print("queued; run them with: dvc queue start", file=sys.stderr)
        elif args.command == "control":
            budgets, r3_steps = r3_budgets(finished_experiments(None), seeds, _read_json)
            execute(control_commands(budgets, args.max_steps or 8 * max(r3_steps, 1), args.sets), args.dry_run,
                    "control")
            if not args.dry_run:
                print("queued; run them with: dvc queue start", file=sys.stderr)
        else:
            run_in_workspace(seeds, args.sets, args.max_steps, args.no_control, args.dry_run)
    except PoolError as exc:
        sys.exit(f"error: {args.command}: {exc}")


def task_targets(sets: list[str]) -> list[str]:
    """`results@<task>` for each task of the last `tasks=[...]` override (none without one)."""
    import yaml

    tasks = [kv.split("=", 1)[1] for kv in sets if kv.split("=", 1)[0].strip() == "tasks"]
    return [f"results@{task}" for task in yaml.safe_load(tasks[-1])] if tasks else []


def drop_lock_entries_outside(targets: list[str], root: Path) -> list[str]:
    """Remove from dvc.lock the stages that are not the targets or upstream of them (returns their names).

    An experiment that stops at `targets` never runs the stages after them (`analyze`), yet DVC loads every
    stage's locked outputs when it saves the experiment, and fails on a locked directory output that is not
    in the cache (a fresh clone has none). Dropping those entries saves the experiment without them: its
    dvc.lock records what it ran."""
    from contextlib import chdir

    import yaml
    from dvc.repo import Repo

    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return []
    with chdir(root), Repo(str(root)) as repo:  # targets are relative to the repo root
        keep = {stage.addressing for target in targets for stage in repo.stage.collect(target, with_deps=True)}
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    stages = lock.get("stages") or {}
    dropped = [name for name in stages if name not in keep]
    if dropped:
        lock["stages"] = {name: entry for name, entry in stages.items() if name in keep}
        tmp = lock_path.with_name(lock_path.name + ".tmp")  # never a half-written lock
        tmp.write_text(yaml.safe_dump(lock, sort_keys=False), encoding="utf-8")
        tmp.replace(lock_path)
    return dropped


def run_in_workspace(seeds: list[int], sets: list[str], max_steps: int | None, no_control: bool,
                     dry_run: bool) -> None:
    """`run`: per seed, the R3 experiment and then its control, in the workspace; then the pooled tables."""
    targets = task_targets(sets)
    if dry_run:  # the R3 runs only: each control's budget is that seed's measured R3 cost
        execute([[*cmd, *targets] for cmd in queue_commands(seeds, [*sets, "train.method=r3"], None, "r3")],
                True, "run")
        return
    params = ROOT / "params.yaml"
    original = params.read_text(encoding="utf-8")
    try:
        done = set(finished_experiments(None))
    except PoolError:  # none yet
        done = set()
    names = []
    try:
        for s in seeds:
            for method in ("r3",) if no_control else ("r3", "grpo"):
                name = f"{method}-seed{s}"
                names.append(name)
                if name in done:  # a finished experiment of HEAD: resume after it
                    print(f"{name}: finished already, kept", flush=True)
                    continue
                params.write_text(original, encoding="utf-8")
                if method == "r3":
                    (cmd,) = queue_commands([s], [*sets, "train.method=r3"], mode=None, prefix="r3")
                else:
                    budgets, r3_steps = r3_budgets(finished_experiments([f"r3-seed{s}"]), [s], _read_json)
                    (cmd,) = control_commands(budgets, max_steps or 8 * max(r3_steps, 1), sets, mode=None)
                if targets:
                    drop_lock_entries_outside(targets, ROOT)
                execute([[*cmd, *targets]], False, "run")
    finally:
        params.write_text(original, encoding="utf-8")
    exps = finished_experiments(names)
    for task in exps[names[0]].get("tasks") or []:
        pool(exps, task)


def execute(cmds: list[list[str]], dry_run: bool, command: str) -> None:
    """Print each dvc command and run it (unless `dry_run`); the first that fails ends the tool."""
    for cmd in cmds:
        print(shlex.join(cmd), flush=True)
        if not dry_run:
            proc = subprocess.run([sys.executable, "-m", *cmd])
            if proc.returncode:
                sys.exit(f"error: {command}: `{shlex.join(cmd)}` failed (exit {proc.returncode})")


if __name__ == "__main__":
    main()
