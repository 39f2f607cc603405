"""R3 / plain-GRPO training on TRL's `GRPOTrainer` with the rollouts of `r3.training.rollout`.

Loss: TRL's `loss_type` (default "dapo": token-level normalisation over the batch), rewards scaled per group
(`scale_rewards="group"`), `beta` = 0 by default (no reference model, so no KL term or KL curve; set `beta`
> 0 to get both). With one optimizer step per generation batch (`num_iterations=1`) the policy ratio is 1
and the loss is the plain policy gradient, advantage x token log-prob, over the completion tokens only.

Generation engine (DESIGN section 9). Rollouts are sampled by the project's in-process vLLM engine, on CPU
and GPU alike. TRL's own vLLM integration cannot run on CPU (its colocate weight sync calls a plain
`load_weights`, which leaves the CPU build's packed weights stale; its server client refuses non-CUDA
devices), so the trainer is told it uses vLLM and is given `EngineSync` in place of TRL's
`VLLMGeneration`: TRL then calls `sync_weights()` whenever the optimizer has stepped, before the rollout,
and applies its importance-sampling correction with the sampler's logprobs that the rollout returns.
Under `accelerate launch` every rank runs its own engine on its own device (TRL's colocate layout).

Batches: one optimizer step = `queries_per_step` x `num_generations` sequences, split over the processes
and into micro-batches of `micro_batch_size` per device (gradient accumulation in between); one
generation per optimizer step (`steps_per_generation` = the accumulation steps).

Stopping: `max_steps` optimizer steps, or earlier once the rollouts have generated `token_budget` tokens
(retries included; summed over processes, so every rank stops at the same step), so R3 and the GRPO
control can be given the same generation budget. Checkpoints go into a caller-keyed folder every
`save_steps` steps and training resumes from the last one; the token count travels in the checkpoint
(`TokenBudget` is an `ExportableState` callback). Only the main process writes the model and the curves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from r3.errors import R3Error
from r3.training.rollout import Rollout, outcome_reward
from r3.training.validation import HeldOut, ValidationCurve

log = logging.getLogger("r3")


class TokenBudget(TrainerCallback, ExportableState):
    """Stops training once the rollouts have generated `budget` tokens; `spent` is saved with checkpoints.

    `spent` counts every process's tokens (all-reduced each step), so all ranks take the same decision.
    """

    def __init__(self, rollout: Rollout | None = None, budget: int | None = None, spent: int = 0):
        self.rollout, self.budget, self.spent = rollout, budget, spent
        self._mine = 0  # this process's tokens at the start of the run (restored on resume)

    def on_train_begin(self, args, state, control, **kwargs):
        # on resume the checkpoint's trainer state holds the count so far (transformers does not restore
        # callback attributes by default); this process's counter carries on from its share of it
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, dict):
            self.spent = saved.get("attributes", {}).get("spent", self.spent)
        if self.rollout is not None:
            self.rollout.generated_tokens = 0
        self._mine = self.spent

    def on_step_end(self, args, state, control, **kwargs):
        if self.rollout is not None:
            self.spent = self._mine + all_reduce_sum(self.rollout.generated_tokens)
        if self.budget is not None and self.spent >= self.budget:
            log.info("GRPO: generation budget reached (%d >= %d tokens) at step %d", self.spent, self.budget,
                     state.global_step)
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["r3/generated_tokens"] = self.spent

    def state(self) -> dict:
        return {"args": {"budget": self.budget}, "attributes": {"spent": self.spent}}


def all_reduce_sum(value: int) -> int:
    """`value` summed over the processes of a distributed run (itself in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    device = "cuda" if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t)
    return int(t.item())


