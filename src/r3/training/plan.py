"""A GPU memory planner for GRPO training: per-device GiB of one training micro-step plus the colocated vLLM engine.

Pure arithmetic, no torch. These are the project's chosen approximations (P = parameters, B = bytes,
t = micro_batch x seq_len tokens, h = hidden size, L = layers):

    weights      full fine-tune: 4 B/P (float32 master weights; bf16 autocast) or 2 B/P (bfloat16 weights);
                 ZeRO-3 shards them over num_processes.
                 LoRA: the base in bfloat16, 2 B/P, unsharded, plus 4 B per trainable parameter, where
                 trainable = r x (in + out) summed over q, k, v, o, gate, up, down of every layer.
    gradients    full: the weights' dtype per P; LoRA: 4 B per trainable parameter. ZeRO-2/3 shard them.
    optimizer    AdamW's two float32 moments, 8 B per trained parameter. ZeRO-2/3 shard them.
    activations  no checkpointing: 74 h B per token per layer (float32 residual stream and norms, SwiGLU;
                 the project's measured rule, with bf16 autocast) x t x L. Checkpointing keeps only each
                 layer's input, h x 4 B per token per layer (2 B when the residual stream is bfloat16:
                 bfloat16 weights or LoRA's bfloat16 base), plus one layer's full activations (74 h x t)
                 during its recomputation. Without bf16 autocast every saved tensor is at most twice as
                 large, so the planner doubles the rule (an upper bound).
    logits       t x vocab x 4 B x 2 (float32 logits plus their log-softmax). TRL computes per-token
                 logps over the completion only; the whole sequence is kept here as the upper bound.
    reference    beta > 0 keeps a frozen copy: the weights once more in bfloat16, 2 B/P (ZeRO-3 shards
                 it). LoRA needs none: TRL scores the reference with the adapter disabled.
    vllm         the colocated engine takes gpu_memory_utilization x the device's GiB (0 when the engine
                 runs on another GPU).
    total        the sum plus 1.5 GiB of CUDA context and allocator fragmentation.

Not counted: torch.autocast's cache of bfloat16 weight copies (up to 2 B/P while a step runs with float32
weights), and the optimizer's temporaries during `step()`; the 1.5 GiB overhead absorbs part of them.

`plan_from_params` reads params.yaml's fields: seq_len = train.max_prompt_tokens + max(reflection, retry
budget) (a null budget is protocol.<task>'s largest, else 512), batch = queries_per_step x num_generations,
and a null train.micro_batch_size is each process's whole share, as training does.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3.errors import R3Error

GIB = 1024**3
ACT_BYTES_PER_HIDDEN = 74  # bytes per token per layer per unit of hidden size, no checkpointing
OVERHEAD_GIB = 1.5  # CUDA context and allocator fragmentation
DEFAULT_COMPLETION_TOKENS = 512  # seq_len's completion part when nothing says otherwise


@dataclass
class ModelShape:
    params: int  # total parameter count
    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, cfg: dict) -> ModelShape:
        """From a Llama/Qwen2-style HF `config.json` dict; counts embeddings, attention (with Qwen2's
        q, k, v biases), SwiGLU MLP and RMSNorms."""
        try:
            h, layers, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
            inter, heads = cfg["intermediate_size"], cfg["num_attention_heads"]
        except KeyError as exc:
            raise R3Error(f"model config: missing {exc.args[0]!r} (a Llama/Qwen2-style config.json)") from None
        kv_heads = cfg.get("num_key_value_heads") or heads
        head_dim = cfg.get("head_dim") or h // heads
        tied = bool(cfg.get("tie_word_embeddings", False))
        bias = bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2"))
        q, kv = heads * head_dim, kv_heads * head_dim
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if bias else 0)
        mlp = 3 * h * inter
        per_layer = attn + mlp + 2 * h  # two RMSNorms
        embed = vocab * h * (1 if tied else 2)
        params = embed + layers * per_layer + h  # final norm
        return cls(params, h, layers, vocab, inter, heads, kv_heads, head_dim, tied)

    def lora_params(self, r: int) -> int:
        """Trainable LoRA parameters: r x (in + out) over q, k, v, o, gate, up, down of every layer."""
        h, q, kv, inter = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        in_out = (h + q) + 2 * (h + kv) + (q + h) + 3 * (h + inter)
        return r * in_out * self.layers


@dataclass
class TrainSetup:
    micro_batch: int | None  # sequences per forward/backward per device (None: `plan` chooses the largest that fits)
    seq_len: int  # prompt + completion tokens
    gradient_checkpointing: bool = False
    bf16: bool = True  # bf16 autocast (with float32 master weights in the full fine-tune case)
    weights_dtype: str = "float32"  # float32 | bfloat16: the trained weights' dtype (full fine-tune)
    lora_r: int | None = None  # None: full fine-tune
    num_processes: int = 1
    zero_stage: int = 0  # 0 | 2 | 3
    vllm_gpu_memory_utilization: float = 0.0  # the colocated engine's share of the GPU; 0: engine elsewhere
    reference_model: bool = False  # beta > 0 keeps a frozen copy

    def __post_init__(self):
        if self.weights_dtype not in ("float32", "bfloat16"):
            raise R3Error(f"weights_dtype is {self.weights_dtype!r}; choose float32 or bfloat16")
        if self.zero_stage not in (0, 2, 3):
            raise R3Error(f"zero_stage is {self.zero_stage!r}; choose 0, 2 or 3")
        if self.num_processes < 1:
            raise R3Error(f"num_processes must be >= 1, got {self.num_processes}")
        if not 0.0 <= self.vllm_gpu_memory_utilization <= 1.0:
            raise R3Error(f"vllm_gpu_memory_utilization must be in [0, 1], got {self.vllm_gpu_memory_utilization}")


@dataclass
class Estimate:
    weights: float  # GiB per device
    gradients: float
    optimizer: float
    activations: float
    logits: float
    reference: float
    vllm: float
    total: float

    def rows(self) -> list[tuple[str, float]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


def estimate(shape: ModelShape, setup: TrainSetup, gpu_gib: float) -> Estimate:
    """Per-device GiB of one micro-step of `setup` on `shape`, with the engine's share of a `gpu_gib` device."""
    if not setup.micro_batch or setup.micro_batch < 1:
        raise R3Error(f"micro_batch must be >= 1, got {setup.micro_batch}")
    n, P = setup.num_processes, shape.params
    shard_states = n if setup.zero_stage >= 2 else 1  # gradients and optimizer
    shard_weights = n if setup.zero_stage == 3 else 1
    if setup.lora_r is None:
        w_bytes = 4 if setup.weights_dtype == "float32" else 2
        weights = w_bytes * P / shard_weights
        gradients = w_bytes * P / shard_states
        optimizer = 8 * P / shard_states
        residual_bytes = w_bytes
        reference = 2 * P / shard_weights if setup.reference_model else 0.0
    else:
        trainable = shape.lora_params(setup.lora_r)
        weights = 2 * P + 4 * trainable
        gradients = 4 * trainable / shard_states
        optimizer = 8 * trainable / shard_states
        residual_bytes = 2
        reference = 0.0  # the adapter-disabled base is the reference
    tokens = setup.micro_batch * setup.seq_len
    layer_full = ACT_BYTES_PER_HIDDEN * shape.hidden * tokens * (1 if setup.bf16 else 2)
    if setup.gradient_checkpointing:
        activations = residual_bytes * shape.hidden * tokens * shape.layers + layer_full
    else:
        activations = layer_full * shape.layers
    logits = tokens * shape.vocab * 4 * 2
    parts = [x / GIB for x in (weights, gradients, optimizer, activations, logits, reference)]
    vllm = setup.vllm_gpu_memory_utilization * gpu_gib
    return Estimate(*parts, vllm, sum(parts) + vllm + OVERHEAD_GIB)


