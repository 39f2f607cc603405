"""Batched generation with transformers on CPU (or any torch device), with a hand-written decode loop.

`model.generate` keeps a batch running until its longest row ends, so with stop strings most of
the compute goes to rows that have already finished. The loop here instead does continuous
batching over all rows of a `generate` call (rows = requests × n samples, longest prompt first):

- prefill: up to `batch_size` rows, left padded, position ids = cumsum(attention mask) - 1, a
  `DynamicCache`, logits of the last position only; the n samples of a request share one prefill;
- decode: one token per step for every running row; greedy = argmax, sampling = temperature, then
  top-p (nucleus) filtering, then a draw by inverse CDF (the distribution of `torch.multinomial`,
  which costs ~25 ms per step at 32 × 49k on this CPU) from a generator seeded with `params.seed`;
- compaction: a row that produced eos/pad, or whose text now contains a stop string, leaves the
  batch at once (cache, attention mask and positions are index-selected) and left-padding columns
  no running row needs any more are cropped;
- refill: once a quarter of the slots are free, waiting rows are prefilled and merged into the
  running batch (caches left padded to a common length), so the batch stays full;
- the KV cache appends into spare capacity instead of `torch.cat`-ing the whole cache each step.

Greedy results equal `model.generate(do_sample=False)` token for token (tests compare them in
float32; in bf16 a row can differ by rounding, since batch shapes differ). Other speed-ups:
`inference_mode`, bf16 weights where the CPU supports them. Assumes full-attention cache layers
(Llama, Qwen2 and the like; not sliding-window or recurrent caches).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from r3.inference.base import Backend, Completion, Request, SamplingParams, cut_at_stop

REFILL_FRACTION = 4  # refill once batch_size // REFILL_FRACTION slots are free (or nothing runs)


class _GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare capacity instead of copying the cache every step."""

    spare = 64  # tokens of room added when the buffer is full
    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None
    _view: torch.Tensor | None = None  # the `keys` this layer handed out last

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        # (re)allocate when full, or when `keys` was replaced (batch selection, merging, cropping)
        if self._buffers is None or self._buffers[0].shape[-2] < end or self.keys is not self._view:
            b, h, _, d = key_states.shape
            self._buffers = (key_states.new_empty(b, h, end + self.spare, d),
                             value_states.new_empty(b, h, end + self.spare, d))
            if length:
                self._buffers[0][:, :, :length], self._buffers[1][:, :, :length] = self.keys, self.values
        keys, values = self._buffers
        keys[:, :, length:end], values[:, :, length:end] = key_states, value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        self._view = self.keys
        return self.keys, self.values


