"""train@<task>: R3 GRPO (or the plain-GRPO control) on the task's failure set, from the selected policy.

`train.method: r3` rewards a reflection by the verdict on the retry it leads to; `grpo` rewards the 1st
attempt directly (same queries, same generation budget). The model lands in models/<method>/<task>;
checkpoints live in a persistent folder keyed by a hash of everything that shapes the run.

Every step logs the share of sampled answers (grpo: attempts, r3: retries) that show each cognitive behaviour
(`behaviour/<name>`, the rules classifier). With `train.eval_every: N` the first-try accuracy on the
validation split (`train.eval_items` of it) is measured before training and every N steps
(`eval/first_try_acc`; the whole curve in the metrics' `validation_curve`).

`python stages/train.py --plan [--gpu-gib 80]` prints the micro-batch, the gradient accumulation and the
memory per device that the current params need, and exits 1 when they do not fit (r3.training.plan).
Under `accelerate launch` (train.num_processes > 1, see dvc.yaml) every rank trains and rank 0 writes.
"""

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from r3 import cli, configs
from r3.analysis.rules import RulesClassifier
from r3.artifacts import atomic_path, content_hash, run_key, write_json
from r3.dataset import load_rows
from r3.errors import R3Error
from r3.inference.server_backend import ServerBackend
from r3.params import Params
from r3.prompts import build_prompt
from r3.tasks import TASKS, get_task
from r3.training.grpo import train_grpo
from r3.training.plan import format_plan, plan_from_params
from r3.training.rollout import METHODS, Query, Rollout, failure_queries
from r3.training.validation import HeldOut, check_interval

log = cli.log

def main(args):
    # under torchrun / accelerate launch: join the process group (gloo on CPU, which accelerate only takes when
    # told cpu=True) before anything else, so that every later PartialState sees the distributed run
    state = PartialState(cpu=not torch.cuda.is_available())
    p = Params.load(args.params)
    task = get_task(args.task)
    seed = p.get("seed", int)
    policy = p.get("policy", str, choices=configs.POLICIES)
    t = p.section("train")
    method = t.get("method", str, choices=METHODS)
    temperature = t.get("temperature", float, min_value=0.0)
    top_p = t.get("top_p", float, min_value=0.0, max_value=1.0)
    proto = configs.protocol_config(p, task, temperature, top_p, seed)
    reflection_tokens = t.get("max_reflection_tokens", (int, type(None)), None, min_value=1)
    retry_tokens = t.get("max_retry_tokens", (int, type(None)), None, min_value=1)
    proto = replace(proto, reflection=replace(proto.reflection, max_new_tokens=reflection_tokens
                                              or proto.reflection.max_new_tokens),
                    attempt=replace(proto.attempt, max_new_tokens=retry_tokens or proto.attempt.max_new_tokens))
    max_prompt_tokens = t.get("max_prompt_tokens", int, min_value=16)
    hparams = dict(
        num_generations=t.get("num_generations", int, min_value=2),
        queries_per_step=t.get("queries_per_step", int, min_value=1),
        learning_rate=t.get("learning_rate", float, min_value=0.0), beta=t.get("beta", float, min_value=0.0),
        max_steps=t.get("max_steps", int, min_value=1),
        micro_batch_size=t.get("micro_batch_size", (int, type(None)), None, min_value=1),
        gradient_checkpointing=t.get("gradient_checkpointing", bool), signal_only=t.get("signal_only", bool),
        loss_type=t.get("loss_type", str, choices=("grpo", "dr_grpo", "dapo", "bnpo")),
        scale_rewards=t.get("scale_rewards", str, choices=("group", "batch", "none")),
        temperature=temperature, top_p=top_p, seed=seed, bf16=t.get("bf16", bool),
        max_completion_length=(proto.reflection if method == "r3" else proto.attempt).max_new_tokens,
        lora=t.get("lora", dict) if t.get("lora.enabled", bool) else None)
    # one budget for every task, or one per task ({countdown: N, ...}: the GRPO control at R3's own cost)
    token_budget = t.get("token_budget", (int, dict, type(None)), None)
    if isinstance(token_budget, dict):
        unknown = sorted(set(token_budget) - set(TASKS))
        if unknown:
            raise R3Error(f"params.yaml: field 'train.token_budget' names unknown task(s) {unknown}; "
                          f"choose from {list(TASKS)}")
        token_budget = t.get(f"token_budget.{task.name}", (int, type(None)), None, min_value=1)
    elif token_budget is not None:
        token_budget = t.get("token_budget", int, min_value=1)
    eval_every = t.get("eval_every", (int, type(None)), None)
    check_interval(eval_every, hparams["max_steps"])
    held_out = validation_items(p, task, args.data) if eval_every else None

    queries = failure_queries(args.failures, task)
    if not queries:
        raise R3Error(f"{args.failures}: the failure set is empty; nothing to train on (see failures.keep)")
    tokenizer = AutoTokenizer.from_pretrained(configs.model_dir(policy))
    # one filter for both methods, so that R3 and the GRPO control train on the same queries
    long = [q for q in queries if prompt_tokens(tokenizer, q, proto) > max_prompt_tokens]
    if long:
        log.warning("%s: %d of %d queries have prompts over train.max_prompt_tokens=%d; left out", task.name,
                    len(long), len(queries), max_prompt_tokens)
        queries = [q for q in queries if q not in long]
    if not queries:
        raise R3Error(f"train.max_prompt_tokens={max_prompt_tokens}: every query's prompt is longer")
    # rollouts: the trainer syncs its weights into this engine each step (a separate server with server_url)
    server_url = t.get("server_url", (str, type(None)), None)
    kv_cache_gib = t.get("kv_cache_gib", (int, type(None)), None, min_value=1)
    engine = (ServerBackend(server_url, str(configs.model_dir(policy))) if server_url
              else configs.backend(p, policy, kv_cache_gib=kv_cache_gib))
    rollout = Rollout(method, queries, {task.name: proto}, engine=engine, zero_copied=t.get("zero_copied_reward", bool),
                      behaviours=RulesClassifier())

    # resume only a run made from the same starting weights, training data and params
    params = p.as_dict()
    key = run_key(params={k: params.get(k) for k in ("seed", "train", "inference", "model")}, policy=policy,
                  task=task.name, proto=repr(proto), queries=[q.id for q in queries],
                  policy_sha=content_hash(configs.model_dir(policy)), failures_sha=content_hash(args.failures))
    # under `accelerate launch` every rank trains; only the main process writes the model and the metrics
    main_process = state.is_main_process
    with atomic_path(args.out, is_dir=True) if main_process else tempfile.TemporaryDirectory() as tmp:
        stats = train_grpo(configs.model_dir(policy), rollout, tmp, checkpoint_dir=Path(args.checkpoints) / key,
                           save_steps=t.get("save_steps", int, min_value=1), token_budget=token_budget,
                           report_to="dvclive", logging_dir=args.live, held_out=held_out, eval_every=eval_every,
                           **hparams)
    log.info("rank %d of %d: finished at step %d", state.process_index, state.num_processes, stats["global_step"])
    if not main_process:
        return
    stats.update(method=method, policy=policy, left_out_long_prompts=len(long))
    write_json(stats, args.metrics)
    log.info("%s/%s: %d steps, %d generated tokens, reward %.3f, zero-variance groups %.2f, %.0f s", task.name,
             method, stats["global_step"], stats["generated_tokens"], stats["reward_mean"] or 0.0,
             stats["frac_reward_zero_std"] or 0.0, stats["train_runtime"])