def _per_process(batch_per_step: int, num_processes: int) -> int:
    if batch_per_step < 1 or batch_per_step % num_processes:
        raise R3Error(f"batch per step {batch_per_step} is not divisible by num_processes {num_processes}")
    return batch_per_step // num_processes


def choose_micro_batch(shape: ModelShape, setup: TrainSetup, batch_per_step: int, gpu_gib: float) -> int:
    """The largest micro_batch dividing batch_per_step / num_processes whose estimate fits in gpu_gib
    (setup.micro_batch is ignored)."""
    per_process = _per_process(batch_per_step, setup.num_processes)
    for mb in sorted((d for d in range(1, per_process + 1) if per_process % d == 0), reverse=True):
        if estimate(shape, dataclasses.replace(setup, micro_batch=mb), gpu_gib).total <= gpu_gib:
            return mb
    need = estimate(shape, dataclasses.replace(setup, micro_batch=1), gpu_gib).total
    raise R3Error(f"even micro_batch 1 does not fit: needs {need:.1f} GiB of {gpu_gib:g} GiB "
                  f"(seq_len {setup.seq_len})")


@dataclass
class Plan:
    micro_batch: int
    gradient_accumulation_steps: int
    estimate: Estimate
    fits: bool
    gpu_gib: float
    batch_per_step: int
    seq_len: int
    notes: list[str] = dataclasses.field(default_factory=list)


