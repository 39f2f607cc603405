"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the repo, on the tiny profile."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_params

TASKS = ("countdown", "function_calling")
COPY = ["src", "stages", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore"]


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def repo_copy(tmp_path, tiny_model_dir) -> Path:
    for rel in COPY:
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(str(tiny_model_dir))))
    # a real checkout has commits; DVCLive reads the git state
    git = ["git", "-c", "user.name=r3", "-c", "user.email=r3@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=tmp_path, check=True)
    return tmp_path


def test_dvc_repro_end_to_end_then_nothing_to_do(repo_copy):
    dvc(repo_copy, "repro")
    for task in ("countdown", "function_calling"):
        assert (repo_copy / f"data/failures/{task}.parquet").is_file()
        metrics = json.loads((repo_copy / f"data/metrics/baseline_{task}.json").read_text())
        assert metrics["n"] == 6 and 0 <= metrics["first_try_acc"] <= metrics["second_try_acc"] <= 1
        assert (repo_copy / f"data/metrics/baseline_raw_{task}.json").is_file()
        assert (repo_copy / f"data/metrics/baseline_primed_{task}.json").is_file()
    assert (repo_copy / "models/primed/model.safetensors").is_file()
    for task, other in (("countdown", "function_calling"), ("function_calling", "countdown")):
        assert (repo_copy / f"models/r3/{task}/model.safetensors").is_file()
        table = json.loads((repo_copy / f"data/metrics/table_{task}.json").read_text())
        assert table["n"] == 6 and table["vanilla_policy"] == "primed" and table["trained_method"] == "r3"
        for key in ("vanilla_first", "vanilla_second", "trained_first", "trained_second"):
            assert 0 <= table[key] <= 1 and len(table[f"{key}_ci95"]) == 2
        assert table["delta_second"] == round(table["trained_second"] - table["vanilla_second"], 4)
        assert table[f"ood_trained_on_{other}"]["n"] == 6
        evaluated = json.loads((repo_copy / f"data/metrics/eval_{task}.json").read_text())
        assert evaluated["first_try_acc"] == table["trained_first"]
        train = json.loads((repo_copy / f"data/metrics/train_r3_{task}.json").read_text())
        assert train["global_step"] == 2 and train["generated_tokens"] > 0
        assert list((repo_copy / f"data/train_live/{task}/plots/metrics").rglob("reward.tsv"))
        analysis = json.loads((repo_copy / f"data/metrics/analysis_{task}.json").read_text())
        assert set(analysis) == {"raw", "primed", "r3", "delta"}
        assert analysis["r3"]["first_try_acc"] == table["trained_first"]
    report = (repo_copy / "data/report/report.html").read_text()
    assert report.count("data:image/png;base64,") == len(list((repo_copy / "data/report/figures").glob("*.png")))
    assert "countdown_training.png" in (repo_copy / "data/report/report.md").read_text()
    shown = dvc(repo_copy, "metrics", "show", "--json").stdout
    assert "first_try_acc" in shown and "trained_second" in shown and "delta_second" in shown
    plots = dvc(repo_copy, "plots", "show", "--json").stdout
    assert "data/train_live/countdown/plots/metrics/reward.tsv" in plots
    shown_plots = json.loads(plots)["data"]
    assert {"error categories", "behaviours", "data/analysis/countdown/transitions/primed.csv"} <= set(shown_plots)
    again = dvc(repo_copy, "repro").stdout
    assert "Running stage" not in again
    assert "up to date" in dvc(repo_copy, "status").stdout
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    p["analyze"]["examples"] = 1
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    assert set(json.loads(dvc(repo_copy, "status", "--json").stdout)) == {"analyze"}


def test_changing_a_failures_param_reruns_only_failures(repo_copy):
    dvc(repo_copy, "repro")
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    p["failures"]["temperature"] = 0.7
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    status = dvc(repo_copy, "status", "--json").stdout
    changed = set(json.loads(status))
    assert changed == {"failures@countdown", "failures@function_calling"}  # downstream shows once they rerun


def test_changing_a_training_param_reruns_only_training_and_what_follows(repo_copy):
    dvc(repo_copy, "repro")
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    p["train"]["learning_rate"] = 3e-5
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    changed = set(json.loads(dvc(repo_copy, "status", "--json").stdout))
    assert changed == {f"train@{t}" for t in TASKS}


def test_switching_the_policy_changes_only_what_starts_from_it(repo_copy):
    dvc(repo_copy, "repro")
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert p["policy"] == "primed"
    p["policy"] = "raw"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    changed = set(json.loads(dvc(repo_copy, "status", "--json").stdout))
    assert changed == {*(f"failures@{t}" for t in TASKS), *(f"train@{t}" for t in TASKS),
                       *(f"results@{t}" for t in TASKS), "analyze"}