def validation_items(p: Params, task, data: str | None) -> HeldOut:
    """The validation items of the curve (`train.eval_items` of them; null: all), prompted as evaluation
    prompts them and drawn at baseline.temperature, each first attempt within the protocol's budget."""
    limit = p.get("train.eval_items", (int, type(None)), None, min_value=1)
    if data is None:
        raise R3Error("train.eval_every needs the dataset (--data) for its validation items")
    rows = load_rows(data, task.name)
    items = [r for r in rows if r.split == "validation"][:limit]
    if not items:
        raise R3Error(f"{data}: no validation items for train.eval_every")
    prompt_cfg = configs.prompt_config(p, task)
    shots = [(r.inputs, r.ground_truth) for r in rows if r.split == "train"][: prompt_cfg.few_shot]
    base = p.section("baseline")
    proto = configs.protocol_config(p, task, base.get("temperature", float, min_value=0.0),
                                    base.get("top_p", float, min_value=0.0, max_value=1.0), p.get("seed", int))
    return HeldOut(task, [build_prompt(task, r.inputs, prompt_cfg, shots) for r in items],
                   [r.ground_truth for r in items], replace(proto.attempt, n=1), prompt_cfg.prefill)


def prompt_tokens(tokenizer, q: Query, proto) -> int:
    """Tokens of the longer of the query's two trained prompts: R3's (task prompt, failed attempt, reflection
    instruction) and GRPO's (task prompt with the prefill)."""
    def tokens(method: str) -> int:
        text = tokenizer.apply_chat_template(q.prompt(method, proto), tokenize=False, add_generation_prompt=True)
        text += proto.prefill if method == "grpo" else ""
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return max(tokens(m) for m in METHODS)


def show_plan(args):
    plan = plan_from_params(Params.load(args.params).as_dict(), args.gpu_gib)
    print(format_plan(plan))
    if not plan.fits:
        raise R3Error(f"the params do not fit a {args.gpu_gib:g} GiB device (needs {plan.estimate.total:.1f} GiB): "
                      "lower train.micro_batch_size, set train.gradient_checkpointing or train.lora.enabled")


if __name__ == "__main__" and "--plan" in sys.argv[1:]:
    parser = cli.parser(__doc__)
    parser.add_argument("--plan", action="store_true", help="print the memory plan of the params and exit")
    parser.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU in GiB (default 80)")
    cli.stage_main("train --plan", show_plan, parser)
elif __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--failures", required=True, help="the task's failure-set Parquet")
    parser.add_argument("--data", help="the task's dataset Parquet (its validation items: train.eval_every)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--checkpoints", required=True, help="persistent folder for resumable checkpoints")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    cli.stage_main("train", main, parser)
