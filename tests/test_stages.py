"""Each stage script on a tiny profile: outputs, schemas, metrics, and clean failures on bad input."""

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml
from conftest import run_stage
from safetensors.torch import load_file

from r3.dataset import COLUMNS


def _download(workdir, task):
    out = workdir / "data" / f"{task}.parquet"
    proc = run_stage(workdir, "download.py", "--task", task, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("task", ["countdown", "function_calling"])
def test_download_writes_the_split_dataset(workdir, task):
    df = pd.read_parquet(_download(workdir, task))
    assert list(df.columns) == list(COLUMNS)
    assert df["split"].value_counts().to_dict() == {"train": 12, "validation": 4, "test": 6}
    assert (df["task"] == task).all() and df["id"].is_unique


def test_download_is_deterministic(workdir):
    first = _download(workdir, "countdown").read_bytes()
    assert _download(workdir, "countdown").read_bytes() == first


def test_model_stage_writes_a_plain_hf_directory(workdir):
    proc = run_stage(workdir, "model.py", "--out", "models/copy")
    assert proc.returncode == 0, proc.stderr
    out = workdir / "models" / "copy"
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    assert json.loads((out / "r3_model.json").read_text())["n_params"] > 0


@pytest.mark.parametrize("task", ["countdown", "function_calling"])
def test_baseline_and_failures_on_the_tiny_model(workdir, task):
    data = _download(workdir, task)
    proc = run_stage(workdir, "baseline.py", "--task", task, "--policy", "raw", "--data", str(data),
                     "--out", "b.parquet", "--metrics", "b.json")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(workdir / "b.parquet")
    metrics = json.loads((workdir / "b.json").read_text())
    assert len(df) == metrics["n"] == 6
    assert metrics["first_try_acc"] == df["first_correct"].mean()
    assert metrics["second_try_acc"] >= metrics["first_try_acc"]
    assert sum(metrics["first_try_errors"].values()) == (~df["first_correct"]).sum()
    failed = df[~df["first_correct"]]
    assert failed["reflection"].notna().all() and failed["retry"].notna().all()
    for prompt in df["prompt"]:
        assert json.loads(prompt)[-1]["role"] == "user"

    proc = run_stage(workdir, "failures.py", "--task", task, "--data", str(data), "--out", "f.parquet",
                     "--metrics", "f.json")
    assert proc.returncode == 0, proc.stderr
    fails = pd.read_parquet(workdir / "f.parquet")
    fmetrics = json.loads((workdir / "f.json").read_text())
    assert fmetrics["queries"] == 4 and fmetrics["kept"] == len(fails)
    assert (fails["split"] == "train").all()
    for _, row in fails.iterrows():
        assert row["n_correct"] < row["n_samples"] == 2
        assert len(row["failed_attempts"]) == row["n_samples"] - row["n_correct"]
        assert row["attempt"] == row["failed_attempts"][0]


def test_greedy_baseline_is_byte_identical(workdir):
    data = _download(workdir, "countdown")
    blobs = []
    for name in ("one", "two"):
        proc = run_stage(workdir, "baseline.py", "--task", "countdown", "--policy", "raw", "--data", str(data),
                         "--out", f"{name}.parquet", "--metrics", f"{name}.json")
        assert proc.returncode == 0, proc.stderr
        blobs.append((workdir / f"{name}.parquet").read_bytes())
    assert blobs[0] == blobs[1]


def _edit_params(workdir, **changes):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    for dotted, value in changes.items():
        node = p
        *head, last = dotted.split(".")
        for key in head:
            node = node[key]
        node[last] = value
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))


@pytest.mark.parametrize(("change", "message"), [
    ({"failures.samples": "four"}, "failures.samples"),
    ({"failures.keep": "sometimes"}, "failures.keep"),
    ({"data.countdown.source": "nowhere"}, "data.countdown.source"),
    ({"inference.batch_size": 0}, "inference.batch_size"),
])
def test_bad_params_fail_with_one_line_naming_the_field(workdir, change, message):
    data = _download(workdir, "countdown")
    _edit_params(workdir, **change)
    stage = "download.py" if "data." in message else "failures.py"
    args = ["--task", "countdown", "--out", "out.parquet"]
    if stage == "failures.py":
        args += ["--data", str(data), "--metrics", "out.json"]
    proc = run_stage(workdir, stage, *args)
    assert proc.returncode == 1
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "out.parquet").exists() and not (workdir / "out.json").exists()


def test_unknown_task_is_a_clean_error(workdir):
    proc = run_stage(workdir, "download.py", "--task", "chess", "--out", "x.parquet")
    assert proc.returncode == 1 and "unknown task 'chess'" in proc.stderr
    assert not (workdir / "x.parquet").exists()


def test_mistyped_column_in_input_names_column_and_row(workdir):
    data = _download(workdir, "countdown")
    df = pd.read_parquet(data)
    df["inputs"] = [str(i) for i in range(len(df))]  # valid strings but not JSON objects...
    df["target"] = 1
    df["ground_truth"] = range(len(df))  # ...and a column of the wrong type
    df.to_parquet(data)
    proc = run_stage(workdir, "baseline.py", "--task", "countdown", "--policy", "raw", "--data", str(data),
                     "--out", "b.parquet", "--metrics", "b.json")
    assert proc.returncode == 1
    assert "column 'ground_truth' row 0" in proc.stderr
    assert not (workdir / "b.parquet").exists() and not (workdir / "b.json").exists()


def test_missing_column_is_named(workdir):
    data = _download(workdir, "countdown")
    pd.read_parquet(data).drop(columns=["ground_truth"]).to_parquet(data)
    proc = run_stage(workdir, "failures.py", "--task", "countdown", "--data", str(data), "--out", "f.parquet",
                     "--metrics", "f.json")
    assert proc.returncode == 1 and "missing column 'ground_truth'" in proc.stderr


def test_online_source_without_network_is_a_clean_error(workdir, monkeypatch):
    _edit_params(workdir, **{"data.countdown.source": "hub"})
    proc = run_stage(workdir, "download.py", "--task", "countdown", "--out", "x.parquet")
    assert proc.returncode == 1
    assert "Jiayi-Pan/Countdown-Tasks-3to4" in proc.stderr and "generated" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "x.parquet").exists()


def test_hub_model_without_network_is_a_clean_error(workdir):
    _edit_params(workdir, **{"model.base": "someone/no-such-model"})
    proc = run_stage(workdir, "model.py", "--out", "models/x")
    assert proc.returncode == 1
    assert "someone/no-such-model" in proc.stderr and "bundled:smollm2-135m-instruct" in proc.stderr
    assert not (workdir / "models" / "x").exists()


def test_prime_stage_trains_the_raw_model_into_a_primed_policy(workdir):
    data = [str(_download(workdir, t)) for t in ("countdown", "function_calling")]
    shutil.rmtree(workdir / "models" / "primed")
    proc = run_stage(workdir, "prime.py", "--task", "countdown", "function_calling", "--data", *data,
                     "--out", "models/primed", "--metrics", "prime.json", "--checkpoints", "ckpt", "--live", "live")
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((workdir / "prime.json").read_text())
    assert stats["examples"] >= 4 and stats["trained_tokens"] > 0
    assert stats["kinds"]["reflection"] >= 1
    raw = load_file(workdir / "models" / "raw" / "model.safetensors")
    primed = load_file(workdir / "models" / "primed" / "model.safetensors")
    assert any(not torch.equal(raw[k], primed[k]) for k in raw)
    assert list((workdir / "ckpt").iterdir()), "checkpoints are kept for resuming"