class PeakMemory(TrainerCallback):
    """Logs the process's peak resident memory (GiB) with every step's metrics (`memory/peak_rss_gib`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs["memory/peak_rss_gib"] = round(peak_rss_gib(), 3)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


@contextlib.contextmanager
def policy_weights(model) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """The policy's weights under their checkpoint names (LoRA merged in for the duration; ZeRO-3 gathered)."""
    gather = contextlib.nullcontext()
    if getattr(model, "ds_config", None) is not None or hasattr(next(model.parameters()), "ds_id"):
        import deepspeed  # ZeRO-3 shards every parameter: gather them for the sync (not run on CPU here)

        gather = deepspeed.zero.GatheredParameters(list(model.parameters()))
    with gather:
        if isinstance(model, PeftModel):
            model.merge_adapter()
            try:
                yield [(name.removeprefix("base_model.model.").replace(".base_layer", ""), t.detach())
                       for name, t in model.state_dict().items() if "lora_" not in name]
            finally:
                model.unmerge_adapter()
        else:
            yield [(name, t.detach()) for name, t in model.state_dict().items()]


class EngineSync:
    """Stands in for TRL's `VLLMGeneration`: pushes the trained weights into the rollout's engine.

    TRL calls `sync_weights()` before a rollout whenever the step has changed, and reads `.llm`.
    """

    def __init__(self, engine, trainer):
        self.engine, self.trainer = engine, trainer
        self.llm = getattr(engine, "llm", None)  # the in-process engine's vllm.LLM (none for a server)

    def sync_weights(self) -> None:
        with policy_weights(self.trainer.accelerator.unwrap_model(self.trainer.model)) as weights:
            self.engine.sync_weights(weights)


def signal_only_trainer(base: type) -> type:
    """`base` (TRL's `GRPOTrainer`) changed to learn from reward variance only (`train.signal_only`).

    - A batch in which no sequence has a non-zero advantage (every group's rewards are equal) has a zero
      gradient, yet AdamW would still move the weights with its momentum and advance its state: its optimizer
      step is skipped, so the weights and the optimizer state stay bit-identical (the learning-rate schedule
      and the step counter advance). Decided on the all-reduced advantages, so every rank skips together.
    - The token-level normaliser (`num_items_in_batch`, loss types dapo/cispo) counts only the completion
      tokens of sequences with a non-zero advantage: zero-variance groups add nothing to the loss's sum and
      no longer dilute the informative groups in its denominator.
    - A micro-batch whose sequences all have a zero advantage contributes exactly zero gradient when the loss
      has no other term (`beta` 0, no entropy bonus, no MoE aux loss), so its forward and backward are not run
      (`skipped_micro_batches`). On the CPU default most groups have no variance, so this is most of the
      training compute. Only in a single process: under DDP every rank must run the backward that syncs.
    """

    class SignalOnlyGRPOTrainer(base):
        skipped_steps = 0
        skipped_micro_batches = 0
        _has_signal = True

        def _skips_zero_advantage(self) -> bool:
            return (self.beta == 0.0 and not self._entropy_bonus_enabled and not self.aux_loss_enabled
                    and self.accelerator.num_processes == 1)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self._skips_zero_advantage() and not inputs["advantages"].ne(0).any():
                self.skipped_micro_batches += 1
                # a zero with a graph of its own: the trainer's backward runs, no parameter gets a gradient
                return torch.zeros((), requires_grad=True)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            informative = out["advantages"] != 0
            self._has_signal = all_reduce_sum(int(informative.sum())) > 0
            tokens = (out["completion_mask"] * informative.unsqueeze(1)).sum()
            out["num_items_in_batch"] = self.accelerator.gather(tokens).sum()
            self._metrics["train"]["r3/skipped_step"].append(float(not self._has_signal))
            return out

        def create_optimizer(self, *args, **kwargs):
            optimizer = super().create_optimizer(*args, **kwargs)
            step = optimizer.step

            def step_if_signal(*a, **kw):
                if self._has_signal:
                    return step(*a, **kw)
                self.skipped_steps += 1
                return None

            optimizer.step = step_if_signal
            return optimizer

    return SignalOnlyGRPOTrainer


def micro_batching(batch: int, micro_batch_size: int, num_processes: int) -> int:
    """Gradient accumulation steps for `batch` sequences per optimizer step; errors name the param."""
    per_step = micro_batch_size * num_processes
    if batch % per_step:
        raise R3Error(f"train.micro_batch_size={micro_batch_size}: x {num_processes} process(es) = {per_step} "
                      f"does not divide the batch of {batch} sequences (queries_per_step x num_generations)")
    return batch // per_step


