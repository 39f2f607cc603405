"""SFT for priming: the label mask, that TRL keeps it, the loss it gives, training, LoRA and resume."""

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_model import build_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from r3.training.sft import IGNORE, build_dataset, make_trainer, tokenize_example, train_sft

torch.set_num_threads(1)

ATTEMPT, REFLECTION, RETRY = "<answer>1+2</answer>", "I added only two numbers.", "<answer>1+2+3</answer>"


def dialogue(k: int = 0) -> dict:
    return {"messages": [
        {"role": "user", "content": f"Use 1 2 3 to make {6 + k}."},
        {"role": "assistant", "content": ATTEMPT},
        {"role": "user", "content": "You failed. Reflect."},
        {"role": "assistant", "content": REFLECTION},
        {"role": "user", "content": "Try again."},
        {"role": "assistant", "content": RETRY},
    ], "train_turns": [3, 5]}


def trace(k: int = 0) -> dict:
    return {"messages": [{"role": "user", "content": f"Use 2 3 to make {5 + k}."},
                         {"role": "assistant", "content": f"2+3 = 5. <answer>2+3</answer> #{k}"}],
            "train_turns": [1]}


def trained_runs(tokenizer, row: dict) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_reflect_retry_trains_reflection_and_retry_only(tokenizer):
    ex = dialogue()
    row = tokenize_example(tokenizer, ex["messages"], ex["train_turns"], max_length=None)
    # the pieces tokenize to the whole rendering, and only the reflection and the retry (each with <|im_end|>) train
    rendered = tokenizer.apply_chat_template(ex["messages"], tokenize=False)
    assert tokenizer.decode(row["input_ids"]) == rendered
    assert trained_runs(tokenizer, row) == [REFLECTION + "<|im_end|>", RETRY + "<|im_end|>"]
    # the failed attempt is in the input but never trained
    start = rendered.index(ATTEMPT)
    n_before = len(tokenizer(rendered[:start], add_special_tokens=False)["input_ids"])
    n_attempt = len(tokenizer(ATTEMPT, add_special_tokens=False)["input_ids"])
    assert tokenizer.decode(row["input_ids"][n_before:n_before + n_attempt]) == ATTEMPT
    assert set(row["labels"][n_before:n_before + n_attempt + 1]) == {IGNORE}  # its <|im_end|> too
    # no header token is trained
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert all(label != im_start for label in row["labels"])


def test_plain_trace_trains_the_answer_only(tokenizer):
    ex = trace()
    row = tokenize_example(tokenizer, ex["messages"], ex["train_turns"], max_length=None)
    assert trained_runs(tokenizer, row) == [ex["messages"][1]["content"] + "<|im_end|>"]
    assert row["labels"][-1] == IGNORE  # the newline after <|im_end|> is template glue


def test_bad_inputs_are_rejected(tokenizer):
    ex = dialogue()
    with pytest.raises(ValueError, match="not an assistant"):
        tokenize_example(tokenizer, ex["messages"], [2], None)
    unstable = build_tokenizer()  # marks the last message: earlier renderings are not prefixes of later ones
    unstable.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                              "{% if loop.last %}!{% endif %}<|im_end|>\n{% endfor %}"
                              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(ValueError, match="prefix-stable"):
        tokenize_example(unstable, ex["messages"], ex["train_turns"], None)


def test_truncation_drops_examples_without_trained_tokens(tokenizer):
    ex = dialogue()
    full = tokenize_example(tokenizer, ex["messages"], ex["train_turns"], None)
    first_trained = next(i for i, label in enumerate(full["labels"]) if label != IGNORE)
    assert tokenize_example(tokenizer, ex["messages"], ex["train_turns"], first_trained) is None
    cut = tokenize_example(tokenizer, ex["messages"], ex["train_turns"], first_trained + 3)
    assert len(cut["input_ids"]) == first_trained + 3 and cut["labels"] == full["labels"][:first_trained + 3]
    dataset = build_dataset(tokenizer, [ex, trace()], max_length=first_trained)
    assert len(dataset) == 1  # the dialogue is dropped, the short trace kept


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = [dialogue(), trace(), dialogue(1), trace(1)]
    dataset = build_dataset(tok, examples, max_length=512)
    trainer = make_trainer(tiny_model_dir, dataset, tok, tmp_path / "ckpt", batch_size=4, max_length=512)
    return trainer, dataset


