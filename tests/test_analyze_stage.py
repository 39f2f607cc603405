"""The analyze stage on fixed protocol records: analysis data, metrics, and a report that matches them."""

import base64
import json
import re

import pandas as pd
import pytest
from conftest import run_stage

from r3.artifacts import write_parquet

CATS = {"countdown": ("missed_target", "wrong_numbers", "invalid_equation"),
        "function_calling": ("format", "wrong_tool", "wrong_arguments")}


def records(task: str, policy: str, outcomes: list[tuple[str, str | None]]) -> pd.DataFrame:
    """Protocol records: (1st-try category, retry category or None) per item."""
    rows = []
    for i, (first, retry) in enumerate(outcomes):
        failed = first != "correct"
        rows.append({
            "id": f"{task}-{i:02d}", "task": task, "split": "test", "policy": policy,
            "prompt": json.dumps([{"role": "user", "content": f"Query {i} of {task}"}]),
            "ground_truth": "{}",
            "first_attempt": f"<think>Let me try {i}. Check: {i} is not the target. Let me abandon this.</think>"
                             f"<answer>{i}</answer>",
            "first_tokens": 20, "first_finish": "stop", "first_correct": not failed,
            "first_category": first, "first_detail": "",
            "reflection": f"{policy} reflection {i}: the result misses the target." if failed else None,
            "reflection_tokens": 9.0 + i if failed else None,
            "retry": f"<answer>{i} retry</answer>" if failed else None,
            "retry_tokens": 5.0 if failed else None,
            "retry_correct": (retry == "correct") if failed else None,
            "retry_category": retry if failed else None, "retry_detail": "" if failed else None,
            "second_correct": (not failed) or retry == "correct",
        })
    return pd.DataFrame(rows)


def outcomes(task: str, policy: str) -> list[tuple[str, str | None]]:
    """7 items per policy: raw 0/7 -> 1/7, primed 2/7 -> 4/7, r3 3/7 -> 6/7."""
    a, b, c = CATS[task]
    return {"raw": [(a, a)] * 3 + [(a, a), (b, a), (c, c), (b, "correct")],
            "primed": [("correct", None)] * 2 + [(a, "correct")] + [(a, a), (b, a), (c, c), (b, "correct")],
            "r3": [("correct", None)] * 3 + [(a, "correct")] * 2 + [(b, "correct"), (c, c)]}[policy]


@pytest.fixture
def analysis_dir(workdir):
    for task in CATS:
        for policy in ("raw", "primed"):
            write_parquet(records(task, policy, outcomes(task, policy)),
                          workdir / "data/baseline" / policy / f"{task}.parquet")
        write_parquet(records(task, "r3", outcomes(task, "r3")), workdir / "data/eval" / task / f"{task}.parquet")
    live = workdir / "data/train_live/countdown/plots/metrics"
    (live / "r3").mkdir(parents=True)
    (live / "reward.tsv").write_text("step\treward\n0\t0.25\n1\t0.5\n")
    (live / "r3" / "retry_success.tsv").write_text("step\tretry_success\n0\t0.5\n1\t0.0\n")
    return workdir


def analyze(cwd, *extra):
    return run_stage(cwd, "analyze.py", "--baseline", "data/baseline", "--eval", "data/eval",
                     "--live", "data/train_live", "--analysis", "data/analysis", "--report", "data/report",
                     "--metrics-dir", "data/metrics", *extra)


