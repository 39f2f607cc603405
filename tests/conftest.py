import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_model import build_tiny_model_dir

from r3.inference import Backend, Completion

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """A tiny model gains nothing from threads, and two stall badly when another process is busy.

    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + byte-level tokenizer with a ChatML template, built locally."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """The project's vLLM engine on the tiny model, shared by the session (starts in seconds: no compilation).

    A test that syncs other weights into it takes `engine_to_restore` instead, which syncs the tiny
    model's weights back afterwards.
    """
    from r3.inference.vllm_backend import VLLMBackend

    return VLLMBackend(str(tiny_model_dir), dtype="float32", batch_size=8, enforce_eager=True, kv_cache_gib=1,
                       max_model_len=16384)


@pytest.fixture
def engine_to_restore(tiny_engine, tiny_model_dir):
    """`tiny_engine` for a test that syncs other weights into it; the tiny model's weights are synced back after."""
    from transformers import AutoModelForCausalLM

    try:
        yield tiny_engine
    finally:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        tiny_engine.sync_weights(model.state_dict().items())


def tiny_params(model_base: str) -> dict:
    """The repo's params.yaml shrunk to a profile that runs in seconds on the tiny model."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["model"]["base"] = model_base
    for task in p["tasks"]:
        p["data"][task]["splits"] = {"train": 12, "validation": 4, "test": 6}
        p["protocol"][task]["max_attempt_tokens"] = 12
        p["protocol"][task]["max_reflection_tokens"] = 8
    # the engine without compilation (starts in seconds); the byte-level tokenizer makes long prompts
    p["inference"].update(batch_size=4, enforce_eager=True, kv_cache_gib=1, max_model_len=16384)
    p["failures"].update(queries=4, samples=2, keep="failed_any")  # a random model solves nothing: keep its failures
    p["prime"].update(epochs=1, batch_size=2, save_steps=2, bf16=False, max_length=1024)
    p["prime"]["mix"]["countdown"]["size"] = 4
    p["prime"]["mix"]["function_calling"]["size"] = 2
    # the byte-level tiny tokenizer makes function-calling prompts several thousand tokens long
    p["train"].update(max_steps=2, num_generations=2, queries_per_step=2, save_steps=1, bf16=False,
                      max_prompt_tokens=100_000)
    return p


@pytest.fixture
def workdir(tmp_path, tiny_model_dir) -> Path:
    """A scratch working directory with a tiny params.yaml and models/{raw,primed} = the tiny model."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(str(tiny_model_dir))))
    for policy in ("raw", "primed"):
        shutil.copytree(tiny_model_dir, tmp_path / "models" / policy)
    return tmp_path


def countdown_queries(task, n: int = 2) -> list:
    """n failed Countdown queries for training rollouts; the targets differ in length, so a batch's
    prompts are left padded."""
    from r3.prompts import PromptConfig, build_prompt
    from r3.tasks import get_task
    from r3.training.rollout import Query

    items = [([1, 2, 3], 6), ([2, 3, 4], 24), ([5, 5, 1], 11)][:n]
    return [Query(f"q{i}", task, {"numbers": nums, "target": target},
                  build_prompt(get_task("countdown"), {"numbers": nums, "target": target}, PromptConfig("concise")),
                  attempt=f"<answer>{'+'.join(map(str, nums))}0</answer>")
            for i, (nums, target) in enumerate(items)]


class ScriptedBackend(Backend):
    """A training-rollout backend: reflections by position in the batch (`reflections[i % len]`), retries and
    attempts from functions of (request, position); completions carry real token ids (text + eos) of the tiny
    tokenizer. Encodes like the real backend."""

    def __init__(self, tokenizer, proto, reflections=("r",), retry=lambda req, i: "", attempt=lambda req, i: ""):
        self.tokenizer, self.proto, self.reflections = tokenizer, proto, list(reflections)
        self.retry, self.attempt = retry, attempt
        self.calls = []

    def generate(self, requests, params, desc=""):
        out = []
        for i, r in enumerate(requests):
            last = r.messages[-1]["content"]
            if last == self.proto.reflection_instruction:
                text = self.reflections[i % len(self.reflections)]
            elif last == self.proto.retry_instruction:
                text = self.retry(r, i)
            else:
                text = self.attempt(r, i)
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + (self.tokenizer.eos_token_id,)
            out.append([Completion(text, len(ids), "stop", ids)])
        self.calls.append((desc, list(requests), params, [c[0] for c in out]))
        return out


def load_script(path: Path):
    """A script that is not a package module (a stage, a tool) imported from its file, to call it in process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stage(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a stage script as DVC would; tests never touch the network (HF offline mode)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
