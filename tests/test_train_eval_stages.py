"""The train, evaluate and results stages on the tiny profile, and the paper table's arithmetic."""

import json

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, load_script, run_stage
from test_stages import _download

from r3.metrics import paired_delta, paper_table


def _failures(workdir, task):
    data = _download(workdir, task)
    proc = run_stage(workdir, "failures.py", "--task", task, "--data", str(data), "--out", f"f_{task}.parquet",
                     "--metrics", "f.json")
    assert proc.returncode == 0, proc.stderr
    return data, workdir / f"f_{task}.parquet"


def _train(workdir, task, failures, out="models/r3/x"):
    return run_stage(workdir, "train.py", "--task", task, "--failures", str(failures), "--out", out,
                     "--metrics", "t.json", "--checkpoints", "ckpt", "--live", "live")


@pytest.mark.parametrize("method", ["r3", "grpo"])
def test_train_stage_writes_a_model_metrics_and_curves(workdir, method):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"]["method"] = method
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    _, failures = _failures(workdir, "countdown")
    proc = _train(workdir, "countdown", failures)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((workdir / "t.json").read_text())
    assert stats["method"] == method and stats["global_step"] == 2 and stats["generated_tokens"] > 0
    assert (stats["retry_success"] is None) == (method == "grpo")
    assert (workdir / "models/r3/x/model.safetensors").is_file()
    assert (workdir / "live/plots/metrics/reward.tsv").is_file()
    assert any((workdir / "ckpt").rglob("checkpoint-*")), "checkpoints are kept for resuming"


def _weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("method", ["r3", "grpo"])
def test_train_stage_moves_the_weights_when_rewards_vary(workdir, monkeypatch, method):
    """In process, with a verifier that accepts about half the texts: the groups have reward variance, so the
    saved model must differ from the policy it started from (a trainer that only copies the model fails)."""
    import argparse
    import zlib
    from dataclasses import replace

    from r3.tasks import get_task
    from r3.tasks.base import Verdict

    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"].update(method=method, num_generations=4, learning_rate=1e-3)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    _, failures = _failures(workdir, "countdown")
    coin = replace(get_task("countdown"), verify=lambda text, truth: Verdict(
        zlib.crc32(text.encode()) % 2 == 0, "correct" if zlib.crc32(text.encode()) % 2 == 0 else "missed_target"))
    stage = load_script(ROOT / "stages" / "train.py")
    monkeypatch.setattr(stage, "get_task", lambda name: coin)
    monkeypatch.chdir(workdir)
    stage.main(argparse.Namespace(params="params.yaml", task="countdown", failures=str(failures), out="trained",
                                  metrics="t.json", checkpoints="ckpt", live="live"))
    stats = json.loads((workdir / "t.json").read_text())
    assert stats["global_step"] == 2 and stats["frac_reward_zero_std"] < 1
    before, after = _weights(workdir / "models/primed"), _weights(workdir / "trained")
    assert set(before) == set(after)
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before)


def _rerun_train(workdir, failures):
    proc = _train(workdir, "countdown", failures)
    assert proc.returncode == 0, proc.stderr
    return json.loads((workdir / "t.json").read_text())["resumed_from"]


def test_train_resumes_only_a_run_with_the_same_policy_weights_and_failure_set(workdir):
    _, failures = _failures(workdir, "countdown")
    assert _rerun_train(workdir, failures) is None
    assert _rerun_train(workdir, failures).endswith("checkpoint-2")  # unchanged: resumes (and stops at once)
    df = pd.read_parquet(failures)
    df.loc[0, "attempt"] = df.loc[0, "attempt"] + " "  # same query ids, another failed attempt
    df.to_parquet(failures)
    assert _rerun_train(workdir, failures) is None
    weights = _weights(workdir / "models/primed")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3  # another starting policy (e.g. prime.* changed), same params
    from safetensors.torch import save_file

    save_file(weights, str(workdir / "models/primed/model.safetensors"), metadata={"format": "pt"})
    assert _rerun_train(workdir, failures) is None


def test_train_stage_on_an_empty_failure_set_fails_cleanly(workdir):
    _, failures = _failures(workdir, "countdown")
    df = pd.read_parquet(failures)
    df.iloc[:0].to_parquet(workdir / "empty.parquet")
    proc = _train(workdir, "countdown", workdir / "empty.parquet")
    assert proc.returncode == 1 and "failure set is empty" in proc.stderr
    assert not (workdir / "models/r3/x").exists() and not (workdir / "t.json").exists()


