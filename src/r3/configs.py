"""Typed configuration objects built from `params.yaml`, shared by the stage scripts."""

from __future__ import annotations

from pathlib import Path

from r3.errors import R3Error
from r3.inference import BACKENDS, Backend, SamplingParams, load_backend
from r3.params import Params
from r3.prompts import PromptConfig
from r3.protocol import ProtocolConfig
from r3.tasks import Task

POLICIES = ("raw", "primed", "r3", "grpo")


def model_dir(policy: str) -> Path:
    if policy not in POLICIES:
        raise R3Error(f"unknown policy {policy!r}; choose one of {list(POLICIES)}")
    path = Path("models") / policy
    if not (path / "config.json").is_file():
        raise R3Error(f"{path}: no model for policy {policy!r} (run the stage that writes it: dvc repro)")
    return path


def backend(p: Params, policy: str, model: str | Path | None = None, **overrides) -> Backend:
    """The configured inference engine over the policy's model (or over `model`, a model directory);
    `overrides` replace engine options (None: keep the `inference` section's)."""
    inf = p.section("inference")
    name = inf.get("backend", str, choices=BACKENDS)
    options = engine_options(p) | {k: v for k, v in overrides.items() if v is not None}
    if model is not None and not (Path(model) / "config.json").is_file():
        raise R3Error(f"{model}: not a model directory (no config.json)")
    return load_backend(name, str(model or model_dir(policy)), **options)


def engine_options(p: Params) -> dict:
    """The engine's settings from params (`inference` section; the run's seed)."""
    inf = p.section("inference")
    return {"dtype": inf.get("dtype", str, choices=("float32", "bfloat16", "float16")),
            "batch_size": inf.get("batch_size", int, min_value=1),
            "max_model_len": inf.get("max_model_len", int, min_value=16),
            "enforce_eager": inf.get("enforce_eager", bool),
            "kv_cache_gib": inf.get("kv_cache_gib", int, min_value=1),
            "gpu_memory_utilization": inf.get("gpu_memory_utilization", float, min_value=0.01, max_value=1.0),
            "seed": p.get("seed", int)}


def prompt_config(p: Params, task: Task) -> PromptConfig:
    return PromptConfig.from_params(p.section(f"prompt.{task.name}"), task)


def protocol_config(p: Params, task: Task, temperature: float, top_p: float, seed: int) -> ProtocolConfig:
    proto = p.section("protocol")
    per_task = proto.section(task.name)
    stop = task.stop_strings
    return ProtocolConfig(
        reflection_instruction=per_task.get("reflection_instruction", str),
        retry_instruction=proto.get("retry_instruction", str),
        attempt=SamplingParams(max_new_tokens=per_task.get("max_attempt_tokens", int, min_value=1),
                               temperature=temperature, top_p=top_p, seed=seed, stop=stop),
        reflection=SamplingParams(max_new_tokens=per_task.get("max_reflection_tokens", int, min_value=1),
                                  temperature=temperature, top_p=top_p, seed=seed + 1),
        prefill=prompt_config(p, task).prefill,
    )
