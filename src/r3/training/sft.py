"""Supervised fine-tuning for the `prime` stage, with loss only on the assistant turns that should be learned.

A priming example is `{"messages": [...], "train_turns": [indices of the assistant turns that carry loss]}`:
a plain trace is `[user, assistant]` with `train_turns=[1]`; a reflect-retry dialogue is `[user, attempt,
user, reflection, user, retry]` with `train_turns=[3, 5]` (the failed attempt is context, never trained).

The label mask is built here, not by TRL: SmolLM2's ChatML template has no `{% generation %}` markers. The
dialogue is rendered prefix by prefix (each rendered prefix must be a string prefix of the next, else the
template is rejected) and tokenized piece by piece, so a turn starts on the token boundary it has at
inference. A trained turn's loss covers its content and the template's end-of-turn text up to and
including `tokenizer.eos_token` (`<|im_end|>`), so the model learns to stop; the header
(`<|im_start|>assistant\\n`) and the newline after `<|im_end|>` (template glue, never generated: decoding
stops at eos) are context. A template whose turn end has no eos token has its whole turn end trained.

TRL 1.16's `SFTTrainer` treats a dataset with an `input_ids` column as tokenized and uses a `labels`
column as is (-100 = no loss); its `DataCollatorForLanguageModeling` pads labels with -100.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint

log = logging.getLogger("r3")
IGNORE = -100  # the label of a token outside the loss
MAX_LENGTH = 1024


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _extends(prefix: str, text: str) -> str:
    """`text` minus `prefix`; the template must render every prefix of a dialogue as a prefix of it."""
    if not text.startswith(prefix):
        raise ValueError("the chat template is not prefix-stable (a rendered prefix of the dialogue is not a "
                         f"prefix of the longer rendering): {prefix[-80:]!r} vs {text[len(prefix) - 80:][:120]!r}")
    return text[len(prefix):]


def render_pieces(tokenizer, messages: list[dict], train_turns: list[int]) -> list[tuple[str, bool]]:
    """The rendered dialogue as (text, trained) pieces whose concatenation is the full rendering."""
    trained = set(train_turns)
    for i in trained:
        if not 0 <= i < len(messages) or messages[i]["role"] != "assistant":
            raise ValueError(f"train turn {i} is not an assistant message")
    eos = tokenizer.eos_token
    pieces, done = [], ""
    for i in range(len(messages)):
        full = _render(tokenizer, messages[: i + 1])
        if i in trained:
            prompt = _render(tokenizer, messages[:i], generation_prompt=True)
            header, turn = _extends(done, prompt), _extends(prompt, full)
            content = messages[i]["content"]
            if not turn.startswith(content):
                raise ValueError(f"the chat template rewrites assistant turn {i}; cannot locate its content")
            end = turn[len(content):]
            cut = end.index(eos) + len(eos) if eos and eos in end else len(end)
            pieces += [(header, False), (content, True), (end[:cut], True), (end[cut:], False)]
        else:
            pieces.append((_extends(done, full), False))
        done = full
    return [(text, train) for text, train in pieces if text]


def tokenize_example(tokenizer, messages: list[dict], train_turns: list[int],
                     max_length: int | None) -> dict[str, list[int]] | None:
    """`{"input_ids", "labels"}` (labels = -100 off the trained turns), cut to `max_length` tokens.

    Returns None when truncation would leave no trained token (a partly cut turn keeps its prefix, without
    its end-of-turn token).
    """
    input_ids, labels = [], []
    for text, train in render_pieces(tokenizer, messages, train_turns):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if train else [IGNORE] * len(ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


def build_dataset(tokenizer, examples: list[dict[str, Any]], max_length: int | None) -> Dataset:
    """Tokenized rows (`input_ids`, `labels`) in the form SFTTrainer takes as already processed."""
    rows = [tokenize_example(tokenizer, ex["messages"], ex["train_turns"], max_length) for ex in examples]
    kept = [row for row in rows if row is not None]
    if len(kept) < len(rows):
        log.warning("SFT: dropped %d of %d examples whose trained tokens lie beyond max_length=%s",
                    len(rows) - len(kept), len(rows), max_length)
    if not kept:
        raise ValueError("SFT: no example has a trained token within max_length")
    return Dataset.from_list(kept)


def _bf16_supported() -> bool:
    # CPU autocast runs bf16 everywhere (fast with AVX-512 bf16); on CUDA it needs Ampere or newer
    return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True


def make_trainer(model_dir: str | Path, dataset: Dataset, tokenizer, output_dir: str | Path, *, epochs: float = 1.0,
                 learning_rate: float = 5e-5, batch_size: int = 8, grad_accum: int = 1,
                 max_length: int | None = MAX_LENGTH, seed: int = 0, weight_decay: float = 0.0,
                 warmup_steps: float = 0, max_steps: int = -1,
                 lora: dict | None = None, bf16: bool = False, save_steps: int | None = None,
                 save_total_limit: int = 2, logging_steps: int = 10, callbacks: list | None = None):
    """A TRL `SFTTrainer` for a tokenized `dataset`: full fine-tuning, or LoRA when `lora["enabled"]`.

    Checkpoints every `save_steps` steps into `output_dir` (none when `save_steps` is None). bf16 means
    autocast with float32 master weights; on the CPU (`use_cpu`) that is torch's CPU autocast.
    """
    from trl import SFTConfig, SFTTrainer

    if bf16 and not _bf16_supported():
        log.warning("SFT: bf16 requested but this GPU lacks it; training in float32")
        bf16 = False
    config = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=epochs, max_steps=max_steps, learning_rate=learning_rate,
        weight_decay=weight_decay, warmup_steps=warmup_steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, seed=seed, max_length=max_length, bf16=bf16,
        use_cpu=not torch.cuda.is_available(), save_strategy="no" if save_steps is None else "steps",
        save_steps=save_steps or 500, save_total_limit=save_total_limit, logging_steps=logging_steps,
        report_to="none", dataloader_num_workers=0,
        # batches of similar lengths: far less padding (the FC demos range from ~300 to ~1,600 tokens)
        train_sampling_strategy="group_by_length")
    peft_config = None
    if lora and lora.get("enabled", True):
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                                 lora_dropout=lora.get("dropout", 0.0),
                                 target_modules=lora.get("target_modules", "all-linear"), task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=callbacks or [])


def train_sft(model_dir: str | Path, examples: list[dict[str, Any]], out_dir: str | Path, *,
              checkpoint_dir: str | Path | None = None, save_steps: int = 50, report_to: str = "none",
              logging_dir: str | Path | None = None, **hparams) -> dict[str, Any]:
    """Fine-tune `model_dir` on `examples`; save a plain HF model dir (LoRA merged) with its tokenizer.

    `hparams` are `make_trainer`'s: epochs, learning_rate, batch_size, grad_accum, max_length, seed, weight_decay,
    warmup_steps (a float < 1 is a fraction of the steps), max_steps, lora (a dict: enabled, r, alpha, dropout,
    target_modules), bf16, save_total_limit, logging_steps. The loss is the mean NLL over the trained tokens of
    each optimizer step (TRL normalises by the trained-token count across gradient accumulation). With
    `checkpoint_dir`, checkpoints go there every `save_steps` steps and training resumes from the last one
    (the caller keys that folder by the training params, so a stale checkpoint is never resumed).
    `report_to="dvclive"` logs to `logging_dir` through transformers' `DVCLiveCallback`.
    """
    if report_to not in ("none", "dvclive"):
        raise ValueError(f"report_to must be 'none' or 'dvclive', got {report_to!r}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = build_dataset(tokenizer, examples, hparams.get("max_length", MAX_LENGTH))
    resume = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir and Path(checkpoint_dir).is_dir() else None
    callbacks = []
    if report_to == "dvclive":
        from dvclive import Live
        from transformers.integrations import DVCLiveCallback

        live = Live(dir=str(logging_dir or "dvclive"), resume=resume is not None, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))

    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(model_dir, dataset, tokenizer, checkpoint_dir or scratch,
                               save_steps=save_steps if checkpoint_dir else None, callbacks=callbacks, **hparams)
        if resume:
            log.info("SFT: resuming from %s", resume)
        result = trainer.train(resume_from_checkpoint=resume)

    lora = isinstance(trainer.model, PeftModel)
    model = trainer.model.merge_and_unload() if lora else trainer.model
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    runtime = result.metrics["train_runtime"]
    processed = trainer._total_train_tokens  # non-padding tokens this call fed through the model (TRL's count)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "examples": len(dataset), "dropped": len(examples) - len(dataset),
        "trained_tokens": sum(sum(label != IGNORE for label in row) for row in dataset["labels"]),
        "total_tokens": sum(len(row) for row in dataset["input_ids"]),
        "global_step": trainer.state.global_step, "resumed_from": resume,
        "train_runtime": runtime, "tokens_per_s": processed / runtime if runtime else 0.0,
        "train_loss": result.training_loss, "final_loss": losses[-1] if losses else result.training_loss,
        "bf16": trainer.args.bf16, "lora": lora,
    }