def test_trl_collator_keeps_the_mask(trainer):
    trainer, dataset = trainer
    batch = next(iter(trainer.get_train_dataloader()))  # what the trainer feeds the model (shuffled)
    assert batch["input_ids"].shape[0] == len(dataset)
    rows = {tuple(row["input_ids"]): row["labels"] for row in dataset}
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        n = int((labels != IGNORE).nonzero().max()) + 2  # the row's length: its last trained token, then "\n"
        assert labels[:n].tolist() == rows[tuple(ids[:n].tolist())]  # -100 exactly where the mask is 0
        assert (labels[n:] == IGNORE).all()  # padding (pad = <|im_end|>) is not trained ...
    im_end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    assert (batch["labels"] == im_end).sum() == 6  # ... while each trained turn's <|im_end|> is


def test_loss_is_the_mean_nll_of_trained_tokens(trainer):
    trainer, _ = trainer
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    trained = targets.reshape(-1) != IGNORE
    assert torch.allclose(loss, nll[trained].mean(), atol=1e-5)
    assert not torch.allclose(loss, nll[batch["attention_mask"][:, 1:].reshape(-1).bool()].mean(), atol=1e-3)


def batch_loss(model, tokenizer, examples) -> float:
    rows = build_dataset(tokenizer, examples, 512)
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = model(input_ids=ids).logits[0, :-1]
            mask = labels[0, 1:] != IGNORE
            total += F.cross_entropy(logits[mask], labels[0, 1:][mask], reduction="sum").item()
            count += int(mask.sum())
    return total / count


EXAMPLES = [dialogue(k) for k in range(3)] + [trace(k) for k in range(3)]
FAST = dict(learning_rate=1e-2, weight_decay=0.0, batch_size=3, max_length=512, logging_steps=1)


def test_train_sft_full_fine_tune(tiny_model_dir, tmp_path):
    stats = train_sft(tiny_model_dir, EXAMPLES, tmp_path / "out", max_steps=6, **FAST)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tok.chat_template
    assert not torch.equal(base.model.layers[0].mlp.up_proj.weight, tuned.model.layers[0].mlp.up_proj.weight)
    assert batch_loss(tuned, tok, EXAMPLES) < batch_loss(base, tok, EXAMPLES) - 0.5
    assert stats["examples"] == 6 and stats["dropped"] == 0 and stats["global_step"] == 6
    assert 0 < stats["trained_tokens"] < stats["total_tokens"]
    assert stats["tokens_per_s"] > 0 and stats["final_loss"] < stats["train_loss"] * 1.5
    print("sft stats", stats)


def test_train_sft_lora_is_merged(tiny_model_dir, tmp_path):
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    stats = train_sft(tiny_model_dir, EXAMPLES, tmp_path / "out", max_steps=4, lora=lora, **FAST)
    assert stats["lora"] and not (tmp_path / "out" / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert set(tuned.state_dict()) == set(base.state_dict())  # a plain model, no lora_A/lora_B
    assert not torch.equal(base.model.layers[0].self_attn.q_proj.weight, tuned.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(base.model.layers[0].mlp.up_proj.weight, tuned.model.layers[0].mlp.up_proj.weight)


def test_train_sft_resumes_from_checkpoint(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = train_sft(tiny_model_dir, EXAMPLES, tmp_path / "a", checkpoint_dir=ckpt, save_steps=1, max_steps=2, **FAST)
    assert first["resumed_from"] is None and first["global_step"] == 2 and (ckpt / "checkpoint-2").is_dir()
    second = train_sft(tiny_model_dir, EXAMPLES, tmp_path / "b", checkpoint_dir=ckpt, save_steps=1, max_steps=4,
                       **FAST)
    assert second["resumed_from"].endswith("checkpoint-2") and second["global_step"] == 4
    history = json.loads((ckpt / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3, 4]


def test_bf16_autocasts_with_float32_weights(tiny_model_dir, tmp_path):
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = make_trainer(tiny_model_dir, build_dataset(tok, EXAMPLES, 512), tok, tmp_path / "ckpt", bf16=True,
                           max_steps=1, **{k: v for k, v in FAST.items() if k != "max_length"})
    seen = []
    trainer.model.model.layers[0].mlp.up_proj.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    trainer.train()
    assert set(seen) == {torch.bfloat16} and trainer.model.dtype == torch.float32


def test_train_sft_logs_to_dvclive(tiny_model_dir, tmp_path):
    stats = train_sft(tiny_model_dir, EXAMPLES, tmp_path / "out", max_steps=2, bf16=True, report_to="dvclive",
                      logging_dir=tmp_path / "live", **FAST)
    assert stats["global_step"] == 2
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert "loss" in metrics["train"]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").dtype == torch.float32
