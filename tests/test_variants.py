"""tools/variants.py: the six-variant queue, its bad input, and the report rendered from fixed inputs."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, load_script

variants = load_script(ROOT / "tools" / "variants.py")
VARIANTS = ("all_strategies", "backtracking_only", "backtracking_verification", "negative_control", "empty_cot",
            "incorrect_with_behaviours")


def _sets(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, arg in enumerate(cmd) if arg == "-S")


def test_the_queue_expands_to_the_six_variants_with_the_profile():
    values = variants.overrides(variants.load_profile(variants.PROFILE), [])
    variants.check_steps(values, ROOT / "params.yaml")
    cmds = variants.queue_commands(variants.parse_variants(None), values)
    assert len(cmds) == 6
    for cmd, name in zip(cmds, VARIANTS, strict=True):
        assert cmd[:6] == ["dvc", "exp", "run", "--queue", "-n", f"variant-{name}"]
        sets = _sets(cmd)
        assert sets["prime.mix.countdown.variant"] == name
        assert sets["train.method"] == "grpo" and sets["tasks"] == "[countdown]"
        assert sets["prime.mix.function_calling.size"] == "0"
        assert 1 <= int(sets["train.eval_every"]) <= int(sets["train.max_steps"])
        # on Countdown alone the experiment ends at its results stage (analyze needs every default task)
        assert cmd[-1] == "results@countdown" and cmd[-2] != "-S" and "analyze" not in cmd
    # the rest of each command is the same: only the variant differs
    assert len({tuple(c[8:]) for c in cmds}) == 1


def test_command_line_overrides_win_and_a_subset_of_variants_keeps_its_order():
    values = variants.overrides({"train.method": "grpo", "train.max_steps": 16}, ["train.method=r3"])
    cmds = variants.queue_commands(variants.parse_variants(["empty_cot", "all_strategies", "empty_cot"]), values)
    assert [_sets(c)["prime.mix.countdown.variant"] for c in cmds] == ["empty_cot", "all_strategies"]
    assert all(_sets(c)["train.method"] == "r3" for c in cmds)


@pytest.mark.parametrize(("args", "message"), [
    (["--variants", "all_strategies", "verbose"], "--variants: unknown priming variant 'verbose'"),
    (["-S", "train.eval_every=17"], "train.eval_every=17 must lie in [1, train.max_steps=16]"),
    (["-S", "train.eval_every=8", "-S", "train.max_steps=4"], "train.eval_every=8 must lie in"),
    (["-S", "prime.mix.countdown.variant=empty_cot"], "the variant is set per experiment"),
])
def test_bad_input_is_a_one_line_error_and_queues_nothing(args, message):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "variants.py"), "queue", "--dry-run", *args],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: variants: ") and message in line


# ---------------------------------------------------------------- the report from fixed inputs

B = ("verification", "backtracking", "subgoal_setting", "backward_chaining")
# variant -> (before, after) first-try accuracy with a 95% CI of +-0.1 around each
ACC = {"all_strategies": (0.10, 0.30), "backtracking_only": (0.10, 0.25), "negative_control": (0.10, 0.10),
       "empty_cot": (0.05, 0.05)}


def _fake_experiments():
    rows, files = [], {}
    for i, (v, (before, after)) in enumerate(ACC.items()):
        rev = f"rev{i}"
        rows.append({"name": f"variant-{v}", "rev": rev, "params": {"prime.mix.countdown.variant": v,
                                                                     "train.method": "grpo"}, "metrics": {}})
        for path, acc in (("data/metrics/baseline_primed_countdown.json", before),
                          ("data/metrics/eval_grpo-countdown_countdown.json", after)):
            files[rev, path] = {"first_try_acc": acc, "first_try_ci95": [acc - 0.1, acc + 0.1], "n": 64}
        files[rev, "data/metrics/train_grpo_countdown.json"] = {"validation_curve": [[0, before], [4, after]]}
        for j, b in enumerate(B):
            rates = "\n".join(f"{t}\t{s}\t{(i + j + s) / 20}" for t, s in ((100, 0), (101, 1), (102, 2)))
            path = f"data/train_live/countdown/plots/metrics/behaviour/{b}.tsv"
            files[rev, path] = f"timestamp\tstep\t{b}\n{rates}\n"
    # a failed run of all_strategies (no evaluation) beside its finished rerun
    rows.insert(0, {"name": "variant-all_strategies", "rev": "failed", "metrics": {},
                    "params": {"prime.mix.countdown.variant": "all_strategies", "train.method": "grpo"}})
    files["failed", "data/metrics/baseline_primed_countdown.json"] = {"first_try_acc": 0.5, "n": 64}
    rows.append({"name": "seed-3", "rev": "x", "params": {"prime.mix.countdown.variant": "empty_cot"}, "metrics": {}})
    return rows, files


def test_the_report_renders_from_fixed_inputs_and_its_numbers_are_the_metrics(tmp_path):
    rows, files = _fake_experiments()
    results = variants.collect(rows, read=lambda rev, path: files.get((rev, path)),
                               metrics=lambda rev, path: files.get((rev, path)))
    assert [r["variant"] for r in results] == ["all_strategies", "backtracking_only", "negative_control",
                                               "empty_cot"]  # VARIANTS order; no non-variant row, no failed run
    assert results[0]["rev"] == "rev0"
    text = variants.report(results, tmp_path)
    assert (tmp_path / "table.md").read_text() == text
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 10.0 [0.0, 20.0] | 30.0 [20.0, 40.0] | +20.0 |" in lines["all_strategies"]
    assert "| 5.0 [-5.0, 15.0] | 5.0 [-5.0, 15.0] | +0.0 |" in lines["empty_cot"]
    # behaviour rates: first and last logged step of each curve (variant i, behaviour j: (i + j + step) / 20)
    assert lines["backtracking_only"].endswith("| 5.0 → 15.0 | 10.0 → 20.0 | 15.0 → 25.0 | 20.0 → 30.0 |")
    # gains: behaviour-rich +20 and +15 (mean +17.5), controls 0 and 0: beyond the CI half-width of 10
    assert "+17.5 points on average" in text and "+0.0 (2)" in text and "+17.5 points, against" in text
    assert "supports the paper's claim" in text
    assert (tmp_path / "accuracy_vs_step.png").stat().st_size > 1000
    assert (tmp_path / "behaviours_vs_step.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "experiments.json").read_text())
    assert [r["validation_curve"] for r in saved][0] == [[0, 0.1], [4, 0.3]]


def _result(variant, before, after, half=0.1):
    return {"variant": variant, "before": {"acc": before, "lo": before - half, "hi": before + half},
            "after": {"acc": after, "lo": after - half, "hi": after + half}}


@pytest.mark.parametrize(("rich_gain", "expected"), [
    (0.25, "supports the paper's claim"), (0.05, "neither supports nor contradicts"),
    (-0.2, "contradicts the paper's claim")])
def test_the_verdict_follows_the_numbers(rich_gain, expected):
    results = [_result("all_strategies", 0.1, 0.1 + rich_gain), _result("negative_control", 0.1, 0.1)]
    assert expected in variants.verdict(results)
    assert "Not enough" in variants.verdict(results[:1])


def test_no_finished_variant_is_an_error(tmp_path):
    with pytest.raises(variants.VariantsError, match="no variant-<variant> experiment"):
        variants.report([], tmp_path)
    assert not any(tmp_path.iterdir())


def test_the_exp_table_has_the_variant_as_a_column_and_the_metrics_dvc_shows():
    rows = [{"name": f"variant-{v}", "rev": f"r{i}", "params": {"prime.mix.countdown.variant": v, "train.method": m,
                                                                "prime.epochs": 1, "seed": 0},
             "metrics": {"data/metrics/baseline_primed_countdown.json": {"first_try_acc": 0.1 * i},
                         f"data/metrics/train_{m}_countdown.json": {"global_step": 16, "reward_mean": 0.5}}}
            for i, (v, m) in enumerate((("empty_cot", "grpo"), ("all_strategies", "r3")))]
    rows.append({"name": "r3-seed1", "rev": "x", "params": {"prime.mix.countdown.variant": "empty_cot"},
                 "metrics": {}})
    lines = variants.exp_table(rows).splitlines()
    assert lines[0].startswith("| Experiment | prime.mix.countdown.variant | train.method | 1st try before RL |")
    assert len(lines) == 2 + 2  # the seed experiment left out; VARIANTS order
    assert lines[2].startswith("| variant-all_strategies | all_strategies | r3 | 0.1 | – | – | 0.5 |")
    assert lines[3].startswith("| variant-empty_cot | empty_cot | grpo | 0.0 | – | – | 0.5 |")
    assert lines[3].endswith("| 16 |")