def make_trainer(model_dir: str | Path, rollout: Rollout, output_dir: str | Path, *, num_generations: int = 4,
                 queries_per_step: int = 2, micro_batch_size: int | None = None, gradient_checkpointing: bool = False,
                 learning_rate: float = 1e-6, beta: float = 0.0, max_steps: int = 10,
                 max_completion_length: int = 128, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, loss_type: str = "dapo", scale_rewards: str = "group",
                 weight_decay: float = 0.0, lr_scheduler_type: str = "constant", bf16: bool = False,
                 lora: dict | None = None, save_steps: int | None = None, save_total_limit: int = 2,
                 logging_steps: int = 1, callbacks: list | None = None, signal_only: bool = True):
    """A `GRPOTrainer` whose completions come from `rollout` (one optimizer step per generation batch).

    `queries_per_step` distinct queries x `num_generations` completions make one step's batch, in micro-batches
    of `micro_batch_size` sequences per process (default: the whole per-process share). `temperature` and
    `top_p` are recorded in the config for TRL; sampling itself uses the rollout's protocols. With
    `rollout.engine` set, the trainer syncs its weights into that engine (`EngineSync`). `signal_only`: skip
    the optimizer step of a batch without reward variance, and normalise the loss by the tokens of sequences
    with an advantage (`signal_only_trainer`); False: TRL's own behaviour.
    """
    from accelerate import PartialState
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    use_cpu = not torch.cuda.is_available()
    batch, processes = queries_per_step * num_generations, PartialState().num_processes
    micro_batch_size = micro_batch_size or batch // processes
    accumulation = micro_batching(batch, micro_batch_size, processes)
    config = GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=micro_batch_size,
        gradient_accumulation_steps=accumulation, steps_per_generation=accumulation,
        num_generations=num_generations, num_iterations=1,
        learning_rate=learning_rate, lr_scheduler_type=lr_scheduler_type, weight_decay=weight_decay, beta=beta,
        loss_type=loss_type, scale_rewards=scale_rewards, max_steps=max_steps,
        max_completion_length=max_completion_length,
        temperature=temperature, top_p=top_p, seed=seed, bf16=bf16 and (use_cpu or torch.cuda.is_bf16_supported()),
        use_cpu=use_cpu, save_strategy="no" if save_steps is None else "steps", save_steps=save_steps or 500,
        save_total_limit=save_total_limit, logging_steps=logging_steps, report_to="none",
        dataloader_num_workers=0, remove_unused_columns=False, shuffle_dataset=True,
        gradient_checkpointing=gradient_checkpointing, vllm_mode="colocate",
        vllm_importance_sampling_correction=True, ddp_find_unused_parameters=False)
    peft_config = None
    if lora and lora.get("enabled", True):
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                 lora_dropout=lora.get("dropout", 0.0),
                                 target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # full fine-tune: fp32 master weights (bf16 is autocast); LoRA: the frozen base in bf16, adapters in fp32
    base_dtype = torch.bfloat16 if peft_config is not None and config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=base_dtype)
    trainer_class = signal_only_trainer(GRPOTrainer) if signal_only else GRPOTrainer
    trainer = trainer_class(model=model, reward_funcs=[outcome_reward], args=config,
                            train_dataset=Dataset.from_list(rollout.dataset_rows()), processing_class=tokenizer,
                            peft_config=peft_config, rollout_func=rollout,
                            callbacks=[PeakMemory(), *(callbacks or [])])
    if rollout.engine is not None and hasattr(rollout.engine, "sync_weights"):
        # TRL's vLLM path with the project's engine (module docstring): weight sync before each rollout,
        # importance-sampling correction with the rollout's logprobs
        trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, EngineSync(rollout.engine,
                                                                                                 trainer), -1
    return trainer


