"""Generation throughput: naive generate vs HF batched generate vs TransformersBackend, and a roofline.

Usage:
    PYTHONPATH=src python benchmarks/generation.py [--model DIR] [--n-prompts 32] [--max-new-tokens 64]

All methods get the same prompts (Countdown puzzles in TinyZero's wording and short chat questions),
the same decoding (greedy unless --temperature), eos and stop string ("</answer>"), in the same run:

- naive:   `model.generate` one prompt at a time (no batching; run on the first --naive-prompts);
- batched: `model.generate` on length-sorted batches of --batch-size rows with `stop_strings`
           (the previous backend: a batch runs until its longest row ends);
- backend: `TransformersBackend.generate` (hand-written decode loop: finished rows leave the batch,
           waiting rows are prefilled into the free slots).

Throughput = useful generated tokens (up to and including eos, or up to the stop string) / wall time,
prompt processing included. The roofline is an upper bound for this CPU: decoding one token costs about
2 FLOPs per weight it multiplies, i.e. 2 × (non-embedding parameters + lm_head) (the embedding lookup
is free; attention over the context adds 4 × layers × heads × head_dim × context, ignored here), and
a big enough batch could at best run every one of those matmuls at the peak GEMM speed measured below
on model-shaped matrices (weights are read once per step and shared by all rows, so memory bandwidth
stops being the limit). roofline tok/s = peak FLOP/s / FLOPs per token. Prefilling a prompt token
costs about the same FLOPs (no lm_head), so for a workload with P prompt tokens and G generated ones
the bound on useful tokens/s is roofline × G / (G + P); with ~120-token prompts and short answers the
prefill, not the decode loop, is most of the work. What the bound omits (attention, norms,
activations, sampling, Python overhead per layer) is why real decoding stays well below it.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from r3.inference.base import Completion, Request, SamplingParams, cut_at_stop
from r3.inference.transformers_backend import TransformersBackend

CHAT = [
    "What is the capital of France?", "Name three primary colors.", "How many legs does a spider have?",
    "Give me a synonym for 'happy'.", "What is 12 times 12?", "Translate 'thank you' into Spanish.",
    "What gas do plants absorb from the air?", "Write a haiku about rain.",
]
STOP = ("</answer>",)


def countdown(rng: random.Random) -> str:
    nums = [rng.randint(1, 99) for _ in range(rng.choice([3, 4]))]
    return (f"Using the numbers {nums}, create an equation that equals {rng.randint(10, 100)}. You can use "
            "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work "
            "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
            "<answer> (1 + 2) / 3 </answer>.")


def make_requests(n: int, kind: str, prefill: str = "", seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    texts = [CHAT[i % len(CHAT)] if kind == "chat" or (kind == "mixed" and i % 4 == 3) else countdown(rng)
             for i in range(n)]
    return [Request([{"role": "user", "content": t}], prefill=prefill) for t in texts]


@torch.inference_mode()
def hf_generate(backend: TransformersBackend, requests: list[Request], params: SamplingParams,
                batch_size: int) -> list[Completion]:
    """`model.generate` on length-sorted batches (the previous backend's method)."""
    tok, model = backend.tokenizer, backend.model
    ids = [tok(backend.render(r), add_special_tokens=False)["input_ids"] for r in requests]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: list[Completion | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(ids[i])) + ids[i] for i in batch])
        mask = (torch.arange(width) >= torch.tensor([[width - len(ids[i])] for i in batch])).long()
        sampling = {} if params.greedy else dict(temperature=params.temperature, top_p=params.top_p, top_k=0)
        torch.manual_seed(params.seed + start)
        generated = model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy, **sampling, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, stop_strings=list(params.stop) or None, tokenizer=tok)[:, width:]
        for i, row in zip(batch, generated.tolist(), strict=True):
            n = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            text, hit_stop = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), params.stop)
            hit_eos = n < len(row)
            # pad = eos here, so a row ended by a stop string also shows a trailing "eos": count it once
            out[i] = Completion(text, n + hit_eos, "stop" if hit_eos or hit_stop else "length")
    return out  # type: ignore[return-value]


