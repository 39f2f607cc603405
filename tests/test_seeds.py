"""Multi-seed statistics (pooled paired delta, minimum detectable effect), tools/seeds.py and the MDE in the
results stage's table. No model; one test builds a three-stage DVC repo."""

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, load_script

from r3.metrics import minimum_detectable_effect, pooled_paired_delta

seeds_tool = load_script(ROOT / "tools" / "seeds.py")
Z = 1.959964 + 0.841621  # z_{0.975} + z_{0.8}


def _seeds_cli(cwd, *args):
    """tools/seeds.py outside any DVC repo: a bug that runs dvc fails there instead of queueing experiments."""
    return subprocess.run([sys.executable, str(ROOT / "tools" / "seeds.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_pooled_delta_is_the_mean_of_after_minus_before_over_seeds_and_items():
    before = {0: [0, 0, 1, 1], 1: [1, 0, 0, 1]}
    after = {0: [1, 0, 1, 1], 1: [1, 1, 1, 1]}  # seed 0 gains 1 of 4 items, seed 1 gains 2 of 4
    out = pooled_paired_delta(before, after)
    assert out["delta"] == 0.375 and out["per_seed"] == {0: 0.25, 1: 0.5}
    assert (out["n_items"], out["n_seeds"]) == (4, 2)
    lo, hi = out["ci95"]
    assert 0 <= lo <= 0.375 <= hi <= 1  # every item changes by 0 or +1


def test_pooled_ci_resamples_seeds():
    # within a seed every item moves alike, so only the seeds disagree: resampling items alone gives a zero-width CI
    out = pooled_paired_delta({0: [0] * 10, 1: [0] * 10}, {0: [1] * 10, 1: [0] * 10})
    assert out["delta"] == 0.5 and out["ci95"] == [0.0, 1.0]


def test_pooled_ci_resamples_items():
    # the seeds agree item by item, so only the items vary: resampling seeds alone gives a zero-width CI
    out = pooled_paired_delta({0: [0] * 10, 1: [0] * 10}, {0: [1, 0] * 5, 1: [1, 0] * 5})
    lo, hi = out["ci95"]
    assert out["delta"] == 0.5 and lo < 0.4 and hi > 0.6


def _random_runs(n_seeds, n_items, rng):
    before = {s: list(rng.random(n_items) < 0.4) for s in range(n_seeds)}
    after = {s: list(rng.random(n_items) < 0.5 + 0.1 * rng.standard_normal()) for s in range(n_seeds)}
    return before, after


def _width(out):
    assert out["ci95"][0] <= out["delta"] <= out["ci95"][1]
    return out["ci95"][1] - out["ci95"][0]


def test_pooled_ci_contains_the_delta_and_narrows_with_more_seeds_and_items():
    rng = np.random.default_rng(7)
    few_seeds = _width(pooled_paired_delta(*_random_runs(2, 100, rng)))
    many_seeds = _width(pooled_paired_delta(*_random_runs(12, 100, rng)))
    many_items = _width(pooled_paired_delta(*_random_runs(2, 1600, rng)))
    assert many_seeds < 0.75 * few_seeds and many_items < 0.75 * few_seeds


def test_identical_runs_give_a_zero_delta_and_a_zero_width_ci():
    runs = {0: [1, 0, 1, 1], 3: [0, 0, 1, 0]}
    out = pooled_paired_delta(runs, {s: list(v) for s, v in runs.items()})
    assert out["delta"] == 0.0 and out["ci95"] == [0.0, 0.0] and out["per_seed"] == {0: 0.0, 3: 0.0}


def test_pooled_delta_refuses_mismatched_seeds_and_lengths_naming_the_seed():
    with pytest.raises(ValueError, match="seed 1 "):
        pooled_paired_delta({0: [1], 1: [1]}, {0: [1]})
    with pytest.raises(ValueError, match="seed 2 "):
        pooled_paired_delta({0: [1]}, {0: [1], 2: [0]})
    with pytest.raises(ValueError, match="seed 3: `before` has 3 items"):
        pooled_paired_delta({0: [1, 0], 3: [1, 0, 1]}, {0: [1, 0], 3: [1, 0, 1]})
    with pytest.raises(ValueError, match="seed 3: `after` has 1 items"):
        pooled_paired_delta({0: [1, 0], 3: [1, 0]}, {0: [1, 0], 3: [1]})


def test_mde_is_the_normal_formula():
    # diffs 1, 0, 0, -1: mean 0, sd (ddof=1) = sqrt(2/3), n = 4
    assert minimum_detectable_effect([1, 0, 0, -1]) == round(Z * math.sqrt(2 / 3) / 2, 4) == 1.1437
    assert minimum_detectable_effect([1, 0, 0, -1], alpha=0.5, power=0.5) == round(0.674490 * math.sqrt(2 / 3) / 2, 4)


def test_mde_shrinks_as_one_over_sqrt_n():
    small, large = minimum_detectable_effect([1, 0, 0, -1] * 25), minimum_detectable_effect([1, 0, 0, -1] * 100)
    assert small / large == pytest.approx(2, rel=0.01)


def test_mde_of_constant_diffs_falls_back_to_the_worst_case_sd():
    assert minimum_detectable_effect([0] * 64) == round(Z * math.sqrt(0.5) / 8, 4) == 0.2476
    with pytest.raises(ValueError):
        minimum_detectable_effect([])


def test_queue_rejects_a_seed_that_is_not_an_integer_in_one_line(tmp_path):
    proc = _seeds_cli(tmp_path, "queue", "--seeds", "0", "one", "--dry-run")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: --seeds: 'one' is not an integer"]
    assert proc.stdout == ""  # nothing was run before the check


def test_queue_dry_run_prints_one_dvc_command_per_seed(tmp_path):
    proc = _seeds_cli(tmp_path, "queue", "--dry-run", "--seeds", "0", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["dvc exp run --queue -n r3-seed0 -S seed=0",
                                        "dvc exp run --queue -n r3-seed1 -S seed=1"]
    proc = _seeds_cli(tmp_path, "queue", "--dry-run", "--seeds", "3", "-S", "train.method=grpo")
    assert proc.stdout.splitlines() == ["dvc exp run --queue -n grpo-seed3 -S seed=3 -S train.method=grpo"]
    assert seeds_tool.queue_commands([5], ["train.method=grpo"]) == [
        ["dvc", "exp", "run", "--queue", "-S", "seed=5", "-S", "train.method=grpo"]]


def _frame(ids, first, second):
    return pd.DataFrame({"id": ids, "first_correct": [bool(x) for x in first],
                         "second_correct": [bool(x) for x in second]})


def test_pool_pairs_items_by_id_and_builds_the_table_numbers():
    # seed 0: the trained frame lists the items in another order; 2nd try vanilla a,b,c,d = 0,0,1,1 -> 1,0,1,1
    s0 = seeds_tool.align(_frame(["a", "b", "c", "d"], [0] * 4, [0, 0, 1, 1]),
                          _frame(["d", "c", "b", "a"], [0] * 4, [1, 1, 0, 1]))
    # seed 1: 1,0,0,1 -> 1,1,1,1
    s1 = seeds_tool.align(_frame(["a", "b", "c", "d"], [0] * 4, [1, 0, 0, 1]),
                          _frame(["a", "b", "c", "d"], [0] * 4, [1, 1, 1, 1]))
    assert list(s0["trained_second"]) == [1.0, 0.0, 1.0, 1.0]
    summary = seeds_tool.summarise({1: ("exp-b", s1), 0: ("exp-a", s0)})
    assert summary["seeds"] == [0, 1] and summary["n_items"] == 4
    rows = {r["seed"]: r for r in summary["per_seed"]}
    assert (rows[0]["experiment"], rows[0]["vanilla_second"], rows[0]["trained_second"], rows[0]["delta"]) == (
        "exp-a", 0.5, 0.75, 0.25)
    assert (rows[1]["vanilla_second"], rows[1]["trained_second"], rows[1]["delta"]) == (0.5, 1.0, 0.5)
    assert rows[1]["mde"] == round(Z * math.sqrt(1 / 3) / 2, 4)  # diffs 0, 1, 1, 0
    pooled = summary["pooled"]
    assert (pooled["vanilla_second"], pooled["trained_second"], pooled["delta"]) == (0.5, 0.875, 0.375)
    # per-item diffs averaged over the seeds: a 0.5, b 0.5, c 0.5, d 0 -> sd 0.25
    assert pooled["mde"] == round(Z * 0.25 / 2, 4)
    table = seeds_tool.markdown(summary).splitlines()
    assert len(table) == 2 + 3 and table[-1].startswith("| pooled (0, 1) | 2 seeds | 4 | 50.0 | 87.5 | +37.5 [")


def test_pool_refuses_unpaired_items():
    with pytest.raises(seeds_tool.PoolError, match="different items"):
        seeds_tool.align(_frame(["a", "b"], [0, 0], [0, 0]), _frame(["a", "c"], [0, 0], [0, 0]))
    s0 = seeds_tool.align(_frame(["a"], [0], [0]), _frame(["a"], [0], [1]))
    s1 = seeds_tool.align(_frame(["b"], [0], [0]), _frame(["b"], [0], [1]))
    with pytest.raises(seeds_tool.PoolError, match="different test items"):
        seeds_tool.summarise({0: ("x", s0), 1: ("y", s1)})


def test_pool_lists_the_finished_experiments_of_head():
    def exp(name, seed, state=None):
        return {"name": name, "executor": state and {"state": state},
                "revs": [{"rev": "f" * 40, "name": name, "data": {"params": {"params.yaml": {"data": {
                    "seed": seed, "train": {"method": "r3"}}}}}}]}

    shown = [{"rev": "workspace", "data": {}},
             {"rev": "a" * 40, "experiments": [exp("done", 0), exp("also-done", 1, "success"),
                                               exp("running", 2, "running")]}]
    assert seeds_tool.head_experiments(shown) == {"done": {"seed": 0, "train.method": "r3"},
                                                  "also-done": {"seed": 1, "train.method": "r3"}}


def test_results_stage_writes_the_minimum_detectable_effects(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    tasks, policy = params["tasks"], params["policy"]

    def write(path, first, second):
        path.parent.mkdir(parents=True, exist_ok=True)
        df = _frame([str(i) for i in range(len(first))], first, second)
        df["first_category"] = ["correct" if f else "missed_target" for f in first]
        df["retry"] = df["retry_correct"] = df["retry_category"] = df["reflection_tokens"] = None
        df.to_parquet(path)

    write(tmp_path / f"b/{policy}/countdown.parquet", [1, 0, 0, 0], [1, 0, 0, 0])
    for trained_on in tasks:
        write(tmp_path / f"e/{trained_on}/countdown.parquet", [1, 1, 0, 0], [1, 1, 1, 0])
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "results.py"), "--task", "countdown", "--baseline",
                           "b", "--eval", "e", "--metrics-dir", "m"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = json.loads((tmp_path / "m/table_countdown.json").read_text())
    assert table["delta_second"] == 0.5 and table["n"] == 4  # the existing keys stay
    assert table["mde_first"] == round(Z * 0.5 / 2, 4)  # diffs 0, 1, 0, 0: sd 0.5
    assert table["mde_second"] == round(Z * math.sqrt(1 / 3) / 2, 4)  # diffs 0, 1, 1, 0


def test_control_queues_grpo_at_each_seeds_r3_token_count():
    exps = {"r3-a": {"seed": 0, "train.method": "r3", "tasks": ["countdown", "function_calling"],
                     "train.max_steps": 8},
            "r3-b": {"seed": 1, "train.method": "r3", "tasks": ["countdown", "function_calling"],
                     "train.max_steps": 8},
            "other": {"seed": 0, "train.method": "grpo", "tasks": ["countdown"], "train.max_steps": 8}}
    tokens = {("r3-a", "countdown"): 1500, ("r3-a", "function_calling"): 900,
              ("r3-b", "countdown"): 1700, ("r3-b", "function_calling"): 800}

    def read_json(path, rev):
        task = path.removeprefix("data/metrics/train_r3_").removesuffix(".json")
        return {"generated_tokens": tokens[(rev, task)]}

    budgets, steps = seeds_tool.r3_budgets(exps, None, read_json)
    assert budgets == {0: {"countdown": 1500, "function_calling": 900}, 1: {"countdown": 1700, "function_calling": 800}}
    assert steps == 8
    assert seeds_tool.r3_budgets(exps, [1], read_json)[0] == {1: {"countdown": 1700, "function_calling": 800}}
    [cmd] = seeds_tool.control_commands({1: budgets[1]}, 64, ["train.lora.enabled=true"])
    assert cmd == ["dvc", "exp", "run", "--queue", "-n", "grpo-seed1", "-S", "seed=1", "-S", "train.method=grpo",
                   "-S", "train.token_budget={countdown: 1700, function_calling: 800}", "-S", "train.max_steps=64",
                   "-S", "train.lora.enabled=true"]
    assert yaml.safe_load(cmd[11].split("=", 1)[1]) == {"countdown": 1700, "function_calling": 800}
    with pytest.raises(seeds_tool.PoolError, match=r"seed\(s\) \[2\]"):
        seeds_tool.r3_budgets(exps, [1, 2], read_json)
    with pytest.raises(seeds_tool.PoolError, match="no generated_tokens"):
        seeds_tool.r3_budgets(exps, [0], lambda path, rev: {})


def test_control_rejects_a_bad_seed_or_an_override_the_tool_sets_in_one_line(tmp_path):
    proc = _seeds_cli(tmp_path, "control", "--seeds", "x", "--dry-run")
    assert (proc.returncode, proc.stderr.splitlines(), proc.stdout) == (1, ["error: --seeds: 'x' is not an integer"],
                                                                        "")
    proc = _seeds_cli(tmp_path, "control", "-S", "train.token_budget=5", "--dry-run")
    assert proc.returncode == 1 and proc.stderr.startswith("error: -S train.token_budget=5: expected key=value other")
    assert len(proc.stderr.splitlines()) == 1 and proc.stdout == ""


def test_seeds_of_a_method_may_differ_only_in_seed_and_the_controls_budget():
    base = {"train.method": "grpo", "train.lr": 1e-5}
    exps = {"g0": {**base, "seed": 0, "train.token_budget.countdown": 10},
            "g1": {**base, "seed": 1, "train.token_budget.countdown": 12}}
    assert seeds_tool.by_method(exps) == {"grpo": {0: "g0", 1: "g1"}}
    exps["g1"]["train.lr"] = 1e-4
    with pytest.raises(seeds_tool.PoolError, match=r"differ in \['train.lr'\]"):
        seeds_tool.by_method(exps)


def test_r3_against_the_control_pairs_the_trained_models_by_item_and_seed():
    def aligned(vanilla_second, trained_second):
        ids = ["a", "b", "c", "d"]
        return seeds_tool.align(_frame(ids, [0] * 4, vanilla_second), _frame(ids, [0] * 4, trained_second))

    r3 = {0: ("r3-0", aligned([0, 0, 0, 0], [1, 1, 0, 0])), 1: ("r3-1", aligned([0, 0, 0, 0], [1, 0, 0, 0]))}
    grpo = {0: ("g-0", aligned([0, 0, 0, 0], [1, 0, 0, 0])), 1: ("g-1", aligned([0, 0, 0, 0], [1, 0, 0, 1])),
            2: ("g-2", aligned([0, 0, 0, 0], [0, 0, 0, 0]))}
    summary = seeds_tool.compare_methods(r3, grpo)
    assert summary["seeds"] == [0, 1]  # seed 2 has no r3 run
    rows = {r["seed"]: r for r in summary["per_seed"]}
    assert (rows[0]["vanilla_second"], rows[0]["trained_second"], rows[0]["delta"]) == (0.25, 0.5, 0.25)
    assert (rows[1]["vanilla_second"], rows[1]["trained_second"], rows[1]["delta"]) == (0.5, 0.25, -0.25)
    assert summary["pooled"]["delta"] == 0.0
    with pytest.raises(seeds_tool.PoolError, match="share no seed"):
        seeds_tool.compare_methods({5: r3[0]}, grpo)


def test_run_dry_run_prints_the_r3_experiments_it_would_run_first(tmp_path):
    proc = _seeds_cli(tmp_path, "run", "--dry-run", "--seeds", "0", "2", "-S", "train.lora.enabled=true")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"dvc exp run -n r3-seed{s} -S seed={s} -S train.lora.enabled=true -S train.method=r3" for s in (0, 2)]
    # in the workspace: the control then finds the seed's primed model, baselines and failure set up to date
    proc = _seeds_cli(tmp_path, "run", "--dry-run", "--seeds", "1", "-S", "tasks=[countdown]")
    assert proc.stdout.splitlines() == [
        "dvc exp run -n r3-seed1 -S seed=1 -S 'tasks=[countdown]' -S train.method=r3 results@countdown"]
    proc = _seeds_cli(tmp_path, "run", "--dry-run", "--seeds", "0", "-S", "train.method=grpo")
    assert proc.returncode == 1 and "expected key=value other than seed, train.method" in proc.stderr


def test_only_the_tools_own_seed_experiments_are_pooled_by_default():
    names = ["r3-seed0", "grpo-seed12", "variant-all_strategies", "exp-1a2b3", "r3-seed0-old"]
    assert [n for n in names if seeds_tool.SEED_RUN.fullmatch(n)] == ["r3-seed0", "grpo-seed12"]


def test_run_puts_params_back_before_each_experiment_and_resumes_after_finished_ones(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(seeds_tool, "ROOT", tmp_path)
    ran, seen = [], []

    def execute(cmds, dry_run, command):
        for cmd in cmds:
            seen.append((tmp_path / "params.yaml").read_text())
            ran.append(cmd)
            (tmp_path / "params.yaml").write_text("seed: 99\ntrain: {method: grpo}\n")  # what dvc exp run leaves

    def finished(names):
        if names is None:  # what `dvc exp show` lists
            return {"r3-seed0": {"seed": 0, "train.method": "r3"}}
        return {name: {"tasks": ["countdown"]} for name in names}

    monkeypatch.setattr(seeds_tool, "execute", execute)
    monkeypatch.setattr(seeds_tool, "finished_experiments", finished)
    monkeypatch.setattr(seeds_tool, "r3_budgets", lambda exps, seeds, read: ({seeds[0]: {"countdown": 100}}, 8))
    pooled = []
    monkeypatch.setattr(seeds_tool, "pool", lambda exps, task: pooled.append((sorted(exps), task)))
    dropped = []
    monkeypatch.setattr(seeds_tool, "drop_lock_entries_outside", lambda targets, root: dropped.append(targets))
    seeds_tool.run_in_workspace([0, 1], ["tasks=[countdown]"], None, False, False)
    assert [cmd[4] for cmd in ran] == ["grpo-seed0", "r3-seed1", "grpo-seed1"]  # r3-seed0 was finished: kept
    assert seen == ["seed: 0\n"] * 3
    assert (tmp_path / "params.yaml").read_text() == "seed: 0\n"
    assert all(cmd[-1] == "results@countdown" for cmd in ran) and dropped == [["results@countdown"]] * 3
    assert "train.token_budget={countdown: 100}" in ran[0] and "train.max_steps=64" in ran[0]
    assert pooled == [(["grpo-seed0", "grpo-seed1", "r3-seed0", "r3-seed1"], "countdown")]


def test_lock_entries_past_the_targets_are_dropped(tmp_path):
    """A run that ends at `b` never runs `c`; its locked directory output, absent from the cache, would stop
    DVC from saving the experiment."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "echo a > a.txt", "outs": ["a.txt"]},
        "b": {"cmd": "cp a.txt b.txt", "deps": ["a.txt"], "outs": ["b.txt"]},
        "c": {"cmd": "mkdir -p c && cp b.txt c/", "deps": ["b.txt"], "outs": ["c"]}}}))
    entry = {"cmd": "x", "outs": [{"path": "c", "md5": "0" * 32 + ".dir", "size": 1, "nfiles": 1}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "a": {"cmd": "echo a > a.txt"}, "b": {"cmd": "cp a.txt b.txt"}, "c": entry}}))
    assert seeds_tool.drop_lock_entries_outside(["b"], tmp_path) == ["c"]
    assert list(yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]) == ["a", "b"]
    assert seeds_tool.drop_lock_entries_outside(["b"], tmp_path) == []


def test_training_table_reads_each_experiments_training_and_test_figures():
    exps = {"r3-seed1": {"seed": 1, "train.method": "r3"}, "grpo-seed0": {"seed": 0, "train.method": "grpo"},
            "r3-seed0": {"seed": 0, "train.method": "r3"}}
    files = {("r3-seed0", "data/metrics/train_r3_countdown.json"):
             {"global_step": 8, "skipped_steps": 6, "frac_reward_zero_std": 0.875, "generated_tokens": 16116},
             ("r3-seed0", "data/metrics/eval_r3-countdown_countdown.json"):
             {"first_try_acc": 0.039, "second_try_acc": 0.041, "n_retried": 492, "retry_success_rate": 0.002},
             ("r3-seed1", "data/metrics/train_r3_countdown.json"):
             {"global_step": 8, "skipped_steps": 8, "frac_reward_zero_std": 1.0, "generated_tokens": 900},
             ("r3-seed1", "data/metrics/eval_r3-countdown_countdown.json"):
             {"first_try_acc": 0.05, "second_try_acc": 0.06, "n_retried": 0, "retry_success_rate": 0.0},
             ("grpo-seed0", "data/metrics/train_grpo_countdown.json"):
             {"global_step": 10, "skipped_steps": 7, "frac_reward_zero_std": 0.85, "generated_tokens": 17980},
             ("grpo-seed0", "data/metrics/eval_grpo-countdown_countdown.json"):
             {"first_try_acc": 0.0625, "second_try_acc": 0.0664, "n_retried": 480, "retry_success_rate": 0.0042}}
    rows = seeds_tool.training_table(exps, "countdown", lambda path, rev: files[(rev, path)]).splitlines()
    assert rows[2] == "| grpo-seed0 | 10 | 3 | 15.0% | 17,980 | 6.2 / 6.6% | 2 of 480 (0.4%) |"
    assert rows[3] == "| r3-seed0 | 8 | 2 | 12.5% | 16,116 | 3.9 / 4.1% | 1 of 492 (0.2%) |"
    assert rows[4] == "| r3-seed1 | 8 | 0 | 0.0% | 900 | 5.0 / 6.0% | 0 of 0 (–%) |"