def plan(shape: ModelShape, setup: TrainSetup, batch_per_step: int, gpu_gib: float) -> Plan:
    """Evaluate setup.micro_batch (None: the largest that fits) for batch_per_step sequences per optimizer step."""
    per_process = _per_process(batch_per_step, setup.num_processes)
    mb = setup.micro_batch or choose_micro_batch(shape, setup, batch_per_step, gpu_gib)
    if per_process % mb:
        raise R3Error(f"micro_batch {mb} does not divide the per-process batch {per_process} "
                      f"({batch_per_step} sequences over {setup.num_processes} processes)")
    est = estimate(shape, dataclasses.replace(setup, micro_batch=mb), gpu_gib)
    return Plan(mb, per_process // mb, est, est.total <= gpu_gib, gpu_gib, batch_per_step, setup.seq_len)


def format_plan(p: Plan) -> str:
    lines = [f"micro_batch {p.micro_batch} x gradient_accumulation_steps {p.gradient_accumulation_steps} "
             f"(batch per step {p.batch_per_step}, seq_len {p.seq_len})"]
    lines += [f"  {name:<12}{gib:8.1f} GiB" for name, gib in p.estimate.rows()]
    lines += [f"note: {n}" for n in p.notes]
    if p.fits:
        lines.append(f"fits in {p.gpu_gib:g} GiB")
    else:
        lines.append(f"does NOT fit: needs {p.estimate.total:.1f} GiB of {p.gpu_gib:g} GiB")
    return "\n".join(lines)


# Known HF configs by model.base (the shape fields only), so a plan needs no download
_SMOLLM2_135M = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                 "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                 "tie_word_embeddings": True, "attention_bias": False}
KNOWN_CONFIGS: dict[str, dict] = {
    "bundled:smollm2-135m-instruct": _SMOLLM2_135M,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
    "Qwen/Qwen2.5-1.5B-Instruct": {
        "model_type": "qwen2", "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True},
    "Qwen/Qwen2.5-7B-Instruct": {
        "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False},
}


def _get(params: dict, key: str, default: Any = None) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _typed(params: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = _get(params, key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = "/".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise R3Error(f"params: field {key!r} must be {names}, got {value!r}")
    return value


def model_config(base: str) -> dict:
    """The HF config of model.base: the built-in table, or a local model directory's config.json."""
    if base in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[base]
    path = Path(base) / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    raise R3Error(f"model.base: no known config for {base!r}; pass the model's config.json "
                  f"(known: {sorted(KNOWN_CONFIGS)})")


def _completion_tokens(params: dict, key: str, protocol_key: str, notes: list[str]) -> int:
    """train.<key>, or when null the largest protocol.<task>.<protocol_key> over tasks (params.yaml's meaning
    of null), or DEFAULT_COMPLETION_TOKENS when neither is set."""
    value = _typed(params, f"train.{key}", (int, type(None)), None)
    if value is not None:
        return value
    tasks = _get(params, "tasks") or []
    found = [_get(params, f"protocol.{t}.{protocol_key}") for t in tasks if isinstance(t, str)]
    found = [v for v in found if isinstance(v, int) and not isinstance(v, bool)]
    if found:
        notes.append(f"train.{key} is null: using the largest protocol.<task>.{protocol_key}, {max(found)}")
        return max(found)
    notes.append(f"train.{key} is null: using {DEFAULT_COMPLETION_TOKENS}")
    return DEFAULT_COMPLETION_TOKENS


def plan_from_params(params: dict, gpu_gib: float, config: dict | None = None) -> Plan:
    """The plan of a params.yaml mapping (with any profile merged in) on a `gpu_gib` device; `config` is the
    model's HF config.json dict (None: looked up from model.base)."""
    if config is None:
        base = _get(params, "model.base")
        if not isinstance(base, str):
            raise R3Error(f"params: field 'model.base' must be a model id, got {base!r}")
        config = model_config(base)
    shape = ModelShape.from_config(config)
    notes: list[str] = []
    prompt = _typed(params, "train.max_prompt_tokens", int, None)
    completion = max(_completion_tokens(params, "max_reflection_tokens", "max_reflection_tokens", notes),
                     _completion_tokens(params, "max_retry_tokens", "max_attempt_tokens", notes))
    lora = _typed(params, "train.lora.enabled", bool, False)
    # the training processes hold an engine each, unless the rollouts go to a separate server
    colocated = _typed(params, "train.server_url", (str, type(None)), None) is None
    setup = TrainSetup(
        micro_batch=_typed(params, "train.micro_batch_size", (int, type(None)), None),
        seq_len=prompt + completion,
        gradient_checkpointing=_typed(params, "train.gradient_checkpointing", bool, False),
        bf16=_typed(params, "train.bf16", bool, False),
        weights_dtype="float32",  # grpo.py loads the policy in float32; bf16 is autocast
        lora_r=_typed(params, "train.lora.r", int, None) if lora else None,
        num_processes=_typed(params, "train.num_processes", int, 1),
        zero_stage=_typed(params, "train.zero_stage", int, 0),
        vllm_gpu_memory_utilization=(_typed(params, "inference.gpu_memory_utilization", float, 0.3)
                                     if colocated else 0.0),
        reference_model=_typed(params, "train.beta", float, 0.0) > 0)
    batch = _typed(params, "train.queries_per_step", int, None) * _typed(params, "train.num_generations", int, None)
    if setup.micro_batch is None:  # null in params.yaml: each process's whole share, no accumulation
        setup.micro_batch = _per_process(batch, setup.num_processes)
        notes.append(f"train.micro_batch_size is null: the whole per-process batch, {setup.micro_batch}")
    result = plan(shape, setup, batch, gpu_gib)
    if not result.fits:
        try:
            notes.append(f"the largest train.micro_batch_size that fits: "
                         f"{choose_micro_batch(shape, setup, batch, gpu_gib)}")
        except R3Error as exc:
            notes.append(str(exc))
    result.notes = notes + result.notes
    return result
