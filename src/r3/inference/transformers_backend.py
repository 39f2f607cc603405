"""Batched generation with transformers on CPU (or any torch device).

What makes it fast here: requests sorted by prompt length so batches pad little, left padding,
the KV cache, `inference_mode`, bf16 weights where the CPU supports them, stop strings so a
finished answer ends generation early, and whole batches of requests (n samples per request are
expanded into the batch rather than generated one request at a time).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from r3.inference.base import Backend, Completion, Request, SamplingParams, cut_at_stop


class TransformersBackend(Backend):
    def __init__(self, model_dir: str, dtype: str = "bfloat16", batch_size: int = 32, device: str = "cpu",
                 model=None, tokenizer=None):
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model or AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def render(self, request: Request) -> str:
        prompt = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return prompt + request.prefill

    def generate(self, requests: list[Request], params: SamplingParams, desc: str = "generate") -> list[list[Completion]]:
        prompts = [self.render(r) for r in requests]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # one row per sample; longest prompts first so the first batch shows the peak memory
        rows = sorted(((i, s) for i in range(len(requests)) for s in range(params.n)),
                      key=lambda row: (-len(ids[row[0]]), row))
        out: list[list[Completion | None]] = [[None] * params.n for _ in requests]
        with tqdm(total=len(rows), desc=desc, unit="seq", leave=False) as bar:
            for b, start in enumerate(range(0, len(rows), self.batch_size)):
                batch = rows[start : start + self.batch_size]
                texts = self._generate_batch([ids[i] for i, _ in batch], params, seed=params.seed * 1_000_003 + b)
                for (i, s), completion in zip(batch, texts, strict=True):
                    out[i][s] = completion
                bar.update(len(batch))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(self, batch_ids: list[list[int]], params: SamplingParams, seed: int) -> list[Completion]:
        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in batch_ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=self.device)
        attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=self.device)
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=pad, eos_token_id=self.model.config.eos_token_id)
        if params.greedy:
            kwargs.update(do_sample=False)
        else:
            torch.manual_seed(seed)
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        generated = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)[:, width:]
        eos = set(_as_list(self.model.config.eos_token_id)) | {pad}
        results = []
        for row in generated.tolist():
            n = next((k for k, t in enumerate(row) if t in eos), len(row))
            hit_eos = n < len(row)
            text, hit_stop = cut_at_stop(self.tokenizer.decode(row[:n], skip_special_tokens=True), params.stop)
            reason = "stop" if hit_eos or hit_stop else "length"
            results.append(Completion(text=text, num_tokens=n + (1 if hit_eos else 0), finish_reason=reason))
        return results


def _as_list(x) -> list[int]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
