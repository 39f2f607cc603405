"""GRPO training with the R3 rollout on TRL's GRPOTrainer: what enters the loss, how a step moves the policy,
checkpoint resume and the generation budget. Rollouts are scripted (deterministic texts and verdicts) except
where the tiny model's own samples are trained on."""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from conftest import ScriptedBackend, countdown_queries
from safetensors.torch import load_file
from transformers import AutoTokenizer, TrainerCallback

from r3.inference import Request, SamplingParams
from r3.protocol import ProtocolConfig
from r3.tasks import get_task
from r3.tasks.base import Verdict
from r3.training.grpo import make_trainer, train_grpo
from r3.training.rollout import Query, Rollout

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: the tiny model runs on one thread

COUNTDOWN = get_task("countdown")
# a verifier the tests control: a retry is right iff it says RIGHT
SCRIPTED_TASK = replace(COUNTDOWN, verify=lambda text, truth: Verdict(
    "RIGHT" in text, "correct" if "RIGHT" in text else "missed_target"))
PROTO = ProtocolConfig(
    reflection_instruction="REFLECT", retry_instruction="RETRY",
    attempt=SamplingParams(max_new_tokens=10, temperature=1.0),
    reflection=SamplingParams(max_new_tokens=8, temperature=1.0), prefill="<answer>")
GOOD, BAD = "Add all three numbers.", "zzz qqq"  # two reflections; position 0 / 1 of every group


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _queries(task=SCRIPTED_TASK, n=2) -> list[Query]:
    return countdown_queries(task, n)


@dataclass
class ScriptedRollout(Rollout):
    """The r3 rollout over a scripted backend; raises when asked for step `crash_at` (an interruption).
    `steps` records the global step of every call."""

    crash_at: int | None = None
    steps: list[int] = field(default_factory=list)

    def __call__(self, prompts, trainer):
        self.steps.append(trainer.state.global_step)
        if trainer.state.global_step == self.crash_at:
            raise Interrupted(f"interrupted at step {self.crash_at}")
        return super().__call__(prompts, trainer)


class Interrupted(Exception):
    pass


def _rollout(tok, retries, reflections=(GOOD, BAD), method="r3", n=2, **kw) -> ScriptedRollout:
    """Reflection i of a batch is `reflections[i % len]`; a retry is `retries[the reflection in its context]`,
    a plain-GRPO attempt i is `retries[reflections[i % len]]`."""
    script = ScriptedBackend(tok, PROTO, reflections, retry=lambda r, i: retries[r.messages[-2]["content"]],
                             attempt=lambda r, i: retries[reflections[i % len(reflections)]])
    return ScriptedRollout(method, _queries(n=n), {"countdown": PROTO}, engine=script, **kw)


def _trainer(model_dir, rollout, out_dir, **kw):
    kw = {"num_generations": 2, "queries_per_step": 2, "max_steps": 1, "learning_rate": 1e-2, **kw}
    trainer = make_trainer(model_dir, rollout, out_dir, **kw)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; `compute_loss` outside it needs it
    return trainer


def _batch(rollout, g=2) -> list[dict]:
    """A generation batch as TRL's sampler makes it: each dataset row, g consecutive copies."""
    return [dict(row) for row in rollout.dataset_rows() for _ in range(g)]


def _loss_and_grads(trainer, inputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in trainer.model.parameters()]


def _ids(tok, text) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def _seq_logp(model, prompt_ids, completion_ids) -> float:
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None]).sum().item()


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- what enters the loss