def run(name: str, backend: TransformersBackend, requests: list[Request], params: SamplingParams,
        args) -> tuple[list[Completion], float]:
    start = time.perf_counter()
    if name == "naive":
        results = hf_generate(backend, requests[: args.naive_prompts], params, 1)
    elif name == "batched":
        results = hf_generate(backend, requests, params, args.batch_size)
    else:
        results = [c for (c,) in backend.generate(requests, params)]
    return results, time.perf_counter() - start


def matmul_gflops(dtype: torch.dtype, shapes=((64, 576, 1536), (64, 1536, 576), (64, 576, 49152))) -> float:
    """Best GEMM speed over model-shaped products [m, k] x [k, n], ~0.3 s each."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.3:
            a @ b
            reps += 1
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(model) -> float:
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    params = sum(p.numel() for p in model.parameters())  # tied lm_head is counted once here
    tied = head.data_ptr() == embed.data_ptr()
    return 2.0 * (params - embed.numel() - (0 if tied else head.numel()) + head.numel())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/raw" if Path("models/raw").exists() else None,
                    help="model directory (default: models/raw if it exists)")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--naive-prompts", type=int, default=8, help="prompts for the one-at-a-time baseline")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    ap.add_argument("--prompts", choices=["mixed", "countdown", "chat"], default="mixed")
    ap.add_argument("--prefill", default="", help='assistant turn start, e.g. "<think>"')
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--methods", default="naive,batched,backend")
    args = ap.parse_args()
    if args.model is None:
        ap.error("no models/raw here: pass --model DIR (e.g. /tmp/m135)")
    torch.manual_seed(0)
    requests = make_requests(args.n_prompts, args.prompts, args.prefill)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, stop=STOP)
    methods = args.methods.split(",")
    print(f"model {args.model}, {len(requests)} {args.prompts} prompts, max_new_tokens "
          f"{args.max_new_tokens}, prefill {args.prefill!r}, temperature {args.temperature}, stop {STOP}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"{'dtype':9} {'method':8} {'prompts':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>7}  "
          "same text as backend")
    for dtype in args.dtypes.split(","):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype))
        backend = TransformersBackend(args.model, dtype=dtype, batch_size=args.batch_size, model=model)
        speed, texts, counts = {}, {}, {}
        for name in ["backend"] + [m for m in methods if m != "backend"]:  # backend first: reference texts
            results, seconds = run(name, backend, requests, params, args)
            tokens = sum(c.num_tokens for c in results)
            speed[name], texts[name], counts[name] = tokens / seconds, [c.text for c in results], tokens
            same = sum(a == b for a, b in zip(texts[name], texts["backend"], strict=False))
            print(f"{dtype:9} {name:8} {len(results):7} {tokens:7} {seconds:8.1f} {speed[name]:7.1f}  "
                  f"{same}/{len(results)}")
        for base in ("naive", "batched"):
            if base in speed:
                print(f"{dtype:9} backend / {base}: {speed['backend'] / speed[base]:.2f}x")
        peak, fpt = matmul_gflops(getattr(torch, dtype)), flops_per_token(model)
        roof = peak * 1e9 / fpt
        # a prompt token costs about what a generated one does, so the prompts lower the bound on
        # useful tokens/s by generated / (generated + prompt tokens)
        prompt_tokens = sum(len(backend.tokenizer(backend.render(r))["input_ids"]) for r in requests)
        workload_roof = roof * counts["backend"] / (counts["backend"] + prompt_tokens)
        print(f"{dtype:9} roofline: matmul peak {peak:.0f} GFLOP/s / {fpt / 1e9:.3f} GFLOP per token "
              f"(2 x (non-embedding + lm_head params)) = {roof:.0f} tok/s decoding alone;")
        share = 100 * speed["backend"] / workload_roof
        print(f"{dtype:9}   with {prompt_tokens} prompt tokens to prefill for {counts['backend']} generated: "
              f"{workload_roof:.0f} useful tok/s; backend reaches {share:.0f}%")
    print("useful tokens: generated up to and including eos, or up to the stop string; time includes\n"
          "prefill. roofline: every matmul at the measured peak GEMM speed, batch big enough to amortise\n"
          "weight reads; attention, norms, sampling and per-layer Python overhead are not counted, so it\n"
          "is an upper bound.")


if __name__ == "__main__":
    main()
