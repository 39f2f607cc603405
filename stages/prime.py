"""prime: SFT of the raw model on behaviour-rich traces, demonstrations and reflect-retry dialogues.

The output, models/primed, is the `primed` policy. Checkpoints live in a persistent folder keyed
by a hash of everything that shapes the run, so an interrupted run resumes and a stale one never does.
"""

import hashlib
import json
from pathlib import Path

from r3 import cli, configs
from r3.artifacts import atomic_path, content_hash, run_key, write_json
from r3.dataset import load_rows
from r3.errors import R3Error
from r3.params import Params
from r3.priming.countdown_traces import VARIANTS
from r3.priming.mix import MixSpec, priming_examples
from r3.tasks import get_task
from r3.training.sft import train_sft

log = cli.log


def main(args):
    p = Params.load(args.params)
    seed = p.get("seed", int)
    prime = p.section("prime")
    hparams = dict(
        epochs=prime.get("epochs", float, min_value=0.0),
        learning_rate=prime.get("learning_rate", float, min_value=0.0),
        batch_size=prime.get("batch_size", int, min_value=1), grad_accum=prime.get("grad_accum", int, min_value=1),
        max_length=prime.get("max_length", int, min_value=16), weight_decay=prime.get("weight_decay", float, 0.0),
        warmup_steps=prime.get("warmup_steps", float, 0.0, min_value=0.0), bf16=prime.get("bf16", bool),
        max_steps=prime.get("max_steps", int, -1), seed=seed,
        lora=prime.get("lora", dict) if prime.get("lora.enabled", bool) else None)
    examples = []
    for name, data in zip(args.task, args.data, strict=True):
        task = get_task(name)
        mix = prime.section(f"mix.{name}")
        spec = MixSpec(size=mix.get("size", int, min_value=0),
                       reflection_fraction=mix.get("reflection_fraction", float, min_value=0.0, max_value=1.0),
                       variant=mix.get("variant", str, "all_strategies", choices=VARIANTS),
                       check_fraction=mix.get("check_fraction", float, 0.0, min_value=0.0, max_value=1.0))
        proto = configs.protocol_config(p, task, 0.0, 1.0, seed)
        train = load_rows(data, name, split="train")
        try:
            examples += priming_examples(task, train, spec, configs.prompt_config(p, task), proto, seed)
        except ValueError as exc:
            raise R3Error(f"prime.mix.{name}: {exc}") from None
    if not examples:
        raise R3Error("prime.mix: no priming examples (all sizes are 0)")

    # resume only a run made from the same starting weights, examples and params
    params = p.as_dict()
    key = run_key(params={k: params.get(k) for k in ("seed", "prime", "model")},
                  examples=hashlib.sha256(json.dumps(examples, sort_keys=True, default=str).encode()).hexdigest(),
                  raw_sha=content_hash(configs.model_dir("raw")))
    checkpoints = Path(args.checkpoints) / key
    with atomic_path(args.out, is_dir=True) as tmp:
        stats = train_sft(configs.model_dir("raw"), examples, tmp, checkpoint_dir=checkpoints,
                          save_steps=prime.get("save_steps", int, min_value=1), report_to="dvclive",
                          logging_dir=args.live, **hparams)
    stats["kinds"] = {k: sum(e["kind"] == k for e in examples) for k in sorted({e["kind"] for e in examples})}
    write_json(stats, args.metrics)
    log.info("primed on %d examples (%s), %d trained tokens, %.0f s (%.0f tok/s)", stats["examples"],
             stats["kinds"], stats["trained_tokens"], stats["train_runtime"], stats["tokens_per_s"])


if __name__ == "__main__":
    parser = cli.parser(__doc__)
    parser.add_argument("--task", nargs="+", required=True)
    parser.add_argument("--data", nargs="+", required=True, help="dataset Parquet per task, in --task order")
    parser.add_argument("--out", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--checkpoints", required=True, help="persistent folder for resumable checkpoints")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    cli.stage_main("prime", main, parser)
