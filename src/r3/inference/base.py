"""The backend interface shared by baseline, failure sampling, evaluation and training rollouts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    n: int = 1  # samples per request
    seed: int = 0
    stop: tuple[str, ...] = ()  # generation ends after the first of these strings
    logprobs: bool = False  # return each sampled token's logprob (training rollouts: importance sampling)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Request:
    """One conversation to continue; `prefill` is text already written in the assistant turn."""

    messages: list[dict[str, str]]
    prefill: str = ""


@dataclass(frozen=True)
class Completion:
    text: str  # generated text only (not the prefill), cut just after a stop string
    num_tokens: int  # tokens generated (the budget this completion used)
    finish_reason: str = field(default="stop")  # "stop" (eos or stop string) or "length"
    token_ids: tuple[int, ...] = ()  # the sampled token ids, eos included (training rollouts need them)
    logprobs: tuple[float, ...] = ()  # with SamplingParams.logprobs: the sampler's logprob of each token


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` just after the earliest stop string; say whether one was found."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return (text[: min(ends)], True) if ends else (text, False)


class Backend(ABC):
    """Batched chat generation over `self.tokenizer`'s chat template. Deterministic for a fixed seed."""

    tokenizer = None

    def render(self, request: Request) -> str:
        """The prompt text: the chat template with the assistant turn opened, plus the prefill."""
        prompt = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return prompt + request.prefill

    def encode(self, request: Request) -> list[int]:
        """The prompt token ids the model is fed for `request` (no special tokens added to the template's)."""
        return self.tokenizer(self.render(request), add_special_tokens=False)["input_ids"]

    @abstractmethod
    def generate(
        self, requests: list[Request], params: SamplingParams, desc: str = "generate"
    ) -> list[list[Completion]]:
        """Return `params.n` completions for each request, in request order."""