@dataclass
class _Batch:
    """The running rows: row ids, KV cache, attention mask [rows, T], next positions, next-token logits."""

    rows: list[int]
    cache: DynamicCache
    mask: torch.Tensor
    pos: torch.Tensor
    logits: torch.Tensor

    def select(self, keep: list[int]) -> None:
        """Keep only rows `keep` (indices into `rows`); crop padding columns no kept row needs."""
        idx = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[k] for k in keep]
        self.mask, self.pos, self.logits = self.mask[idx], self.pos[idx], self.logits[idx]
        width = int(self.mask.sum(1).max())  # rows are right-aligned: leading columns are padding
        self.mask = self.mask[:, -width:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx, :, -width:], layer.values[idx, :, -width:]

    def merge(self, other: _Batch) -> None:
        """Append `other`'s rows, left padding the shorter cache and mask to a common length."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(other.mask, width, 1)])
        for a, b in zip(self.cache.layers, other.cache.layers, strict=True):
            a.keys = torch.cat([_left_pad(a.keys, width, 2), _left_pad(b.keys, width, 2)])
            a.values = torch.cat([_left_pad(a.values, width, 2), _left_pad(b.values, width, 2)])
        self.rows += other.rows
        self.pos = torch.cat([self.pos, other.pos])
        self.logits = torch.cat([self.logits, other.logits])


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    pad = [0, 0] * (x.dim() - 1 - dim) + [width - x.shape[dim], 0]
    return F.pad(x, pad) if width > x.shape[dim] else x


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
        self.batch_size = batch_size  # max rows decoded together

    def render(self, request: Request) -> str:
        prompt = self.tokenizer.apply_chat_template(request.messages, tokenize=False,
                                                    add_generation_prompt=True)
        return prompt + request.prefill

    def encode(self, request: Request) -> list[int]:
        """The prompt token ids `generate` feeds the model for `request` (chat template + prefill)."""
        return self.tokenizer(self.render(request), add_special_tokens=False)["input_ids"]

    def generate(self, requests: list[Request], params: SamplingParams,
                 desc: str = "generate") -> list[list[Completion]]:
        if params.max_new_tokens < 1:
            return [[Completion(text="", num_tokens=0, finish_reason="length")] * params.n for _ in requests]
        prompts = [self.render(r) for r in requests]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # one row per sample; longest prompts first so the first batch shows the peak memory
        rows = sorted(((i, s) for i in range(len(requests)) for s in range(params.n)),
                      key=lambda row: (-len(ids[row[0]]), row))
        out: list[list[Completion | None]] = [[None] * params.n for _ in requests]
        with tqdm(total=len(rows), desc=desc, unit="seq", leave=False) as bar:
            for k, completion in self._decode([ids[i] for i, _ in rows], params):
                i, s = rows[k]
                out[i][s] = completion
                bar.update(1)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[tuple[int, Completion]]:
        """Yield (prompt index, completion) as rows finish, keeping up to `batch_size` rows running."""
        end_ids = set(_as_list(self.model.config.eos_token_id)) | {self.tokenizer.pad_token_id}
        generator = torch.Generator(self.device).manual_seed(params.seed)
        waiting = deque(range(len(prompts)))
        tokens: dict[int, list[int]] = {}
        batch: _Batch | None = None
        while waiting or batch:
            free = self.batch_size - (len(batch.rows) if batch else 0)
            if waiting and (batch is None or free >= max(1, self.batch_size // REFILL_FRACTION)):
                new = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                tokens.update((k, []) for k in new)
                fresh = self._prefill(new, [prompts[k] for k in new])
                if batch is None:
                    batch = fresh
                else:
                    batch.merge(fresh)
            next_ids = self._pick(batch.logits, params, generator)
            keep = []
            for j, (k, t) in enumerate(zip(batch.rows, next_ids.tolist(), strict=True)):
                tokens[k].append(t)
                done = t in end_ids or len(tokens[k]) >= params.max_new_tokens
                if done or self._stopped(tokens[k], params.stop):
                    yield k, self._completion(tokens.pop(k), end_ids, params)
                else:
                    keep.append(j)
            if not keep:
                batch = None
                continue
            if len(keep) < len(batch.rows):
                next_ids = next_ids[keep]
                batch.select(keep)
            batch.mask = F.pad(batch.mask, (0, 1), value=1)
            batch.logits = self.model(input_ids=next_ids[:, None], attention_mask=batch.mask,
                                      position_ids=batch.pos[:, None], past_key_values=batch.cache,
                                      use_cache=True).logits[:, -1].float()
            batch.pos = batch.pos + 1

    def _stopped(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        """Whether the text of `ids` contains a stop string; only the tail can hold a new one."""
        if not stop:
            return False
        # a character spans at most 4 byte-level tokens; + slack for decoders that strip a leading space
        window = 4 * max(len(s) for s in stop) + 4
        text = self.tokenizer.decode(ids[-window:], skip_special_tokens=True)
        return any(s in text for s in stop)

    def _prefill(self, rows: list[int], prompts: list[list[int]]) -> _Batch:
        unique = list(dict.fromkeys(map(tuple, prompts)))  # the n samples of a request share one prefill
        pad, width = self.tokenizer.pad_token_id, max(len(p) for p in unique)
        input_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in unique], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in unique], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        cache.layers = [_GrowingLayer() for _ in cache.layers]
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        batch = _Batch(rows=list(range(len(unique))), cache=cache, mask=mask, pos=positions[:, -1] + 1,
                       logits=logits)
        where = {p: j for j, p in enumerate(unique)}
        batch.select([where[tuple(p)] for p in prompts])
        batch.rows = rows
        return batch

    @staticmethod
    def _pick(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> torch.Tensor:
        """Next token per row: argmax, or a sample after temperature and top-p (nucleus) filtering."""
        if params.greedy:
            return logits.argmax(-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        ids = None
        if params.top_p < 1.0:
            probs, ids = _nucleus(probs, params.top_p)
        # inverse-CDF sampling: the same distribution as torch.multinomial, ~40x faster on CPU here
        cdf = probs.cumsum(-1)
        u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
        picked = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[-1] - 1)
        return (picked if ids is None else ids.gather(-1, picked)).squeeze(-1)

    def _completion(self, ids: list[int], end_ids: set[int], params: SamplingParams) -> Completion:
        hit_eos = ids[-1] in end_ids
        text = self.tokenizer.decode(ids[:-1] if hit_eos else ids, skip_special_tokens=True)
        text, hit_stop = cut_at_stop(text, params.stop)
        reason = "stop" if hit_eos or hit_stop else "length"
        return Completion(text=text, num_tokens=len(ids), finish_reason=reason, token_ids=tuple(ids))


def _nucleus(probs: torch.Tensor, top_p: float, k: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest set of most likely tokens with mass >= top_p: (their probabilities sorted
    descending, zero past the set; their token ids). A full sort only when the top k are not enough."""
    top, ids = probs.topk(min(k, probs.shape[-1]))
    if bool((top.sum(-1) < top_p).any()):
        top, ids = probs.sort(dim=-1, descending=True)
    outside = top.cumsum(-1) - top >= top_p
    outside[:, 0] = False
    return top.masked_fill(outside, 0.0), ids


def _as_list(x) -> list[int]:
    return list(x) if isinstance(x, (list, tuple)) else [x]
