"""failures@<task>: k sampled first attempts per train query (queries drawn with the seed); keep the queries the
keep rule names; record the failed attempt a training prompt shows (the one evaluation would draw, if it failed)."""

import json
from dataclasses import replace

import pandas as pd

from r3 import cli, configs
from r3.artifacts import write_json, write_parquet
from r3.dataset import load_rows
from r3.errors import R3Error
from r3.failures import KEEP_POLICIES, draw_queries, keep, pass_rate_band, shown_attempt
from r3.inference import Request, SamplingParams
from r3.params import Params
from r3.prompts import build_prompt
from r3.protocol import sample_first_attempts
from r3.tasks import get_task

log = cli.log


def main(args):
    p = Params.load(args.params)
    task = get_task(args.task)
    seed = p.get("seed", int)
    policy = p.get("policy", str, choices=configs.POLICIES)
    stage = p.section("failures")
    n_queries = stage.get("queries", int, min_value=1)
    k = stage.get("samples", int, min_value=1)
    keep_policy = stage.get("keep", str, choices=tuple(KEEP_POLICIES))
    band = pass_rate_band(stage.get("pass_rate", list)) if keep_policy == "pass_rate" else (0.0, 1.0)
    attempt_source = stage.get("attempt", str, choices=("evaluation", "sampled"))
    per_step = p.get("train.queries_per_step", int, min_value=1)
    params = SamplingParams(
        max_new_tokens=p.get(f"protocol.{task.name}.max_attempt_tokens", int, min_value=1),
        temperature=stage.get("temperature", float, min_value=0.0),
        top_p=stage.get("top_p", float, min_value=0.0, max_value=1.0),
        n=k, seed=seed, stop=task.stop_strings)
    prompt_cfg = configs.prompt_config(p, task)

    rows = load_rows(args.data, task.name)
    train = [r for r in rows if r.split == "train"]
    # few-shot demos come from the head of train; sample queries after them so none is its own demo
    shots = [(r.inputs, r.ground_truth) for r in train[: prompt_cfg.few_shot]]
    queries = draw_queries(train[prompt_cfg.few_shot:], n_queries, seed)
    prompts = [build_prompt(task, r.inputs, prompt_cfg, shots) for r in queries]
    backend = configs.backend(p, policy)
    # a query whose prompt leaves no room in the engine's context is left out (counted): training would
    # leave it out too (train.max_prompt_tokens); test items are never dropped (baseline refuses instead)
    room = getattr(backend, "max_model_len", None)
    fits = [room is None or len(backend.encode(Request(m, prompt_cfg.prefill))) + params.max_new_tokens <= room
            for m in prompts]
    if not all(fits):
        log.warning("%s: %d of %d queries have prompts too long for inference.max_model_len=%d; left out",
                    task.name, fits.count(False), len(fits), room)
        queries = [q for q, ok in zip(queries, fits, strict=True) if ok]
        prompts = [m for m, ok in zip(prompts, fits, strict=True) if ok]

    truths = [r.ground_truth for r in queries]
    samples = sample_first_attempts(backend, task, prompts, truths, params, prompt_cfg.prefill)
    evaluated = [None] * len(queries)
    if attempt_source == "evaluation":  # the attempt evaluation reflects on: baseline's sampling, the same budget
        as_evaluation = replace(params, temperature=p.get("baseline.temperature", float, min_value=0.0),
                                top_p=p.get("baseline.top_p", float, min_value=0.0, max_value=1.0), n=1)
        evaluated = [a[0] for a in sample_first_attempts(backend, task, prompts, truths, as_evaluation,
                                                         prompt_cfg.prefill)]
    records = []
    for row, prompt, attempts, first in zip(queries, prompts, samples, evaluated, strict=True):
        n_correct = sum(v.correct for _, v, _ in attempts)
        failed = [(t, v) for t, v, _ in attempts if not v.correct]
        if not keep(keep_policy, n_correct, k, band) or not failed:
            continue
        shown, source = shown_attempt(None if first is None else (first[0], first[1].correct), [t for t, _ in failed])
        category = first[1].category if source == "evaluation" else failed[0][1].category
        records.append({
            "id": row.id, "task": task.name, "split": row.split, "policy": policy,
            "prompt": json.dumps(prompt, ensure_ascii=False), "ground_truth": json.dumps(row.ground_truth),
            "n_samples": k, "n_correct": n_correct, "pass_rate": n_correct / k,
            "failed_attempts": [t for t, _ in failed], "failed_categories": [v.category for _, v in failed],
            # the attempt a training prompt shows as the model's failed first try
            "attempt": shown, "attempt_category": category, "attempt_source": source,
        })
    columns = ["id", "task", "split", "policy", "prompt", "ground_truth", "n_samples", "n_correct", "pass_rate",
               "failed_attempts", "failed_categories", "attempt", "attempt_category", "attempt_source"]
    df = pd.DataFrame(records, columns=columns)
    all_verdicts = [v for attempts in samples for _, v, _ in attempts]
    metrics = {
        "queries": len(queries), "left_out_long_prompts": fits.count(False), "samples_per_query": k,
        "kept": len(records),
        "kept_fraction": round(len(records) / len(queries), 4),
        "sample_acc": round(sum(v.correct for v in all_verdicts) / len(all_verdicts), 4),
        "queries_solved_any": sum(any(v.correct for _, v, _ in a) for a in samples),
        "sample_errors": {c: sum(v.category == c for v in all_verdicts) for c in task.error_categories},
    }
    if len(records) < per_step:  # nothing written: train could not make one step
        raise R3Error(f"failures.keep={keep_policy}: kept {len(records)} of {len(queries)} queries, fewer than one "
                      f"training step needs (train.queries_per_step={per_step})")
    if attempt_source == "evaluation":
        metrics["evaluation_acc"] = round(sum(a[1].correct for a in evaluated) / len(evaluated), 4)
        metrics["attempts_from_evaluation"] = sum(r["attempt_source"] == "evaluation" for r in records)
    write_parquet(df, args.out)
    write_json(metrics, args.metrics)
    log.info("%s: kept %d of %d queries (sample accuracy %.3f)", task.name, len(records), len(queries),
             metrics["sample_acc"])


if __name__ == "__main__":
    parser = cli.parser(__doc__, task=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    cli.stage_main("failures", main, parser)