def test_train_stage_names_a_bad_param(workdir):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"]["method"] = "ppo"
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    _, failures = _failures(workdir, "countdown")
    proc = _train(workdir, "countdown", failures)
    assert proc.returncode == 1 and "train.method" in proc.stderr
    assert not (workdir / "models/r3/x").exists()


def test_evaluate_runs_the_baseline_protocol_on_a_given_model_and_rejects_a_missing_one(workdir):
    data = _download(workdir, "countdown")
    args = ["--task", "countdown", "--policy", "r3", "--data", str(data), "--out", "e.parquet", "--metrics", "e.json"]
    proc = run_stage(workdir, "baseline.py", *args, "--model", "models/raw")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((workdir / "e.json").read_text())["n"] == 6
    (workdir / "e.parquet").unlink()
    proc = run_stage(workdir, "baseline.py", *args, "--model", "models/nowhere")
    assert proc.returncode == 1 and "models/nowhere" in proc.stderr
    assert not (workdir / "e.parquet").exists()


def _records(first, second):
    pairs = enumerate(zip(first, second, strict=True))
    return [{"id": str(i), "first_correct": f, "second_correct": s} for i, (f, s) in pairs]


def test_paper_table_pairs_items_and_reports_deltas():
    vanilla = _records([1, 0, 0, 0], [1, 1, 0, 0])
    trained = list(reversed(_records([1, 1, 0, 0], [1, 1, 1, 0])))  # order must not matter
    table = paper_table(vanilla, trained)
    assert table["n"] == 4
    assert (table["vanilla_first"], table["vanilla_second"]) == (0.25, 0.5)
    assert (table["trained_first"], table["trained_second"]) == (0.5, 0.75)
    assert table["delta_first"] == 0.25 and table["delta_second"] == 0.25
    lo, hi = table["delta_second_ci95"]
    assert lo == 0.0 and 0.25 <= hi <= 1.0  # paired: every item changes by 0 or +1, never -1


def test_paired_delta_of_identical_runs_is_zero_with_a_zero_width_ci():
    assert paired_delta([1, 0, 1], [1, 0, 1]) == (0.0, [0.0, 0.0])


def test_paper_table_refuses_runs_over_different_items():
    with pytest.raises(ValueError, match="different test items"):
        paper_table(_records([1], [1]), [{"id": "other", "first_correct": 1, "second_correct": 1}])


def test_results_stage_writes_the_paper_table(workdir):
    def write(path, first, second):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{**r, "first_category": "correct" if r["first_correct"] else "missed_target", "retry": None,
                 "retry_correct": None, "retry_category": None, "reflection_tokens": None}
                for r in _records(first, second)]
        pd.DataFrame(rows).astype({"first_correct": bool, "second_correct": bool}).to_parquet(path)

    write(workdir / "b/primed/countdown.parquet", [1, 0, 0, 0], [1, 0, 0, 0])
    write(workdir / "b/raw/countdown.parquet", [0, 0, 0, 0], [0, 0, 0, 0])
    write(workdir / "e/countdown/countdown.parquet", [1, 1, 0, 0], [1, 1, 1, 0])
    write(workdir / "e/function_calling/countdown.parquet", [1, 0, 0, 0], [1, 0, 0, 0])
    proc = run_stage(workdir, "results.py", "--task", "countdown", "--baseline", "b", "--eval", "e",
                     "--metrics-dir", "m")
    assert proc.returncode == 0, proc.stderr
    table = json.loads((workdir / "m/table_countdown.json").read_text())
    assert (table["vanilla_first"], table["trained_second"], table["delta_second"]) == (0.25, 0.75, 0.5)
    assert (table["raw_first"], table["raw_second"]) == (0.0, 0.0)
    assert table["ood_trained_on_function_calling"]["delta_first"] == 0.0
    assert json.loads((workdir / "m/eval_countdown.json").read_text())["n_retried"] == 0
    assert json.loads((workdir / "m/baseline_countdown.json").read_text())["first_try_acc"] == 0.25