def test_analyze_writes_analysis_metrics_plot_data_and_a_self_contained_report(analysis_dir):
    res = analyze(analysis_dir)
    assert res.returncode == 0, res.stderr
    for task in CATS:
        a = json.loads((analysis_dir / "data/analysis" / task / "analysis.json").read_text())
        assert set(a["policies"]) == {"raw", "primed", "r3"} and a["trained"] == "r3" and a["vanilla"] == "primed"
        primed = a["policies"]["primed"]
        assert primed["accuracy"]["n"] == 7 and primed["accuracy"]["first_try_acc"] == round(2 / 7, 4)
        x, y, z = CATS[task]
        assert primed["transitions"][x] == {"correct": 1, x: 1, y: 0, z: 0}
        assert primed["transitions"][y] == {"correct": 1, x: 1, y: 0, z: 0}
        assert a["paper_table"]["n"] == 7
        assert a["paper_table"]["delta_first"] == round(1 / 7, 4)
        assert a["paper_table"]["delta_second"] == round(2 / 7, 4)
        m = json.loads((analysis_dir / "data/metrics" / f"analysis_{task}.json").read_text())
        assert m["r3"]["second_try_acc"] == a["policies"]["r3"]["accuracy"]["second_try_acc"]
        assert m["primed"]["first_rate"][x] == round(2 / 7, 4)
        assert set(m["primed"]["attempt_behaviours"]) == {"verification", "backtracking", "subgoal_setting",
                                                          "backward_chaining"}
        errors = pd.read_csv(analysis_dir / "data/analysis" / task / "errors.csv")
        assert len(errors) == 3 * 2 * 4  # policies x tries x categories (correct included)
        trans = pd.read_csv(analysis_dir / "data/analysis" / task / "transitions" / "primed.csv")
        assert len(trans) == 5 and set(trans.columns) == {"first", "retry"}

    report = analysis_dir / "data/report"
    html = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    pngs = sorted(p.name for p in (report / "figures").glob("*.png"))
    # errors + behaviours per task, training curves where DVCLive logs exist (countdown here)
    assert pngs == ["countdown_behaviours.png", "countdown_errors.png", "countdown_training.png",
                    "function_calling_behaviours.png", "function_calling_errors.png"]
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == len(pngs) and all(base64.b64decode(e).startswith(b"\x89PNG") for e in embedded)
    assert 'src="figures/' not in html
    for name in pngs:
        assert f"(figures/{name})" in md
    # the table numbers are the metrics' numbers
    for task in CATS:
        m = json.loads((analysis_dir / "data/metrics" / f"analysis_{task}.json").read_text())
        for policy in ("raw", "primed", "r3"):
            first, second = m[policy]["first_try_acc"], m[policy]["second_try_acc"]
            row = f"<tr><td>{policy}</td><td>7</td><td>{100 * first:.1f}%</td>"
            assert row in html.split(f"<h2>{task}</h2>")[1], (task, policy)
            assert f"| {policy} | 7 | {100 * first:.1f}% |" in md and f"{100 * second:.1f}%" in md
    # examples are real records: fixed ones with a correct retry, and unhelped ones
    assert "Examples fixed by reflection (r3)" in md and "r3 reflection" in md
    assert "&lt;answer&gt;" in html  # model text is escaped, never interpreted


def test_analyze_without_a_trained_model_reports_the_baselines(analysis_dir):
    for task in CATS:
        (analysis_dir / "data/eval" / task / f"{task}.parquet").unlink()
    res = analyze(analysis_dir)
    assert res.returncode == 0, res.stderr
    a = json.loads((analysis_dir / "data/analysis/countdown/analysis.json").read_text())
    assert set(a["policies"]) == {"raw", "primed"} and a["trained"] is None and "paper_table" not in a
    assert "Examples fixed by reflection (primed)" in (analysis_dir / "data/report/report.md").read_text()


def test_analyze_names_a_corrupt_record_file_and_writes_nothing(analysis_dir):
    bad = analysis_dir / "data/baseline/primed/function_calling.parquet"
    bad.write_bytes(b"not parquet")
    res = analyze(analysis_dir)
    assert res.returncode == 1
    assert "function_calling.parquet" in res.stderr and "Parquet" in res.stderr
    assert not (analysis_dir / "data/report").exists() and not (analysis_dir / "data/analysis").exists()
    assert not list((analysis_dir / "data").glob("metrics/analysis_*.json"))


def test_analyze_names_a_missing_vanilla_policy(analysis_dir):
    (analysis_dir / "data/baseline/primed/countdown.parquet").unlink()
    res = analyze(analysis_dir)
    assert res.returncode == 1 and "primed/countdown.parquet" in res.stderr
