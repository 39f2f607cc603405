"""The GPU memory planner (src/r3/training/plan.py), the profiles (profiles/*.yaml) and tools/profiles.py."""

import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r3.errors import R3Error
from r3.training.plan import (
    ModelShape,
    TrainSetup,
    choose_micro_batch,
    estimate,
    format_plan,
    plan,
    plan_from_params,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted((ROOT / "profiles").glob("*.yaml"))

# written by hand from the models' config.json, with their true parameter counts
SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                "tie_word_embeddings": True, "attention_bias": False}
QWEN25_15B = {"model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True}
QWEN25_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
             "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False}
TRUE_COUNTS = [(SMOLLM2_135M, 134_515_008), (QWEN25_15B, 1_543_714_304), (QWEN25_7B, 7_615_616_512)]

# params the GPU work adds to params.yaml; a profile key must be one of these or already in params.yaml
NEW_KEYS = {
    "model.base", "inference.backend", "inference.dtype", "inference.batch_size", "inference.gpu_memory_utilization",
    "inference.max_model_len", "train.num_generations", "train.queries_per_step", "train.micro_batch_size",
    "train.gradient_checkpointing", "train.bf16", "train.lora.enabled", "train.lora.r", "train.num_processes",
    "train.zero_stage", "train.max_prompt_tokens", "train.max_reflection_tokens", "train.max_retry_tokens",
    "train.beta", "train.max_steps", "train.learning_rate",
}


def _tool():
    spec = importlib.util.spec_from_file_location("profile_tool", ROOT / "tools" / "profiles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    return subprocess.run([sys.executable, "tools/profiles.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _has_key(tree, key):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


@pytest.mark.parametrize(("config", "true_count"), TRUE_COUNTS)
def test_parameter_count_within_2_percent(config, true_count):
    assert abs(ModelShape.from_config(config).params - true_count) / true_count < 0.02


def test_activations_scale_linearly_in_micro_batch_and_seq_len():
    shape = ModelShape.from_config(QWEN25_15B)
    for ckpt in (False, True):
        base = estimate(shape, TrainSetup(micro_batch=2, seq_len=512, gradient_checkpointing=ckpt), 80).activations
        assert estimate(shape, TrainSetup(6, 512, ckpt), 80).activations == pytest.approx(3 * base)
        assert estimate(shape, TrainSetup(2, 2048, ckpt), 80).activations == pytest.approx(4 * base)


def test_checkpointing_cuts_activations_over_10x():
    shape = ModelShape.from_config(QWEN25_15B)
    full = estimate(shape, TrainSetup(8, 1024, gradient_checkpointing=False), 80).activations
    ckpt = estimate(shape, TrainSetup(8, 1024, gradient_checkpointing=True), 80).activations
    assert full / ckpt > 10


def test_design_anchor_qwen15b_128x660_no_checkpointing():
    est = estimate(ModelShape.from_config(QWEN25_15B), TrainSetup(128, 660, gradient_checkpointing=False), 80)
    assert 200 < est.activations < 350


def test_7b_full_finetune_is_16_bytes_per_param():
    est = estimate(ModelShape.from_config(QWEN25_7B), TrainSetup(1, 512), 80)
    states = est.weights + est.gradients + est.optimizer
    assert states == pytest.approx(16 * 7_615_616_512 / 1024**3, rel=0.05)
    assert states == pytest.approx(113, rel=0.05)


def test_zero2_divides_gradients_and_optimizer_by_processes():
    shape = ModelShape.from_config(QWEN25_7B)
    one = estimate(shape, TrainSetup(1, 512, num_processes=7, zero_stage=0), 80)
    z2 = estimate(shape, TrainSetup(1, 512, num_processes=7, zero_stage=2), 80)
    z3 = estimate(shape, TrainSetup(1, 512, num_processes=7, zero_stage=3), 80)
    assert z2.gradients == pytest.approx(one.gradients / 7)
    assert z2.optimizer == pytest.approx(one.optimizer / 7)
    assert z2.weights == pytest.approx(one.weights)  # ZeRO-2 keeps the weights whole
    assert z3.weights == pytest.approx(one.weights / 7)


def test_lora_7b_fits_one_80gb_gpu():
    shape = ModelShape.from_config(QWEN25_7B)
    setup = TrainSetup(4, 1024, gradient_checkpointing=True, lora_r=64, vllm_gpu_memory_utilization=0.3)
    est = estimate(shape, setup, 80)
    assert est.total <= 80
    assert est.weights == pytest.approx(2 * shape.params / 1024**3 + 4 * shape.lora_params(64) / 1024**3)
    full = estimate(shape, dataclasses.replace(setup, lora_r=None), 80)
    assert full.total > 80  # the same setup as a full fine-tune does not


def test_choose_micro_batch_takes_the_largest_fitting_divisor():
    shape = ModelShape.from_config(QWEN25_15B)
    setup = TrainSetup(None, 1024, gradient_checkpointing=True)
    totals = {mb: estimate(shape, dataclasses.replace(setup, micro_batch=mb), 80).total for mb in range(1, 13)}
    gpu = (totals[5] + totals[6]) / 2  # 5 fits, 6 does not: 4 is the largest divisor of 12 that fits
    assert choose_micro_batch(shape, setup, 12, gpu) == 4
    assert choose_micro_batch(shape, setup, 12, totals[12] + 1) == 12
    chosen = plan(shape, setup, 24, gpu)  # micro_batch None: plan chooses
    assert (chosen.micro_batch, chosen.gradient_accumulation_steps, chosen.fits) == (4, 6, True)


def test_choose_micro_batch_raises_with_the_numbers():
    shape = ModelShape.from_config(QWEN25_7B)
    need = estimate(shape, TrainSetup(1, 1024), 10).total
    with pytest.raises(R3Error, match=rf"needs {need:.1f} GiB of 10 GiB"):
        choose_micro_batch(shape, TrainSetup(None, 1024), 8, 10)
    with pytest.raises(R3Error, match=r"batch per step 12 is not divisible by num_processes 5"):
        choose_micro_batch(shape, TrainSetup(None, 1024, num_processes=5), 12, 1000)


def test_plan_reports_fit_and_misfit():
    shape = ModelShape.from_config(QWEN25_15B)
    ok = plan(shape, TrainSetup(4, 1024, gradient_checkpointing=True), 16, 80)
    assert ok.fits and ok.gradient_accumulation_steps == 4 and "fits in 80 GiB" in format_plan(ok)
    bad = plan(shape, TrainSetup(16, 1024), 16, 80)
    assert not bad.fits
    assert f"does NOT fit: needs {bad.estimate.total:.1f} GiB of 80 GiB" in format_plan(bad)
    with pytest.raises(R3Error, match="does not divide"):
        plan(shape, TrainSetup(3, 1024), 16, 80)


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_profile_keys_exist_and_plan_fits(path):
    tool = _tool()
    profile = tool.load_profile(path)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    unknown = [k for k in profile if k != "gpu_memory_gib" and not _has_key(params, k) and k not in NEW_KEYS]
    assert not unknown, f"{path.name}: keys neither in params.yaml nor new: {unknown}"
    result = plan_from_params(tool.merge(profile, params, path), profile["gpu_memory_gib"], None)
    assert result.fits, format_plan(result)
    assert result.micro_batch == profile["train.micro_batch_size"]


def test_profiles_exist():
    assert {p.name for p in PROFILES} >= {"qwen2.5-1.5b-1gpu.yaml", "qwen2.5-7b-1gpu-lora.yaml",
                                          "qwen2.5-7b-8gpu.yaml"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_set_args_round_trips_to_the_profile(path):
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    out = _run("set-args", str(path.relative_to(ROOT)))
    assert out.returncode == 0, out.stderr
    words = shlex.split(out.stdout)
    assert words[::2] == ["-S"] * (len(words) // 2) and len(words) % 2 == 0
    got = {}
    for arg in words[1::2]:
        override = parser.parse_override(arg)  # what dvc exp run -S does with it
        got[override.key_or_group] = override.value()
    profile = yaml.load(path.read_text(), Loader=_tool()._Loader)
    profile.pop("gpu_memory_gib")
    assert got == profile


def test_plan_cli_fits_and_exits_0():
    out = _run("plan", "profiles/qwen2.5-1.5b-1gpu.yaml")
    assert out.returncode == 0, out.stderr
    assert "fits in 79 GiB" in out.stdout


def test_plan_cli_exits_1_when_it_does_not_fit(tmp_path):
    profile = yaml.safe_load((ROOT / "profiles/qwen2.5-1.5b-1gpu.yaml").read_text())
    profile.update({"train.micro_batch_size": 128, "train.gradient_checkpointing": False})
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(profile))
    out = _run("plan", str(path))
    assert out.returncode == 1
    assert re.search(r"does NOT fit: needs \d+\.\d GiB of 79 GiB", out.stdout)
    assert "Traceback" not in out.stderr


def test_plan_cli_rejects_a_micro_batch_that_does_not_divide(tmp_path):
    path = tmp_path / "odd.yaml"
    path.write_text("model.base: Qwen/Qwen2.5-1.5B-Instruct\ntrain.micro_batch_size: 3\ntrain.queries_per_step: 2\n"
                    "train.num_generations: 4\ngpu_memory_gib: 80\n")
    out = _run("plan", str(path))
    assert out.returncode == 1
    assert out.stderr.startswith("error:") and "micro_batch 3 does not divide the per-process batch 8" in out.stderr


@pytest.mark.parametrize(("text", "needle"), [
    ("- train.beta: 0.1\n", "must be a mapping"),
    ("model.base: someone/unknown-model\ngpu_memory_gib: 80\n", "model.base"),
    ("train beta: 0.1\n", "not a dotted params key"),
])
def test_bad_profile_is_a_one_line_error(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = _run("plan", str(path))
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], out.stderr


def test_missing_profile_is_a_one_line_error():
    out = _run("set-args", "profiles/no-such-profile.yaml")
    assert out.returncode == 1
    assert out.stderr.startswith("error:") and "no-such-profile.yaml" in out.stderr
    assert len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize("value", ["bundled:smollm2-135m-instruct", "true", "0.3", "null", "a b", "it's", "x,y",
                                   1.0e-5, 3, 0.0, True, None, ["countdown", "function_calling"]])
def test_hydra_value_round_trips_through_dvc_set_parser(value):
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    arg = shlex.split(shlex.quote(f"key={_tool().hydra_value(value)}"))[0]
    parsed = parser.parse_override(arg).value()
    assert parsed == value and type(parsed) is type(value)


def test_reference_vllm_and_overhead_add_up():
    shape = ModelShape.from_config(QWEN25_15B)
    est = estimate(shape, TrainSetup(2, 512, reference_model=True, vllm_gpu_memory_utilization=0.25), 80)
    assert est.reference == pytest.approx(2 * shape.params / 1024**3)
    assert est.vllm == pytest.approx(20.0)
    parts = est.weights + est.gradients + est.optimizer + est.activations + est.logits + est.reference + est.vllm
    assert est.total == pytest.approx(parts + 1.5)
    assert estimate(shape, TrainSetup(2, 512, lora_r=16, reference_model=True), 80).reference == 0.0  # adapter off


def test_plan_from_params_seq_len_and_batch():
    params = {"model": {"base": "Qwen/Qwen2.5-1.5B-Instruct"}, "tasks": ["countdown"],
              "protocol": {"countdown": {"max_attempt_tokens": 320, "max_reflection_tokens": 128}},
              "inference": {"backend": "vllm", "gpu_memory_utilization": 0.3},
              "train": {"max_prompt_tokens": 1000, "max_reflection_tokens": 200, "max_retry_tokens": 100,
                        "queries_per_step": 4, "num_generations": 8, "micro_batch_size": 2, "num_processes": 2}}
    result = plan_from_params(params, 80, None)
    assert (result.seq_len, result.batch_per_step, result.gradient_accumulation_steps) == (1200, 32, 8)
    assert result.estimate.vllm == pytest.approx(24.0)
    params["train"]["max_reflection_tokens"] = params["train"]["max_retry_tokens"] = None
    assert plan_from_params(params, 80, None).seq_len == 1000 + 320  # null: the protocol's budgets
    del params["protocol"]
    fallback = plan_from_params(params, 80, None)
    assert fallback.seq_len == 1000 + 512 and any("512" in n for n in fallback.notes)
    assert plan_from_params(params, 80, SMOLLM2_135M).estimate.weights < 1  # an explicit config wins


def test_plan_from_params_null_micro_batch_is_the_whole_share():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    profile = yaml.safe_load((ROOT / "profiles/qwen2.5-1.5b-1gpu.yaml").read_text())
    profile.pop("gpu_memory_gib")
    profile["train.micro_batch_size"] = None
    result = plan_from_params(_tool().merge(profile, params, Path("p.yaml")), 79, None)
    assert (result.micro_batch, result.gradient_accumulation_steps, result.fits) == (128, 1, False)
    assert "the largest train.micro_batch_size that fits: 8" in format_plan(result)
