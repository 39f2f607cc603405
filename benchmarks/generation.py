"""Generation throughput: vLLM vs the retired hand-written decode loop vs HF `generate`, against a roofline.

Usage:
    python benchmarks/generation.py [--model models/raw] [--n-prompts 32 64 128] [--max-new-tokens 64]

All methods get the same prompts (Countdown puzzles in TinyZero's wording by default), greedy decoding, the
same eos and stop string ("</answer>") and the same token budget, in one run:

- vLLM:     `r3.inference.vllm_backend.VLLMBackend` (the project's engine), bf16, compiled
            (`enforce_eager=False`), max_num_seqs = `inference.batch_size` of params.yaml. Its start
            (compilation) and a small warm-up generate are timed apart and excluded from the throughput; its
            prefix cache is emptied before every timed run, so a run never reuses the previous run's prompts;
- loop:     `benchmarks/handwritten_backend.TransformersBackend`, the retired hand-written decode loop (finished
            rows leave the batch, waiting rows are prefilled into the free slots), bf16, --batch-size rows;
- HF batch: `model.generate` on length-sorted batches of --batch-size rows with `stop_strings` (a batch runs
            until its longest row ends), bf16;
- naive:    `model.generate` one prompt at a time on the first --naive-prompts prompts (measured once and
            shown in every table; its tok/s is over its own prompts).

Order: the torch methods run first and the engine last, in the same process. The in-process engine binds
the process's OpenMP threads to the cores (`VLLM_CPU_OMP_THREADS_BIND`) and replaces `torch.set_num_threads`
with a no-op, so a torch method run after it may run under the engine's thread settings instead of its own.
The run checks this (unless --no-interference-check): it times the hand-written loop on --check-prompts
prompts before the engine starts and again after its runs, and prints both, with `torch.get_num_threads()`.
On the 2-core machine (`make bench`, 2026-11-29) the engine's presence did not slow the loop (59.9 vs 58.4
tok/s, 2 threads either way); the order is kept so that no torch figure depends on the engine's settings.
Nothing runs concurrently: every method runs alone in this process (other processes on the machine do count:
the header and footer print the load average).

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
activations, sampling, Python overhead per layer) is why real decoding stays below it. The peak is torch's
bf16 GEMM, measured before the engine starts; vLLM's own CPU kernels could in principle beat it.

Greedy agreement: the share of prompts whose completion text is the same under two methods (bf16 kernels
and batch shapes round differently, so greedy paths can part), with the first prompt that differs and the
index of its first differing token; HF `generate` in float32 (on the first --f32-prompts prompts) is the
reference closest to exact arithmetic.

Targets (the issue's): vLLM >= 1.5x the hand-written loop and >= 80% of the prefill-aware roofline. The
summary prints PASS/MISS per prompt count; the exit status does not depend on them.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from handwritten_backend import TransformersBackend
from transformers import AutoModelForCausalLM

from r3.inference.base import Completion, Request, SamplingParams, cut_at_stop
from r3.params import Params

CHAT = [
    "What is the capital of France?", "Name three primary colors.", "How many legs does a spider have?",
    "Give me a synonym for 'happy'.", "What is 12 times 12?", "Translate 'thank you' into Spanish.",
    "What gas do plants absorb from the air?", "Write a haiku about rain.",
]
STOP = ("</answer>",)
VLLM, LOOP, HF, NAIVE = "vllm", "loop", "hf", "naive"
LABELS = {VLLM: "vLLM (bf16, compiled)", LOOP: "hand-written loop (bf16)", HF: "HF generate, batched (bf16)",
          NAIVE: "HF generate, one at a time (bf16)"}
TARGET_SPEEDUP, TARGET_ROOFLINE = 1.5, 0.80


def countdown(rng: random.Random) -> str:
    nums = [rng.randint(1, 99) for _ in range(rng.choice([3, 4]))]
    return (f"Using the numbers {nums}, create an equation that equals {rng.randint(10, 100)}. You can use "
            "basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your work "
            "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
            "<answer> (1 + 2) / 3 </answer>.")


def make_requests(n: int, kind: str, prefill: str = "", seed: int = 0) -> list[Request]:
    """`n` prompts; the first k of `make_requests(n)` are `make_requests(k)` (one stream of puzzles)."""
    rng = random.Random(seed)
    texts = [CHAT[i % len(CHAT)] if kind == "chat" or (kind == "mixed" and i % 4 == 3) else countdown(rng)
             for i in range(n)]
    return [Request([{"role": "user", "content": t}], prefill=prefill) for t in texts]


@dataclass
class Run:
    method: str
    completions: list[Completion]
    seconds: float
    prompt_tokens: int
    cpu_seconds: float  # this process's CPU time (all threads) during the run

    @property
    def tokens(self) -> int:
        return sum(c.num_tokens for c in self.completions)

    @property
    def speed(self) -> float:
        return self.tokens / self.seconds


@torch.inference_mode()
def hf_generate(backend: TransformersBackend, requests: list[Request], params: SamplingParams,
                batch_size: int) -> list[Completion]:
    """`model.generate` on length-sorted batches of `batch_size` rows (1: one prompt at a time)."""
    tok, model = backend.tokenizer, backend.model
    ids = [backend.encode(r) for r in requests]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out: list[Completion | None] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(ids[i]) for i in batch)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(ids[i])) + ids[i] for i in batch])
        mask = (torch.arange(width) >= torch.tensor([[width - len(ids[i])] for i in batch])).long()
        generated = model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=params.max_new_tokens, do_sample=False,
            temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, stop_strings=list(params.stop) or None, tokenizer=tok)[:, width:]
        for i, row in zip(batch, generated.tolist(), strict=True):
            # pad = eos: a row ended by a stop string is padded with "eos" it never generated
            n = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
            text, hit_stop = cut_at_stop(tok.decode(row[:n], skip_special_tokens=True), params.stop)
            used = row[: n if hit_stop or n == len(row) else n + 1]
            out[i] = Completion(text, len(used), "stop" if len(used) < len(row) or hit_stop else "length",
                                token_ids=tuple(used))
    return out  # type: ignore[return-value]


def timed(method: str, fn, requests: list[Request], prompt_tokens: list[int]) -> Run:
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    completions = fn(requests)
    return Run(method, completions, time.perf_counter() - start, sum(prompt_tokens[: len(requests)]),
               time.process_time() - cpu)


def matmul_gflops(dtype: torch.dtype, shapes=((64, 576, 1536), (64, 1536, 576), (64, 576, 49152)),
                  windows: int = 10, window_s: float = 0.05) -> float:
    """Best GEMM speed over model-shaped products [m, k] x [k, n]: the best of `windows` short timing windows
    per shape, so that a burst of load from another process lowers it less than one long window would."""
    best = 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        for _ in range(windows):
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < window_s:
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


def first_difference(a: Completion, b: Completion) -> int:
    """Index of the first generated token where `a` and `b` part (the shorter length if one is a prefix)."""
    for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids, strict=False)):
        if x != y:
            return i
    return min(len(a.token_ids), len(b.token_ids))


def agreement(name: str, a: list[Completion], b: list[Completion], tokenizer) -> str:
    n = min(len(a), len(b))
    differ = [i for i in range(n) if a[i].text != b[i].text]
    line = f"- {name}: {n - len(differ)}/{n} prompts with the same text ({100 * (n - len(differ)) / n:.0f}%)"
    if differ:
        i = differ[0]
        t = first_difference(a[i], b[i])
        x, y = (tokenizer.decode(c.token_ids[max(0, t - 3) : t + 2]) for c in (a[i], b[i]))
        line += (f"; first differing prompt #{i}, first differing token #{t} of {len(a[i].token_ids)} / "
                 f"{len(b[i].token_ids)}: ...{x!r} vs ...{y!r}")
    return line


def loadavg() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def table(n: int, runs: dict[str, Run], roof: float) -> list[str]:
    loop = runs.get(LOOP)
    lines = [f"### {n} prompts", "",
             "| method | prompts | generated tokens | seconds | tok/s | × vs hand-written loop | "
             "% of prefill-aware roofline |", "|---|---:|---:|---:|---:|---:|---:|"]
    for method in (VLLM, LOOP, HF, NAIVE):
        r = runs.get(method)
        if r is None:
            continue
        bound = roof * r.tokens / (r.tokens + r.prompt_tokens)
        ratio = f"{r.speed / loop.speed:.2f}×" if loop else "n/a"
        lines.append(f"| {LABELS[method]} | {len(r.completions)} | {r.tokens} | {r.seconds:.1f} | {r.speed:.1f} | "
                     f"{ratio} | {100 * r.speed / bound:.0f}% |")
    r = next(iter(runs.values()))
    lines += ["", "CPU time / wall time of this process (threads busy, spinning included; below the thread count "
              "when other processes took the cores): " + ", ".join(
                  f"{m} {runs[m].cpu_seconds / runs[m].seconds:.2f}" for m in (VLLM, LOOP, HF, NAIVE) if m in runs),
              "", f"Prefill-aware bound for these {n} prompts ({r.prompt_tokens} prompt tokens): "
              f"{roof * r.tokens / (r.tokens + r.prompt_tokens):.0f} useful tok/s at {r.tokens} generated tokens.", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/raw" if Path("models/raw").exists() else None,
                    help="model directory (default: models/raw, written by the `model` stage)")
    ap.add_argument("--n-prompts", type=int, nargs="+", default=[32, 64, 128])
    ap.add_argument("--naive-prompts", type=int, default=8, help="prompts for the one-at-a-time baseline")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="rows of the loop and HF batches")
    ap.add_argument("--engine-batch-size", type=int, default=None,
                    help="vLLM max_num_seqs (default: inference.batch_size of params.yaml)")
    ap.add_argument("--prompts", choices=["mixed", "countdown", "chat"], default="countdown")
    ap.add_argument("--prefill", default="", help='assistant turn start, e.g. "<think>"')
    ap.add_argument("--f32-prompts", type=int, default=32, help="prompts for the float32 HF reference (0: none)")
    ap.add_argument("--check-prompts", type=int, default=16, help="prompts for the engine-interference check")
    ap.add_argument("--no-interference-check", action="store_true")
    ap.add_argument("--methods", default="vllm,loop,hf,naive")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    if args.model is None:
        ap.error("no models/raw here: pass --model DIR")
    methods = args.methods.split(",")
    counts = sorted(set(args.n_prompts))
    inference = Params.load(args.params).section("inference")
    engine_batch = args.engine_batch_size or inference.get("batch_size", int)
    requests = make_requests(max(counts), args.prompts, args.prefill)
    params = SamplingParams(max_new_tokens=args.max_new_tokens, stop=STOP)  # greedy
    say = lambda *a: print(*a, flush=True)  # noqa: E731  (the report: stdout)
    progress = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    say(f"# Generation benchmark\n\nmodel `{args.model}`, {args.prompts} prompts, greedy, max_new_tokens "
        f"{args.max_new_tokens}, stop {STOP}, prefill {args.prefill!r}; loop/HF batch {args.batch_size}, vLLM "
        f"max_num_seqs {engine_batch}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; {loadavg()} at the start.\n")

    # ---------------------------------------------------------------- torch methods (before the engine exists)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval()
    loop = TransformersBackend(args.model, dtype="bfloat16", batch_size=args.batch_size, model=model)
    prompt_tokens = [len(loop.encode(r)) for r in requests]
    peak, fpt = matmul_gflops(torch.bfloat16), flops_per_token(model)
    roof = peak * 1e9 / fpt
    say(f"Roofline: bf16 GEMM peak {peak:.0f} GFLOP/s (torch, model-shaped matrices, best 50 ms window) / "
        f"{fpt / 1e9:.3f} GFLOP per token (2 × (non-embedding + lm_head params)) = {roof:.0f} tok/s decoding alone.\n")

    def run_loop(reqs):
        return [c for (c,) in loop.generate(reqs, params)]

    check = args.check_prompts and not args.no_interference_check and VLLM in methods
    warm_up = make_requests(2, "chat")  # first-call overheads stay out of the timings
    run_loop(warm_up)
    hf_generate(loop, warm_up, SamplingParams(max_new_tokens=4, stop=STOP), 2)
    runs: dict[int, dict[str, Run]] = {n: {} for n in counts}
    naive = None
    if NAIVE in methods:
        naive = timed(NAIVE, lambda reqs: hf_generate(loop, reqs, params, 1), requests[: args.naive_prompts],
                      prompt_tokens)
        progress(f"measured: naive, {args.naive_prompts} prompts, {naive.seconds:.1f} s")
    for n in counts:
        if LOOP in methods:
            runs[n][LOOP] = timed(LOOP, run_loop, requests[:n], prompt_tokens)
        if HF in methods:
            runs[n][HF] = timed(HF, lambda reqs: hf_generate(loop, reqs, params, args.batch_size), requests[:n],
                                prompt_tokens)
        if naive:
            runs[n][NAIVE] = naive
        progress(f"measured: torch methods at {n} prompts")
    f32 = None
    if args.f32_prompts:
        model32 = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        ref = TransformersBackend(args.model, dtype="float32", batch_size=args.batch_size, model=model32)
        f32 = timed("hf-f32", lambda reqs: hf_generate(ref, reqs, params, args.batch_size),
                    requests[: args.f32_prompts], prompt_tokens)
        del ref, model32
    before = timed(LOOP, run_loop, requests[: args.check_prompts], prompt_tokens) if check else None
    if not check:
        del loop, model
    gc.collect()

    # ---------------------------------------------------------------- vLLM, last
    engine_lines = []
    if VLLM in methods:
        from r3.inference.vllm_backend import VLLMBackend

        cached = (Path.home() / ".cache" / "vllm" / "torch_compile_cache").is_dir()
        start = time.perf_counter()
        engine = VLLMBackend(args.model, dtype="bfloat16", batch_size=engine_batch, seed=0,
                             max_model_len=inference.get("max_model_len", int), enforce_eager=False,
                             kv_cache_gib=inference.get("kv_cache_gib", int))
        started = time.perf_counter() - start
        start = time.perf_counter()
        engine.generate(make_requests(2, "chat"), SamplingParams(max_new_tokens=8))
        warm = time.perf_counter() - start
        engine_lines.append(f"vLLM engine start: {started:.1f} s (compilation included; compile cache "
                            f"~/.cache/vllm/torch_compile_cache {'present' if cached else 'absent'} before the "
                            f"start), warm-up generate (2 prompts × 8 tokens): {warm:.1f} s; both excluded from "
                            "the throughput.")
        for n in counts:
            engine.llm.reset_prefix_cache()
            runs[n][VLLM] = timed(VLLM, lambda reqs: [c for (c,) in engine.generate(reqs, params)], requests[:n],
                                  prompt_tokens)
            progress(f"measured: vLLM at {n} prompts")
        env = {k: os.environ.get(k) for k in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU")}
        engine_lines.append(f"Engine thread settings: {env}; torch.get_num_threads() with the engine up: "
                            f"{torch.get_num_threads()}; process affinity {sorted(os.sched_getaffinity(0))}.")
        if check:
            after = timed(LOOP, run_loop, requests[: args.check_prompts], prompt_tokens)
            same = sum(a.text == b.text for a, b in zip(before.completions, after.completions, strict=True))
            engine_lines.append(
                f"Interference check (hand-written loop, {args.check_prompts} prompts): {before.speed:.1f} tok/s "
                f"before the engine started, {after.speed:.1f} tok/s with it up ({after.speed / before.speed:.2f}×); "
                f"same texts: {same}/{len(after.completions)}.")

    # ---------------------------------------------------------------- report
    say("## Throughput\n")
    for n in counts:
        say("\n".join(table(n, runs[n], roof)))
    if naive:
        say(f"The one-at-a-time row is measured once, on the first {args.naive_prompts} prompts, and repeated.\n")
    if engine_lines:
        say("\n".join(engine_lines) + "\n")

    say(f"## Greedy agreement (completion text, on the first {max(counts)} prompts unless stated)\n")
    big = runs[max(counts)]
    tokenizer = loop.tokenizer if check else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    pairs = [(VLLM, LOOP), (VLLM, HF), (LOOP, HF)]
    lines = [agreement(f"{LABELS[a]} vs {LABELS[b]}", big[a].completions, big[b].completions, tokenizer)
             for a, b in pairs if a in big and b in big]
    if f32:
        k = len(f32.completions)
        lines += [agreement(f"{LABELS[m]} vs HF generate (float32), first {k} prompts", big[m].completions[:k],
                            f32.completions, tokenizer) for m in (VLLM, LOOP, HF) if m in big]
        lines.append(f"  (HF generate in float32, batched, {k} prompts: {f32.tokens} tokens in {f32.seconds:.1f} s)")
    say("\n".join(lines) + "\n")

    say("## Targets (the issue's: vLLM >= 1.5x the hand-written loop, >= 80% of the prefill-aware roofline)\n")
    verdicts = []
    for n in counts:
        r = runs[n]
        if VLLM not in r or LOOP not in r:
            continue
        v = r[VLLM]
        speedup = v.speed / r[LOOP].speed
        share = v.speed / (roof * v.tokens / (v.tokens + v.prompt_tokens))
        ok = speedup >= TARGET_SPEEDUP and share >= TARGET_ROOFLINE
        verdicts.append(ok)
        say(f"- {n} prompts: vLLM {v.speed:.1f} tok/s = {speedup:.2f}× the loop "
            f"({'PASS' if speedup >= TARGET_SPEEDUP else 'MISS'}, target {TARGET_SPEEDUP}×), {100 * share:.0f}% of "
            f"the roofline ({'PASS' if share >= TARGET_ROOFLINE else 'MISS'}, target {100 * TARGET_ROOFLINE:.0f}%)")
    if not verdicts:
        say("- not measured (needs both vLLM and the hand-written loop)")
    else:
        say(f"\nSummary: {'PASS' if all(verdicts) else 'MISS'} ({sum(verdicts)}/{len(verdicts)} prompt counts meet "
            f"both targets); {loadavg()} at the end (other processes on this machine slow every method).\n")


if __name__ == "__main__":
    main()