def test_loss_covers_the_reflection_tokens_only(tiny_model_dir, tmp_path, tok):
    rollout = _rollout(tok, {GOOD: "<answer>RIGHT</answer>", BAD: "<answer>WRONG</answer>"})
    trainer = _trainer(tiny_model_dir, rollout, tmp_path)
    inputs = trainer._generate_and_score_completions(_batch(rollout))
    prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
    P, C = prompt_ids.shape[1], completion_ids.shape[1]  # noqa: N806
    assert len(prompt_ids) == 4 and not inputs["prompt_mask"].all()  # two prompt lengths: left padding
    lengths = []
    for i in range(4):
        reflection = _ids(tok, (GOOD, BAD)[i % 2])
        n = len(reflection)
        lengths.append(n)
        # the completion is the reflection (+ eos), right padded; the retry is nowhere in the sequence
        assert completion_ids[i, :n].tolist() == reflection
        assert inputs["completion_mask"][i].tolist() == [1] * n + [0] * (C - n)
        prompt = prompt_ids[i][inputs["prompt_mask"][i].bool()].tolist()
        assert prompt == rollout.engine.encode(Request(rollout.dataset_rows()[i // 2]["prompt"]))
        text = tok.decode(torch.cat([prompt_ids[i], completion_ids[i]]))
        assert "RIGHT" not in text and "WRONG" not in text and "RETRY" not in text
    assert lengths[0] != lengths[1]  # so the shorter completion is padded

    hidden = {}

    def keep(module, args, output):  # the last hidden states: position t feeds only the logits at t
        output.retain_grad()
        hidden["h"] = output

    handle = trainer.model.get_decoder().norm.register_forward_hook(keep)
    try:
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
    finally:
        handle.remove()
    grad = hidden["h"].grad.abs().sum(-1)  # (B, P + C)
    assert grad.shape == (4, P + C)
    for i, n in enumerate(lengths):
        # position t predicts token t + 1: P - 1 .. P + n - 2 predict the reflection's tokens
        assert (grad[i, : P - 1] == 0).all(), "gradient reaches a prompt position"
        assert (grad[i, P - 1: P - 1 + n] > 0).all(), "a reflection token gets no gradient"
        assert (grad[i, P - 1 + n:] == 0).all(), "gradient reaches completion padding"


def test_retry_text_does_not_change_the_loss(tiny_model_dir, tmp_path, tok):
    short = _rollout(tok, {GOOD: "<answer>RIGHT</answer>", BAD: "<answer>WRONG</answer>"})
    long = _rollout(tok, {GOOD: "I see. <answer>RIGHT, as 1+2+3 = 6 uses every number</answer>",
                          BAD: "Hmm <answer>WRONG again ((((</answer>"})
    trainer = _trainer(tiny_model_dir, short, tmp_path)
    a = trainer._generate_and_score_completions(_batch(short))
    loss_a, grads_a = _loss_and_grads(trainer, a)
    trainer.rollout_func = long
    b = trainer._generate_and_score_completions(_batch(long))
    loss_b, grads_b = _loss_and_grads(trainer, b)
    assert torch.equal(a["completion_ids"], b["completion_ids"])
    assert torch.equal(a["advantages"], b["advantages"])
    assert loss_a.item() != 0.0
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(x, y) for x, y in zip(grads_a, grads_b, strict=True))


def test_flipped_retry_verdicts_flip_the_advantages(tiny_model_dir, tmp_path, tok):
    right_first = _rollout(tok, {GOOD: "RIGHT", BAD: "WRONG"})
    right_second = _rollout(tok, {GOOD: "WRONG", BAD: "RIGHT"})
    trainer = _trainer(tiny_model_dir, right_first, tmp_path)
    a = trainer._generate_and_score_completions(_batch(right_first))
    grads_a = _loss_and_grads(trainer, a)[1]
    assert list(trainer._logs["rewards"]["outcome_reward"])[-4:] == [1.0, 0.0, 1.0, 0.0]  # rewards [1, 0] per group
    trainer.rollout_func = right_second
    b = trainer._generate_and_score_completions(_batch(right_second))
    grads_b = _loss_and_grads(trainer, b)[1]
    assert list(trainer._logs["rewards"]["outcome_reward"])[-4:] == [0.0, 1.0, 0.0, 1.0]
    adv = a["advantages"]
    # (r - group mean) / (group std + 1e-4): rewards [1, 0] give +-0.5 / 0.7071
    assert torch.allclose(adv, torch.tensor([1.0, -1.0, 1.0, -1.0]) * 0.5 / (0.5**0.5 + 1e-4))
    assert torch.allclose(b["advantages"], -adv)
    assert all(torch.allclose(x, -y, atol=1e-7) for x, y in zip(grads_a, grads_b, strict=True))


# ---------------------------------------------------------------- what a step does


@pytest.mark.parametrize("bad_retry, moves", [("RIGHT", False), ("WRONG", True)])
def test_zero_reward_variance_leaves_the_weights_unchanged(tiny_model_dir, tmp_path, tok, bad_retry, moves):
    rollout = _rollout(tok, {GOOD: "RIGHT", BAD: bad_retry})
    trainer = _trainer(tiny_model_dir, rollout, tmp_path, weight_decay=0.0)
    before = _weights(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 1
    [logged] = [e for e in trainer.state.log_history if "reward" in e]
    assert logged["frac_reward_zero_std"] == (0.0 if moves else 1.0)
    after = _weights(trainer.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if moves:
        assert changed  # the same step with a reward difference does move the weights
    else:
        assert changed == []


class Snapshots(TrainerCallback):
    """The weights and AdamW's state after every optimizer step; `before_step` changes the script between steps."""

    def __init__(self, before_step=None):
        self.weights, self.adam, self.before_step = [], [], before_step

    def on_step_begin(self, args, state, control, **kwargs):
        if self.before_step:
            self.before_step(state.global_step)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.weights.append(_weights(model))
        state = optimizer.state_dict()["state"]
        self.adam.append({k: (v["step"].clone(), v["exp_avg"].clone()) for k, v in state.items()})


@pytest.mark.parametrize("signal_only", [True, False])
def test_a_step_without_reward_variance_after_an_informative_one_changes_nothing(tiny_model_dir, tmp_path, tok,
                                                                                  signal_only):
    retries = {GOOD: "RIGHT", BAD: "WRONG"}  # step 0: every group varies; step 1 (below): no group does
    rollout = _rollout(tok, retries)
    snaps = Snapshots(before_step=lambda step: retries.update({BAD: "RIGHT"}) if step == 1 else None)
    trainer = _trainer(tiny_model_dir, rollout, tmp_path, max_steps=2, weight_decay=0.0,
                       signal_only=signal_only, callbacks=[snaps])
    before = _weights(trainer.model)
    trainer.train()
    zero_std = [e["frac_reward_zero_std"] for e in trainer.state.log_history if "reward" in e]
    assert zero_std == [0.0, 1.0]
    first, second = snaps.weights
    assert any(not torch.equal(before[k], first[k]) for k in before)  # the informative step moved the weights
    moved = [k for k in first if not torch.equal(first[k], second[k])]
    if signal_only:  # skipped: weights and Adam's state bit-identical
        assert moved == [] and trainer.skipped_steps == 1
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                   for a, b in zip(snaps.adam[0].values(), snaps.adam[1].values(), strict=True))
    else:  # TRL's own behaviour: momentum keeps moving the weights on a zero gradient
        assert moved


@pytest.mark.parametrize("signal_only", [True, False])
def test_the_loss_normaliser_counts_only_tokens_with_an_advantage(tiny_model_dir, tmp_path, tok, signal_only):
    # reflections by position in the batch: query 0 gets (GOOD, BAD), a reward difference; query 1 (GOOD, GOOD), none
    rollout = _rollout(tok, {GOOD: "RIGHT", BAD: "WRONG"}, reflections=(GOOD, BAD, GOOD, GOOD))
    trainer = _trainer(tiny_model_dir, rollout, tmp_path, signal_only=signal_only)
    inputs = trainer._generate_and_score_completions(_batch(rollout))
    assert inputs["advantages"][:2].ne(0).all() and inputs["advantages"][2:].eq(0).all()
    tokens = inputs["completion_mask"].sum(dim=1)
    expected = tokens[:2].sum() if signal_only else tokens.sum()
    assert inputs["num_items_in_batch"].item() == expected.item()
    assert expected.item() > 0 and tokens[2:].sum().item() > 0


def test_micro_batches_without_an_advantage_are_not_computed(tiny_model_dir, tmp_path, tok, monkeypatch):
    # query 0's reflections (GOOD, BAD) differ in reward, query 1's (GOOD, GOOD) do not: in micro-batches of one
    # sequence, two of the four carry no advantage and no gradient, so their forward and backward are skipped,
    # and the step ends with exactly the weights that computing them gives
    def run(skip: bool, out: Path) -> tuple[dict, int, int]:
        rollout = _rollout(tok, {GOOD: "RIGHT", BAD: "WRONG"}, reflections=(GOOD, BAD, GOOD, GOOD))
        trainer = _trainer(tiny_model_dir, rollout, out, micro_batch_size=1, weight_decay=0.0)
        if not skip:
            monkeypatch.setattr(trainer, "_skips_zero_advantage", lambda: False)
        forwards = []
        trainer.model.register_forward_hook(lambda *a: forwards.append(torch.is_grad_enabled()))
        trainer.train()
        return _weights(trainer.model), sum(forwards), trainer.skipped_micro_batches

    skipped, skipped_forwards, n_skipped = run(True, tmp_path / "skip")
    computed, computed_forwards, n_computed = run(False, tmp_path / "compute")
    assert (n_skipped, n_computed) == (2, 0)
    assert (skipped_forwards, computed_forwards) == (2, 4)  # forwards with gradients: one per computed sequence
    start = _weights(_trainer(tiny_model_dir, _rollout(tok, {GOOD: "RIGHT"}), tmp_path / "start").model)
    assert any(not torch.equal(start[k], skipped[k]) for k in start)  # the informative sequences did train
    assert all(torch.equal(skipped[k], computed[k]) for k in skipped)


def test_zero_advantage_micro_batches_are_computed_when_the_loss_has_a_kl_term(tiny_model_dir, tmp_path, tok):
    rollout = _rollout(tok, {GOOD: "RIGHT", BAD: "WRONG"}, reflections=(GOOD, BAD, GOOD, GOOD))
    trainer = _trainer(tiny_model_dir, rollout, tmp_path, micro_batch_size=1, beta=0.1)
    trainer.train()
    assert trainer.skipped_micro_batches == 0  # the KL term has a gradient without an advantage


def test_a_step_raises_the_rewarded_reflections_logprob(tiny_model_dir, tmp_path, tok):
    rollout = _rollout(tok, {GOOD: "RIGHT", BAD: "WRONG"})
    trainer = _trainer(tiny_model_dir, rollout, tmp_path, learning_rate=1e-2)
    prompts = [rollout.engine.encode(Request(row["prompt"])) for row in rollout.dataset_rows()]

    def logps():
        return [(_seq_logp(trainer.model, p, _ids(tok, GOOD)), _seq_logp(trainer.model, p, _ids(tok, BAD)))
                for p in prompts]

    before = logps()
    trainer.train()
    after = logps()
    for (good0, bad0), (good1, bad1) in zip(before, after, strict=True):
        assert good1 > good0 + 0.1  # the rewarded reflection became more likely
        assert bad1 < bad0 - 0.1  # its unrewarded sibling less likely


@pytest.mark.parametrize("method", ["r3", "grpo"])
def test_training_on_the_tiny_models_own_samples_changes_the_weights(tiny_model_dir, engine_to_restore, tmp_path,
                                                                    method):
    # the tiny random model never solves countdown; this verifier rewards an even-length retry / attempt
    task = replace(COUNTDOWN, verify=lambda text, truth: Verdict(len(text) % 2 == 0, "correct"))
    rollout = Rollout(method, _queries(task, n=3), {"countdown": PROTO}, engine=engine_to_restore)
    stats = train_grpo(tiny_model_dir, rollout, tmp_path / "out", max_steps=2, num_generations=4,
                       queries_per_step=2, learning_rate=1e-2)
    assert stats["global_step"] == 2 and stats["resumed_from"] is None and stats["lora"] is False
    assert stats["frac_reward_zero_std"] < 1.0  # some group had a reward difference
    assert stats["generated_tokens"] == rollout.generated_tokens > 0
    if method == "r3":
        assert stats["retry_success"] is not None
    else:
        assert stats["retry_success"] is None
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    trained = load_file(tmp_path / "out" / "model.safetensors")
    assert base.keys() == trained.keys()
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    assert (tmp_path / "out" / "tokenizer.json").exists()


# ---------------------------------------------------------------- resume and budget


def _tokens_per_step(tok, retries, reflections=(GOOD, BAD), rows=4) -> int:
    """Generated tokens of one scripted step: each row's reflection and retry, eos included."""
    per_row = [len(_ids(tok, r)) + len(_ids(tok, retries[r])) for r in reflections]
    return sum(per_row[i % len(per_row)] for i in range(rows))


def test_training_resumes_from_the_last_checkpoint(tiny_model_dir, tmp_path, tok):
    retries = {GOOD: "RIGHT", BAD: "WRONG"}
    per_step = _tokens_per_step(tok, retries)
    ck = tmp_path / "ck"
    hp = {"max_steps": 3, "num_generations": 2, "queries_per_step": 2, "learning_rate": 1e-3}
    first = _rollout(tok, retries, n=3, crash_at=2)
    with pytest.raises(Interrupted):
        train_grpo(tiny_model_dir, first, tmp_path / "out1", checkpoint_dir=ck, save_steps=1, **hp)
    assert (ck / "checkpoint-2").is_dir() and not (ck / "checkpoint-3").exists()
    assert first.steps == [0, 1, 2] and first.generated_tokens == 2 * per_step
    saved = json.loads((ck / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["global_step"] == 2
    assert saved["stateful_callbacks"]["TokenBudget"]["attributes"]["spent"] == 2 * per_step

    second = _rollout(tok, retries, n=3)  # a fresh process: its count starts at 0
    stats = train_grpo(tiny_model_dir, second, tmp_path / "out2", checkpoint_dir=ck, save_steps=1, **hp)
    assert stats["resumed_from"] is not None and stats["resumed_from"].endswith("checkpoint-2")
    assert stats["global_step"] == 3
    assert second.steps == [2]  # only the missing step ran
    assert (ck / "checkpoint-3").is_dir()
    # the generation count carries on from the checkpoint instead of restarting
    assert second.generated_tokens == per_step  # this process's own tokens: the one step it ran
    assert stats["generated_tokens"] == 3 * per_step


def test_token_budget_stops_training_early(tiny_model_dir, tmp_path, tok):
    retries = {GOOD: "RIGHT", BAD: "WRONG"}
    per_step = _tokens_per_step(tok, retries)
    rollout = _rollout(tok, retries, n=3)
    stats = train_grpo(tiny_model_dir, rollout, tmp_path / "out", token_budget=per_step + 1, max_steps=5,
                       num_generations=2, queries_per_step=2, learning_rate=1e-3)
    assert stats["global_step"] == 2 < 5  # step 1 spent per_step < budget, step 2 crossed it
    assert stats["generated_tokens"] == 2 * per_step >= stats["token_budget"]
    assert (tmp_path / "out" / "model.safetensors").exists()
