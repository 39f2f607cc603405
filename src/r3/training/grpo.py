"""R3 / plain-GRPO training on TRL's `GRPOTrainer` with the rollouts of `r3.training.rollout`.

Loss: TRL's `loss_type` (default "dapo": token-level normalisation over the batch), rewards scaled per group
(`scale_rewards="group"`), `beta` = 0 by default (no reference model, so no KL term or KL curve; set `beta`
> 0 to get both). With one optimizer step per generation batch (`num_iterations=1`) the policy ratio is 1
and the loss is the plain policy gradient, advantage x token log-prob, over the completion tokens only.

Stopping: `max_steps` optimizer steps, or earlier once the rollouts have generated `token_budget` tokens
(retries included), so R3 and the GRPO control can be given the same generation budget. Checkpoints go
into a caller-keyed folder every `save_steps` steps and training resumes from the last one; the token
count travels in the checkpoint (`TokenBudget` is an `ExportableState` callback).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import get_last_checkpoint

from r3.training.rollout import Rollout, outcome_reward

log = logging.getLogger("r3")


class TokenBudget(TrainerCallback, ExportableState):
    """Stops training once the rollouts have generated `budget` tokens; `spent` is saved with checkpoints."""

    def __init__(self, rollout: Rollout | None = None, budget: int | None = None, spent: int = 0):
        self.rollout, self.budget, self.spent = rollout, budget, spent

    def on_train_begin(self, args, state, control, **kwargs):
        # on resume the checkpoint's trainer state holds the count so far (transformers does not restore
        # callback attributes by default); the rollout's counter carries on from it
        saved = state.stateful_callbacks.get(type(self).__name__)
        if isinstance(saved, dict):
            self.spent = saved.get("attributes", {}).get("spent", self.spent)
        if self.rollout is not None:
            self.rollout.generated_tokens = self.spent

    def on_step_end(self, args, state, control, **kwargs):
        self.spent = self.rollout.generated_tokens if self.rollout is not None else self.spent
        if self.budget is not None and self.spent >= self.budget:
            log.info("GRPO: generation budget reached (%d >= %d tokens) at step %d", self.spent, self.budget,
                     state.global_step)
            control.should_training_stop = True
        return control

    def state(self) -> dict:
        return {"args": {"budget": self.budget}, "attributes": {"spent": self.spent}}


def make_trainer(model_dir: str | Path, rollout: Rollout, output_dir: str | Path, *, num_generations: int = 4,
                 queries_per_step: int = 2, learning_rate: float = 1e-6, beta: float = 0.0, max_steps: int = 10,
                 max_completion_length: int = 128, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, loss_type: str = "dapo", scale_rewards: str = "group",
                 weight_decay: float = 0.0, lr_scheduler_type: str = "constant", bf16: bool = False,
                 lora: dict | None = None, save_steps: int | None = None, save_total_limit: int = 2,
                 logging_steps: int = 1, callbacks: list | None = None):
    """A `GRPOTrainer` whose completions come from `rollout` (one optimizer step per generation batch).

    `queries_per_step` distinct queries x `num_generations` completions make one step's batch. `temperature`
    and `top_p` are recorded in the config for TRL; sampling itself uses the rollout's protocols.
    """
    from trl import GRPOConfig, GRPOTrainer

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental
    use_cpu = not torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=queries_per_step * num_generations,
        gradient_accumulation_steps=1, num_generations=num_generations, num_iterations=1,
        learning_rate=learning_rate, lr_scheduler_type=lr_scheduler_type, weight_decay=weight_decay, beta=beta,
        loss_type=loss_type, scale_rewards=scale_rewards, max_steps=max_steps,
        max_completion_length=max_completion_length,
        temperature=temperature, top_p=top_p, seed=seed, bf16=bf16 and (use_cpu or torch.cuda.is_bf16_supported()),
        use_cpu=use_cpu, save_strategy="no" if save_steps is None else "steps", save_steps=save_steps or 500,
        save_total_limit=save_total_limit, logging_steps=logging_steps, report_to="none",
        dataloader_num_workers=0, remove_unused_columns=False, shuffle_dataset=True,
        # TRL turns it on by default; it would disable the KV cache the rollout's decoding needs, and a
        # 135M model has memory to spare
        gradient_checkpointing=False)
    peft_config = None
    if lora and lora.get("enabled", True):
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                 lora_dropout=lora.get("dropout", 0.0),
                                 target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return GRPOTrainer(model=model, reward_funcs=[outcome_reward], args=config,
                       train_dataset=Dataset.from_list(rollout.dataset_rows()), processing_class=tokenizer,
                       peft_config=peft_config, rollout_func=rollout, callbacks=callbacks or [])


def train_grpo(model_dir: str | Path, rollout: Rollout, out_dir: str | Path, *,
               checkpoint_dir: str | Path | None = None, save_steps: int = 5, token_budget: int | None = None,
               report_to: str = "none", logging_dir: str | Path | None = None, **hparams) -> dict[str, Any]:
    """Train `model_dir` with `rollout`; save a plain HF model dir (LoRA merged) with its tokenizer; return stats.

    `hparams` are `make_trainer`'s. With `checkpoint_dir`, checkpoints go there every `save_steps` steps and
    training resumes from the last one. `report_to="dvclive"` logs every step to `logging_dir`.
    """
    if report_to not in ("none", "dvclive"):
        raise ValueError(f"report_to must be 'none' or 'dvclive', got {report_to!r}")
    resume = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir and Path(checkpoint_dir).is_dir() else None
    budget = TokenBudget(rollout, token_budget)
    callbacks: list = [budget]
    if report_to == "dvclive":
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        live = Live(dir=str(logging_dir or "dvclive"), resume=resume is not None, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))

    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(model_dir, rollout, checkpoint_dir or scratch,
                               save_steps=save_steps if checkpoint_dir else None, callbacks=callbacks, **hparams)
        if resume:
            log.info("GRPO: resuming from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)

    model = trainer.model.merge_and_unload() if isinstance(trainer.model, PeftModel) else trainer.model
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
        "lora": isinstance(trainer.model, PeftModel),
    }
