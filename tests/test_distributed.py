"""The train stage under `python -m r3.launch` with train.num_processes = 2: two CPU processes over gloo
(torchrun), each with its own vLLM engine, as a multi-GPU run has one per GPU."""

import json
import os
import re
import subprocess
import sys

import yaml
from conftest import ROOT
from test_train_eval_stages import _failures

from r3.launch import command


def _launch(workdir, failures, processes: int, budget: int, name: str):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"].update(num_processes=processes, max_steps=4, token_budget=budget, save_steps=100, micro_batch_size=None)
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run([sys.executable, "-m", "r3.launch", str(ROOT / "stages" / "train.py"), "--task", "countdown",
                           "--failures", str(failures), "--out", f"models/{name}", "--metrics", f"{name}.json",
                           "--checkpoints", f"ckpt_{name}", "--live", f"live_{name}"],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((workdir / f"{name}.json").read_text())


def test_two_processes_stop_together_at_the_single_process_step_and_write_once(workdir):
    _, failures = _failures(workdir, "countdown")
    # a budget of 1 token stops after the first step: that step's token count
    _, probe = _launch(workdir, failures, 1, 1, "probe")
    assert probe["global_step"] == 1
    # 1.5 first steps: the single process stops at step 2 of 4; a rank counting only its own tokens (half of
    # them) would run on to step 3 or 4
    budget = probe["generated_tokens"] * 3 // 2
    _, one = _launch(workdir, failures, 1, budget, "one")
    two_proc, two = _launch(workdir, failures, 2, budget, "two")

    assert one["global_step"] == 2 and one["processes"] == 1
    ranks = re.findall(r"rank (\d) of 2: finished at step (\d+)", two_proc.stderr)
    assert sorted(r for r, _ in ranks) == ["0", "1"], two_proc.stderr[-3000:]
    assert {s for _, s in ranks} == {"2"}  # both ranks, at the single-process run's step
    assert two["processes"] == 2 and two["global_step"] == 2 and two["generated_tokens"] >= budget
    assert two["micro_batch_size"] * 2 == one["micro_batch_size"]  # the batch is split over the ranks
    # written once: one model, no leftover temporary folders, one metrics file, one set of curves
    assert (workdir / "models/two/model.safetensors").is_file()
    assert sorted(p.name for p in (workdir / "models").iterdir()) == ["one", "primed", "probe", "raw", "two"]
    assert (workdir / "live_two/metrics.json").is_file()
    assert two_proc.stderr.count("countdown/r3:") == 1  # the summary line comes from rank 0 only


def test_launch_command_picks_the_launcher():
    assert command("s.py", ["--a"], 1, 0, cuda=False) == [sys.executable, "s.py", "--a"]
    cpu = command("s.py", [], 2, 0, cuda=False)
    assert cpu[1:3] == ["-m", "torch.distributed.run"] and "2" in cpu
    gpu = command("s.py", [], 8, 2, cuda=True)
    assert "accelerate.commands.launch" in gpu and gpu[gpu.index("--config_file") + 1].endswith("zero2.yaml")
    assert command("s.py", [], 8, 0, cuda=True)[-1] == "s.py"


def test_zero_on_cpu_and_an_unknown_stage_are_one_line_errors(workdir):
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    for zero, expected in ((2, "train.zero_stage=2: DeepSpeed ZeRO needs GPUs"), (1, "'train.zero_stage' is 1")):
        p["train"].update(num_processes=2, zero_stage=zero)
        (workdir / "params.yaml").write_text(yaml.safe_dump(p))
        proc = subprocess.run([sys.executable, "-m", "r3.launch", "stages/train.py"], cwd=workdir,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
