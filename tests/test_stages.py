"""Each stage script on a tiny profile: outputs, schemas, metrics, and clean failures on bad input."""

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, load_script, run_stage, tiny_params
from safetensors.torch import load_file
from transformers import AutoTokenizer

from r3 import configs
from r3.dataset import COLUMNS, load_rows, to_frame
from r3.errors import R3Error
from r3.failures import draw_queries
from r3.inference import Completion
from r3.params import Params
from r3.prompts import build_prompt
from r3.tasks import Item, get_task


def _download(workdir, task):
    out = workdir / "data" / f"{task}.parquet"
    proc = run_stage(workdir, "download.py", "--task", task, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_run_seed_leaves_the_items_alone_and_the_data_seed_does_not(workdir):
    frames = {}
    for name, change in (("base", {}), ("run_seed", {"seed": 1}), ("data_seed", {"data.seed": 1})):
        _edit_params(workdir, **{"seed": 0, "data.seed": 0, **change})
        frames[name] = pd.read_parquet(_download(workdir, "countdown"))
    assert frames["base"].equals(frames["run_seed"])  # seeds compare on the same test items (tools/seeds.py)
    assert not frames["base"].equals(frames["data_seed"])


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
def test_baseline_and_failures_run_on_the_tiny_model(workdir, task):
    """The stage scripts end to end on a real backend; what they compute is checked with scripted answers below."""
    data = _download(workdir, task)
    proc = run_stage(workdir, "baseline.py", "--task", task, "--policy", "raw", "--data", str(data),
                     "--out", "b.parquet", "--metrics", "b.json")
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(workdir / "b.parquet")
    metrics = json.loads((workdir / "b.json").read_text())
    assert len(df) == metrics["n"] == 6 and (df["split"] == "test").all()
    assert metrics["first_try_acc"] == round(df["first_correct"].mean(), 4)
    assert metrics["second_try_acc"] == round(df["second_correct"].mean(), 4)
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
    assert (fails["split"] == "train").all() and (fails["n_samples"] == 2).all()


# ---- the baseline and failures stages in process, on a scripted backend with known verdicts

def _countdown_data(tmp_path, puzzles):
    """A dataset table of hand-picked puzzles: {split: [(numbers, target, solution), ...]}."""
    items, splits = [], {}
    for split, rows in puzzles.items():
        for i, (numbers, target, solution) in enumerate(rows):
            item_id = f"{split}-{i}"
            inputs = {"numbers": numbers, "target": target}
            items.append(Item(item_id, inputs, {**inputs, "solution": solution}, "hand", item_id))
            splits[item_id] = split
    path = tmp_path / "countdown.parquet"
    to_frame("countdown", items, splits).to_parquet(path)
    return path


def _puzzle(prompt_text):
    numbers = re.search(r"numbers \[([\d, ]+)\]", prompt_text)[1]
    return tuple(sorted(int(x) for x in numbers.split(","))), int(re.search(r"equals (\d+)", prompt_text)[1])


class PuzzleBackend:
    """Answers by the Countdown puzzle a conversation poses and by its turn (1: 1st try, 3: reflection, 5: retry).
    Scripts map (sorted numbers, target) to a text, or to a list of texts (one per sample)."""

    def __init__(self, first, reflection=None, retry=None, single=None):
        self.scripts = {1: first, 3: reflection or {}, 5: retry or {}}
        self.single = single or {}  # a first attempt asked for once (n = 1) where `first` lists samples
        self.calls = []

    def generate(self, requests, params, desc=""):
        self.calls.append((len(requests), params))
        out = []
        for r in requests:
            puzzle = _puzzle(r.messages[0]["content"])
            texts = self.scripts[len(r.messages)][puzzle]
            if isinstance(texts, list) and params.n == 1:
                texts = self.single[puzzle]
            texts = texts if isinstance(texts, list) else [texts] * params.n
            assert len(texts) == params.n
            out.append([Completion(t, len(t.split())) for t in texts])
        return out


def _run(tmp_path, monkeypatch, stage, backend, split="test", trained_on=None, **params):
    p = tiny_params("scripted")
    for section, values in params.items():
        p[section] = {**p[section], **values} if isinstance(values, dict) else values
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    used = []
    monkeypatch.setattr(configs, "backend", lambda _p, policy, model=None: used.append(policy) or backend)
    args = argparse.Namespace(params=str(tmp_path / "params.yaml"), task="countdown", policy="raw", model=None,
                              trained_on=trained_on, split=split, data=str(tmp_path / "countdown.parquet"),
                              out=str(tmp_path / "out.parquet"), metrics=str(tmp_path / "out.json"))
    load_script(ROOT / "stages" / f"{stage}.py").main(args)
    return pd.read_parquet(args.out), json.loads(Path(args.metrics).read_text()), used


TEST_PUZZLES = [([1, 2, 3], 6, "1+2+3"), ([2, 3, 4], 24, "2*3*4"), ([5, 5, 1], 11, "5+5+1"),
                ([4, 4, 2], 32, "4*4*2"), ([9, 3, 1], 4, "9/3+1"), ([7, 2, 6], 8, "7*2-6")]


def test_baseline_counts_first_and_second_tries_exactly(tmp_path, monkeypatch):
    _countdown_data(tmp_path, {"train": [([1, 1, 2], 4, "1+1+2")], "test": TEST_PUZZLES})
    keys = [_puzzle(f"numbers {n} equals {t}") for n, t, _ in TEST_PUZZLES]
    # right first: 0 and 3; fixed by the retry: 1 and 4; wrong twice: 2 and 5
    first = dict(zip(keys, ["<answer>1+2+3</answer>", "<answer>2+3+4</answer>", "no answer",
                            "<answer>4*4*2</answer>", "<answer>9+1</answer>", "<answer>7+2+6</answer>"], strict=True))
    retry = {keys[1]: "<answer>2*3*4</answer>", keys[2]: "<answer>5+5+2</answer>", keys[4]: "<answer>9/3+1</answer>",
             keys[5]: "still no answer"}
    reflection = {k: f"reflection on {k[1]}" for k in retry}
    df, metrics, used = _run(tmp_path, monkeypatch, "baseline", PuzzleBackend(first, reflection, retry))

    assert used == ["raw"] and list(df["id"]) == [f"test-{i}" for i in range(6)]
    assert list(df["first_correct"]) == [True, False, False, True, False, False]
    assert list(df["retry_correct"]) == [None, True, False, None, True, False]
    assert list(df["second_correct"]) == [True, True, False, True, True, False]
    assert list(df["reflection"].fillna("-")) == ["-", "reflection on 24", "reflection on 11", "-",
                                                  "reflection on 4", "reflection on 8"]
    assert (metrics["n"], metrics["first_try_acc"], metrics["second_try_acc"]) == (6, 0.3333, 0.6667)
    assert (metrics["n_retried"], metrics["retry_success_rate"]) == (4, 0.5)
    assert metrics["first_try_errors"] == {"invalid_equation": 1, "wrong_numbers": 1, "missed_target": 2}
    assert metrics["retry_errors"] == {"invalid_equation": 1, "wrong_numbers": 1, "missed_target": 0}


def test_baseline_measures_the_validation_split_when_asked(tmp_path, monkeypatch):
    _countdown_data(tmp_path, {"train": TEST_PUZZLES[:1], "validation": TEST_PUZZLES[1:3], "test": TEST_PUZZLES[3:]})
    first = {_puzzle(f"numbers {n} equals {t}"): f"<answer>{s}</answer>" for n, t, s in TEST_PUZZLES}
    df, metrics, _ = _run(tmp_path, monkeypatch, "baseline", PuzzleBackend(first), split="validation")
    assert list(df["id"]) == ["validation-0", "validation-1"] and set(df["split"]) == {"validation"}
    assert (metrics["n"], metrics["first_try_acc"]) == (2, 1.0)


@pytest.mark.parametrize("starting_policy, trained_on, reference", [
    ("primed", None, True),  # the raw model's baseline beside the primed starting policy: a reference row
    ("raw", None, False),  # the raw model is the starting policy: compared, on every item
    ("primed", "countdown", False),  # the model trained on this task: compared
    ("primed", "function_calling", True),  # trained on the other task: the forgetting check, a reference row
])
def test_a_reference_run_measures_the_reference_items_drawn_by_id_hash(tmp_path, monkeypatch, starting_policy,
                                                                        trained_on, reference):
    _countdown_data(tmp_path, {"train": TEST_PUZZLES[:1], "test": TEST_PUZZLES})
    first = {_puzzle(f"numbers {n} equals {t}"): f"<answer>{s}</answer>" for n, t, s in TEST_PUZZLES}
    df, metrics, _ = _run(tmp_path, monkeypatch, "baseline", PuzzleBackend(first), trained_on=trained_on,
                          policy=starting_policy, baseline={"reference_items": 2})
    ids = [f"test-{i}" for i in range(6)]
    by_hash = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
    expected = sorted(by_hash[:2]) if reference else ids
    assert sorted(by_hash[:2]) != ids[:2]  # the hash order is not the id order
    assert list(df["id"]) == expected and metrics["n"] == len(expected)


class DyingBackend:
    """An engine that answers the first call and dies in the second (the reflections)."""

    def __init__(self):
        self.calls = 0

    def generate(self, requests, params, desc=""):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("EngineDeadError: the engine core died")
        return [[Completion("no answer", 2)] * params.n for _ in requests]


@pytest.mark.parametrize("stage", ["baseline", "failures"])
def test_an_engine_that_dies_mid_stage_leaves_no_outputs(tmp_path, monkeypatch, stage):
    _countdown_data(tmp_path, {"train": [([1, 1, 2], 4, "1+1+2")] * 4, "test": TEST_PUZZLES})
    backend = DyingBackend()
    if stage == "failures":  # one call only: let it die at once
        backend.calls = 1
    with pytest.raises(RuntimeError, match="engine core died"):
        _run(tmp_path, monkeypatch, stage, backend)
    assert backend.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["countdown.parquet", "params.yaml"]


TRAIN_PUZZLES = [([1, 1, 2], 4, "1+1+2"), ([1, 2, 5], 7, "1*2+5"), ([2, 2, 3], 12, "2*2*3"), ([3, 3, 1], 9, "3*3*1"),
                 ([6, 2, 1], 3, "6/2*1")]
# four samples per query, solved 0, 1, 3, 4 and 4 times; failures.queries = 5 draws them all
SAMPLES = [["miss", "nums", "bad", "nums"], ["bad", "ok", "miss", "nums"], ["ok", "ok", "nums", "ok"], ["ok"] * 4,
           ["ok"] * 4]
CATEGORY = {"miss": "missed_target", "nums": "wrong_numbers", "bad": "invalid_equation"}


def _sample(puzzle, kind):
    numbers, _, solution = puzzle
    return {"ok": f"<answer>{solution}</answer>", "miss": f"<answer>{'-'.join(map(str, numbers))}</answer>",
            "nums": "<answer>1</answer>", "bad": f"no tags {solution}"}[kind]


def _puzzle_backend(single=None):
    return PuzzleBackend({_puzzle(f"numbers {q[0]} equals {q[1]}"): [_sample(q, kind) for kind in kinds]
                          for q, kinds in zip(TRAIN_PUZZLES, SAMPLES, strict=True)}, single=single)


@pytest.mark.parametrize(("policy", "kept"), [("failed_any", [0, 1, 2]), ("failed_all", [0]), ("mixed", [1, 2]),
                                              ("pass_rate", [1])])
def test_failure_set_keeps_exactly_the_queries_the_policy_names(tmp_path, monkeypatch, policy, kept):
    _countdown_data(tmp_path, {"train": TRAIN_PUZZLES, "test": TEST_PUZZLES[:1]})
    backend = _puzzle_backend()
    df, metrics, used = _run(tmp_path, monkeypatch, "failures", backend, train={"queries_per_step": 1},
                             failures={"queries": 5, "samples": 4, "keep": policy, "pass_rate": [0.25, 0.5],
                                       "attempt": "sampled", "temperature": 0.9})

    assert used == ["primed"] and [(n, p.n, p.temperature) for n, p in backend.calls] == [(5, 4, 0.9)]
    assert list(df["id"]) == [f"train-{i}" for i in kept]
    assert list(df["n_correct"]) == [[0, 1, 3][i] for i in kept] and (df["n_samples"] == 4).all()
    failed = [[k for k in SAMPLES[i] if k != "ok"] for i in kept]
    assert [list(a) for a in df["failed_attempts"]] == [[_sample(TRAIN_PUZZLES[i], k) for k in f]
                                                         for i, f in zip(kept, failed, strict=True)]
    assert [list(c) for c in df["failed_categories"]] == [[CATEGORY[k] for k in f] for f in failed]
    assert list(df["attempt"]) == [_sample(TRAIN_PUZZLES[i], f[0]) for i, f in zip(kept, failed, strict=True)]
    assert (df["attempt_source"] == "sampled").all()
    assert (metrics["queries"], metrics["kept"], metrics["sample_acc"], metrics["queries_solved_any"]) == (
        5, len(kept), 0.6, 4)
    assert metrics["sample_errors"] == {"invalid_equation": 2, "wrong_numbers": 4, "missed_target": 2}


def test_the_shown_attempt_is_the_one_evaluation_draws_where_it_failed(tmp_path, monkeypatch):
    _countdown_data(tmp_path, {"train": TRAIN_PUZZLES, "test": TEST_PUZZLES[:1]})
    # the first attempt evaluation would draw (greedy): wrong numbers for query 0, right for 1, a miss for 2
    single = {_puzzle(f"numbers {q[0]} equals {q[1]}"): [_sample(q, kind)]
              for q, kind in zip(TRAIN_PUZZLES, ["nums", "ok", "miss", "ok", "ok"], strict=True)}
    backend = _puzzle_backend(single)
    df, metrics, _ = _run(tmp_path, monkeypatch, "failures", backend, train={"queries_per_step": 1},
                          failures={"queries": 5, "samples": 4, "keep": "failed_any", "attempt": "evaluation",
                                                           "temperature": 0.9})
    assert [(n, p.n, p.temperature) for n, p in backend.calls] == [(5, 4, 0.9), (5, 1, 0.0)]
    assert list(df["attempt_source"]) == ["evaluation", "sampled", "evaluation"]
    assert list(df["attempt"]) == [_sample(TRAIN_PUZZLES[0], "nums"), _sample(TRAIN_PUZZLES[1], "bad"),
                                   _sample(TRAIN_PUZZLES[2], "miss")]
    assert list(df["attempt_category"]) == ["wrong_numbers", "invalid_equation", "missed_target"]
    assert (metrics["evaluation_acc"], metrics["attempts_from_evaluation"]) == (0.6, 2)


def test_a_keep_rule_leaving_less_than_one_training_step_writes_nothing(tmp_path, monkeypatch):
    _countdown_data(tmp_path, {"train": TRAIN_PUZZLES, "test": TEST_PUZZLES[:1]})
    with pytest.raises(R3Error, match=r"failures.keep=failed_all: kept 1 of 5.*train.queries_per_step=2"):
        _run(tmp_path, monkeypatch, "failures", _puzzle_backend(), train={"queries_per_step": 2},
             failures={"queries": 5, "samples": 4, "keep": "failed_all", "attempt": "sampled"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["countdown.parquet", "params.yaml"]


def test_sampled_failure_sets_are_byte_identical_at_a_seed_and_differ_across_seeds(workdir):
    """The engine's per-call seed: k = 2 samples per query at T = 1, rerun in a new process."""
    data = _download(workdir, "countdown")
    _edit_params(workdir, **{"failures.samples": 3})
    blobs = {}
    for name, seed in (("one", 0), ("two", 0), ("three", 1)):
        _edit_params(workdir, seed=seed)
        proc = run_stage(workdir, "failures.py", "--task", "countdown", "--data", str(data), "--out",
                         f"{name}.parquet", "--metrics", f"{name}.json")
        assert proc.returncode == 0, proc.stderr
        blobs[name] = pd.read_parquet(workdir / f"{name}.parquet")
    assert blobs["one"].equals(blobs["two"])
    attempts = [list(a) for a in blobs["one"]["failed_attempts"]]
    assert all(len(set(a)) > 1 for a in attempts), "the k samples of a query differ"
    assert [list(a) for a in blobs["three"]["failed_attempts"]] != attempts


def test_failure_queries_too_long_for_the_engine_are_left_out_and_counted(workdir):
    """failures@function_calling on the byte-level tiny tokenizer: prompts of very different lengths."""
    data = _download(workdir, "function_calling")
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    tok = AutoTokenizer.from_pretrained(workdir / "models" / "primed")
    task = get_task("function_calling")
    cfg = configs.prompt_config(Params(p), task)
    train = draw_queries([r for r in load_rows(data, "function_calling") if r.split == "train"],
                         p["failures"]["queries"], p["seed"])
    lengths = sorted(len(tok(tok.apply_chat_template(build_prompt(task, r.inputs, cfg), tokenize=False,
                                                     add_generation_prompt=True) + cfg.prefill)["input_ids"])
                     for r in train)
    budget = p["protocol"]["function_calling"]["max_attempt_tokens"]
    _edit_params(workdir, **{"inference.max_model_len": lengths[-1] + budget - 1})  # the longest no longer fits
    proc = run_stage(workdir, "failures.py", "--task", "function_calling", "--data", str(data), "--out",
                     "f.parquet", "--metrics", "f.json")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((workdir / "f.json").read_text())
    too_long = sum(n + budget > lengths[-1] + budget - 1 for n in lengths)
    assert metrics["left_out_long_prompts"] == too_long >= 1
    assert metrics["queries"] == len(train) - too_long == len(pd.read_parquet(workdir / "f.parquet"))


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
    ({"failures.keep": "pass_rate", "failures.pass_rate": [0.5, 1.0]}, "failures.pass_rate"),
    ({"failures.queries": 1000}, "failures.queries"),
    ({"failures.attempt": "best"}, "failures.attempt"),
    ({"data.countdown.source": "nowhere"}, "data.countdown.source"),
    ({"inference.batch_size": 0}, "inference.batch_size"),
    ({"inference.backend": "transformers"}, "inference.backend"),
    ({"inference.kv_cache_gib": 0}, "inference.kv_cache_gib"),
    ({"inference.enforce_eager": "yes"}, "inference.enforce_eager"),
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


def test_the_rollout_engine_cache_overrides_the_inference_one_only_when_set(tmp_path, monkeypatch):
    """train.kv_cache_gib reaches the training engine; null leaves inference.kv_cache_gib."""
    p = Params(tiny_params("scripted"))
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    seen = []
    monkeypatch.setattr(configs, "load_backend", lambda name, path, **options: seen.append(options["kv_cache_gib"]))
    configs.backend(p, "primed", model, kv_cache_gib=3)
    configs.backend(p, "primed", model, kv_cache_gib=None)
    assert seen == [3, p.get("inference.kv_cache_gib", int)]
