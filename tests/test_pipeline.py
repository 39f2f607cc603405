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
COPY = ["src", "stages", "tools", "configs", "Makefile", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/config",
        ".dvc/.gitignore"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A Makefile target as a user runs it, minus the venv set-up (the test's interpreter is the venv)."""
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=900)


GIT = ["git", "-c", "user.name=r3", "-c", "user.email=r3@localhost"]


def commit(repo: Path, message: str) -> None:
    subprocess.run([*GIT, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=repo, check=True)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, tiny_model_dir) -> Path:
    """The repo on the tiny profile, reproduced once (`dvc repro`) and committed; tests work on copies."""
    repo = tmp_path_factory.mktemp("reproduced")
    for rel in COPY:
        src, dst = ROOT / rel, repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(str(tiny_model_dir))))
    # a real checkout has commits; DVCLive reads the git state
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    commit(repo, "copy")
    dvc(repo, "repro")
    commit(repo, "reproduced")
    return repo


@pytest.fixture
def repo_copy(reproduced, tmp_path) -> Path:
    """A private copy of the reproduced repo (workspace, git history and DVC cache)."""
    return Path(shutil.copytree(reproduced, tmp_path / "repo", symlinks=True))


def test_dvc_repro_end_to_end_then_nothing_to_do(repo_copy):
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
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    p["failures"]["temperature"] = p["failures"]["temperature"] / 2
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    status = dvc(repo_copy, "status", "--json").stdout
    changed = set(json.loads(status))
    assert changed == {"failures@countdown", "failures@function_calling"}  # downstream shows once they rerun


def test_changing_a_training_param_reruns_only_training_and_what_follows(repo_copy):
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    p["train"]["learning_rate"] = 3e-5
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    changed = set(json.loads(dvc(repo_copy, "status", "--json").stdout))
    assert changed == {f"train@{t}" for t in TASKS}


def test_switching_the_policy_changes_only_what_starts_from_it(repo_copy):
    p = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert p["policy"] == "primed"
    p["policy"] = "raw"
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(p))
    changed = set(json.loads(dvc(repo_copy, "status", "--json").stdout))
    # the baselines read `policy` too: the starting policy's baseline measures every test item, the other one
    # only baseline.reference_items of them
    baselines = {f"baseline@{t}-{policy}" for t in TASKS for policy in ("raw", "primed")}
    assert changed == {*baselines, *(f"failures@{t}" for t in TASKS), *(f"train@{t}" for t in TASKS),
                       *(f"results@{t}" for t in TASKS), "analyze"}


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_experiments_rerun_only_what_a_changed_param_reaches(repo_copy):
    """A temporary experiment copy has what git and the DVC cache hold, nothing else (no resume checkpoints):
    a downstream param must not rerun priming, the baselines or training."""
    assert "up to date" in dvc(repo_copy, "status").stdout
    assert _ran(dvc(repo_copy, "exp", "run", "--temp", "-S", "analyze.examples=2").stdout) == {"analyze"}
    ran = _ran(dvc(repo_copy, "exp", "run", "--temp", "-S", "train.learning_rate=3e-5").stdout)
    downstream = {*(f"train@{t}" for t in TASKS), *(f"evaluate@{m}-{t}" for m in TASKS for t in TASKS),
                  *(f"results@{t}" for t in TASKS), "analyze"}
    # training reruns; what follows reruns only where its inputs changed (the tiny model's rewards are all 0,
    # so the trained weights, and with them the evaluations, may come out identical and stay cached)
    assert {f"train@{t}" for t in TASKS} <= ran <= downstream
    # the curated comparison: one row per experiment, with the params that differ between them as columns
    compared = make(repo_copy, "compare")
    assert compared.returncode == 0, compared.stderr
    assert all(f"{task} (accuracy" in compared.stdout for task in TASKS)
    for task in TASKS:
        proc = subprocess.run([sys.executable, "tools/compare.py", "--task", task], cwd=repo_copy, env=ENV,
                              capture_output=True, text=True, check=True)
        header, *rows = [line.split() for line in proc.stdout.splitlines()[2:] if line.strip()]
        assert header[:4] == ["experiment", "train.method", "policy", "seed"]
        assert "analyze.examples" in header and "train.learning_rate" in header
        lr = header.index("train.learning_rate")
        assert len(rows) == 4  # workspace, the commit, two experiments
        assert {row[lr] for row in rows} == {"1e-05", "3e-05"}


def test_a_pushed_run_pulls_into_a_fresh_clone_with_nothing_to_rerun(repo_copy, tmp_path):
    remote = tmp_path / "remote"
    bad = make(repo_copy, "remote", f"REMOTE={tmp_path / 'nowhere'}")
    assert bad.returncode != 0 and "nowhere is not an existing folder" in bad.stderr
    assert make(repo_copy, "push").returncode != 0  # no remote yet: a one-line error, nothing pushed
    remote.mkdir()
    for target in (("remote", f"REMOTE={remote}"), ("push",)):
        proc = make(repo_copy, *target)
        assert proc.returncode == 0, proc.stderr
    commit(repo_copy, "remote")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo_copy), str(clone)], check=True)
    assert not (clone / "models/primed").exists()
    pulled = make(clone, "pull")
    assert pulled.returncode == 0, pulled.stderr
    assert (clone / "models/primed/model.safetensors").is_file()
    assert "up to date" in dvc(clone, "status").stdout
    assert "Running stage" not in dvc(clone, "repro").stdout
    shutil.rmtree(remote)
    gone = make(clone, "pull")
    assert gone.returncode != 0 and f"({remote}) does not exist" in gone.stderr