def test_results_compares_a_reference_run_with_the_vanilla_policy_on_the_items_it_covers(workdir):
    # the model trained on function calling was evaluated on items 1 and 2 only (baseline.reference_items)
    def write(path, records):
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{**r, "first_category": "correct" if r["first_correct"] else "missed_target", "retry": None,
                 "retry_correct": None, "retry_category": None, "reflection_tokens": None} for r in records]
        pd.DataFrame(rows).astype({"first_correct": bool, "second_correct": bool}).to_parquet(path)

    write(workdir / "b/primed/countdown.parquet", _records([1, 0, 0, 1], [1, 0, 0, 1]))
    write(workdir / "e/countdown/countdown.parquet", _records([1, 0, 0, 1], [1, 0, 0, 1]))
    write(workdir / "e/function_calling/countdown.parquet", _records([1, 1, 0, 1], [1, 1, 1, 1])[1:3])
    proc = run_stage(workdir, "results.py", "--task", "countdown", "--baseline", "b", "--eval", "e",
                     "--metrics-dir", "m")
    assert proc.returncode == 0, proc.stderr
    ood = json.loads((workdir / "m/table_countdown.json").read_text())["ood_trained_on_function_calling"]
    assert (ood["n"], ood["trained_first"], ood["delta_first"], ood["delta_second"]) == (2, 0.5, 0.5, 1.0)


def test_train_stage_logs_behaviours_and_a_validation_curve(workdir):
    """Every step logs the four behaviour shares; train.eval_every=1 measures validation at steps 0, 1, 2."""
    from r3.analysis.behaviours import BEHAVIOURS

    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"].update(method="grpo", eval_every=1, eval_items=4)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    data, failures = _failures(workdir, "countdown")
    proc = run_stage(workdir, "train.py", "--task", "countdown", "--failures", str(failures), "--data", str(data),
                     "--out", "m", "--metrics", "t.json", "--checkpoints", "ckpt", "--live", "live")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((workdir / "t.json").read_text())
    assert [step for step, _ in stats["validation_curve"]] == [0, 1, 2]
    assert all(acc in (0.0, 0.25, 0.5, 0.75, 1.0) for _, acc in stats["validation_curve"])  # of 4 items
    assert stats["validation_first"] == stats["validation_curve"][0][1]
    rows = pd.read_csv(workdir / "live/plots/metrics/eval/first_try_acc.tsv", sep="\t")
    assert list(rows["first_try_acc"]) == [acc for step, acc in stats["validation_curve"] if step > 0]
    assert set(stats["behaviours"]) == set(BEHAVIOURS)
    for b in BEHAVIOURS:
        curve = pd.read_csv(workdir / f"live/plots/metrics/behaviour/{b}.tsv", sep="\t")
        assert len(curve) == 2 and curve[b].between(0, 1).all()  # one share per step


def test_train_stage_rejects_an_eval_interval_beyond_the_run(workdir):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"]["eval_every"] = p["train"]["max_steps"] + 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    data, failures = _failures(workdir, "countdown")
    proc = run_stage(workdir, "train.py", "--task", "countdown", "--failures", str(failures), "--data", str(data),
                     "--out", "m", "--metrics", "t.json", "--checkpoints", "ckpt", "--live", "live")
    assert proc.returncode == 1
    assert f"train.eval_every={p['train']['max_steps'] + 1} must lie in" in proc.stderr.strip().splitlines()[-1]
    assert not (workdir / "m").exists() and not (workdir / "t.json").exists() and not (workdir / "live").exists()


def test_both_methods_leave_out_the_same_long_queries(workdir):
    """The prompt-length filter reads R3's prompt (task prompt + failed attempt + instruction) for both methods:
    with a limit that every GRPO prompt fits but some R3 prompts do not, GRPO leaves out exactly those queries."""
    from transformers import AutoTokenizer

    from r3 import configs
    from r3.params import Params
    from r3.tasks import get_task
    from r3.training.rollout import failure_queries

    p = yaml.safe_load((workdir / "params.yaml").read_text())
    _, failures = _failures(workdir, "countdown")
    task, tok = get_task("countdown"), AutoTokenizer.from_pretrained(workdir / "models" / "primed")
    proto = configs.protocol_config(Params(p), task, 1.0, 1.0, 0)

    def length(q, method):
        text = tok.apply_chat_template(q.prompt(method, proto), tokenize=False, add_generation_prompt=True)
        return len(tok(text + (proto.prefill if method == "grpo" else ""), add_special_tokens=False)["input_ids"])

    queries = failure_queries(failures, task)
    r3_lengths = sorted(length(q, "r3") for q in queries)
    limit = r3_lengths[len(r3_lengths) // 2]
    assert max(length(q, "grpo") for q in queries) <= limit < r3_lengths[-1]
    p["train"].update(method="grpo", max_prompt_tokens=limit)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    proc = _train(workdir, "countdown", failures)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((workdir / "t.json").read_text())
    assert stats["left_out_long_prompts"] == sum(n > limit for n in r3_lengths) >= 1
    assert stats["queries"] == len(queries) - stats["left_out_long_prompts"]