def train_grpo(model_dir: str | Path, rollout: Rollout, out_dir: str | Path, *,
               checkpoint_dir: str | Path | None = None, save_steps: int = 5, token_budget: int | None = None,
               report_to: str = "none", logging_dir: str | Path | None = None, held_out: HeldOut | None = None,
               eval_every: int | None = None, **hparams) -> dict[str, Any]:
    """Train `model_dir` with `rollout`; save a plain HF model dir (LoRA merged) with its tokenizer; return stats.

    `hparams` are `make_trainer`'s. With `checkpoint_dir`, checkpoints go there every `save_steps` steps and
    training resumes from the last one. `report_to="dvclive"` logs every step to `logging_dir`. With `held_out`
    and `eval_every`, the first-try accuracy on the held-out items is measured at the start and every
    `eval_every` steps (`ValidationCurve`, on the rollout's engine; stats["validation_curve"]).
    """
    if report_to not in ("none", "dvclive"):
        raise ValueError(f"report_to must be 'none' or 'dvclive', got {report_to!r}")
    from accelerate import PartialState

    main = PartialState().is_main_process
    resume = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir and Path(checkpoint_dir).is_dir() else None
    budget = TokenBudget(rollout, token_budget)
    callbacks: list = [budget]
    curve = None
    if held_out is not None and eval_every:
        if rollout.engine is None:
            raise ValueError("a validation curve needs the rollout's engine")
        curve = ValidationCurve(lambda: held_out.accuracy(rollout.engine), lambda: None, eval_every, main)
        callbacks.append(curve)  # before DVCLive's callback, which writes the logs this one adds to
    if report_to == "dvclive" and main:
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        live = Live(dir=str(logging_dir or "dvclive"), resume=resume is not None, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))

    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(model_dir, rollout, checkpoint_dir or scratch,
                               save_steps=save_steps if checkpoint_dir else None, callbacks=callbacks, **hparams)
        if curve is not None and isinstance(getattr(trainer, "vllm_generation", None), EngineSync):
            curve.sync = _syncer(trainer)
        if resume:
            log.info("GRPO: resuming from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)

    model = trainer.accelerator.unwrap_model(trainer.model)
    lora = isinstance(model, PeftModel)
    model = model.merge_and_unload() if lora else model
    if main:
        model.save_pretrained(out_dir)
        trainer.processing_class.save_pretrained(out_dir)
    history = [entry for entry in trainer.state.log_history if "reward" in entry]

    def mean(key: str) -> float | None:
        values = [entry[key] for entry in history if key in entry]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "global_step": trainer.state.global_step, "resumed_from": resume, "queries": len(rollout.queries),
        "generated_tokens": budget.spent, "token_budget": token_budget,
        "train_runtime": round(result.metrics["train_runtime"], 1),
        "reward_mean": mean("reward"), "frac_reward_zero_std": mean("frac_reward_zero_std"),
        "reflection_tokens_mean": mean("completions/mean_length"),
        "retry_success": mean("r3/retry_success"), "copied_answer": mean("r3/copied_answer"),
        "repeated_attempt": mean("r3/repeated_attempt"),
        "skipped_steps": getattr(trainer, "skipped_steps", 0),
        "skipped_micro_batches": getattr(trainer, "skipped_micro_batches", 0),
        "lora": lora, "processes": trainer.accelerator.num_processes, "peak_rss_gib": round(peak_rss_gib(), 3),
        "micro_batch_size": trainer.args.per_device_train_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "behaviours": {key.removeprefix("behaviour/"): {"first": values[0], "last": values[-1], "mean": mean(key)}
                       for key in sorted({k for entry in history for k in entry if k.startswith("behaviour/")})
                       if (values := [entry[key] for entry in history if key in entry])},
        "validation_curve": [list(point) for point in curve.curve] if curve else None,
        "validation_first": curve.curve[0][1] if curve and curve.curve else None,
        "validation_last": curve.curve[-1][1] if curve and curve.curve else None,
    }


def _syncer(trainer):
    """Pushes the policy's current weights into the rollout engine (as TRL does before a rollout)."""
    def sync() -> None:
        trainer.vllm_generation.sync_weights()
        trainer._last_loaded_step = trainer.state.global_step  # TRL need not push the same weights again
    return sync
