"""Generation on a separate vLLM server started with `trl vllm-serve`: the scale-out layout (open-r1's recipe:
the server on its own GPU(s), training on the others), through TRL's own client.

Used by training when `train.server_url` is set. Every training rank sends its rollout requests to the server; the
main rank pushes the policy's weights to it over TRL's NCCL communicator before each rollout (the others
wait at a barrier). TRL's client works with CUDA only, so this path is not exercised on the CPU machines
here beyond its request mapping and its errors (tests/test_server_backend.py); the in-process engine
(`vllm_backend.py`) is the one the CPU tests run.

Randomness: the server samples from its own generator (start it with `--seed`); a per-request seed would
give the G copies of a prompt the same sample, so none is sent, and reruns are not bit-reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from r3.errors import R3Error
from r3.inference.base import Backend, Completion, Request, SamplingParams, cut_at_stop


class ServerBackend(Backend):
    def __init__(self, url: str, model_dir: str, connection_timeout: float = 5.0, client=None, **_ignored):
        from transformers import AutoTokenizer

        if client is None:
            from trl.generation.vllm_client import VLLMClient

            try:
                client = VLLMClient(base_url=url, connection_timeout=connection_timeout)
            except (ConnectionError, OSError) as exc:
                raise R3Error(f"train.server_url: {url} does not answer ({type(exc).__name__}); start the "
                              "server first: trl vllm-serve --model <the policy's model>") from None
        self.client, self.url = client, url
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._communicator = False

    def generate(self, requests: list[Request], params: SamplingParams,
                 desc: str = "generate") -> list[list[Completion]]:
        if not requests:
            return []
        copies = params.n if params.greedy else 1  # vLLM refuses n > 1 with greedy decoding
        n = params.n // copies
        out = self.client.generate(
            prompts=[self.encode(r) for r in requests], n=n, temperature=max(params.temperature, 0.0),
            top_p=params.top_p, max_tokens=params.max_new_tokens, logprobs=0 if params.logprobs else None,
            generation_kwargs={"stop": list(params.stop) or None, "include_stop_str_in_output": True})
        completions = [self._completion(ids, lps, params) for ids, lps in
                       zip(out["completion_ids"], out.get("logprobs") or [None] * len(out["completion_ids"]),
                           strict=True)]
        return [completions[i * n:(i + 1) * n] * copies for i in range(len(requests))]

    def _completion(self, ids: list[int], logprobs, params: SamplingParams) -> Completion:
        text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
        ended = stopped or (ids and ids[-1] == self.tokenizer.eos_token_id)
        return Completion(text=text, num_tokens=len(ids),
                          finish_reason="stop" if ended or len(ids) < params.max_new_tokens else "length",
                          token_ids=tuple(ids),
                          logprobs=tuple(step[0] for step in logprobs) if params.logprobs and logprobs else ())

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """The main rank streams the weights to the server (NCCL); every rank waits until it has them."""
        from accelerate import PartialState

        state = PartialState()
        if state.is_main_process:
            if not self._communicator:
                device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"  # TRL: CUDA only
                self.client.init_communicator(device=device)
                self._communicator = True
            with self.client.weight_update():
                for name, tensor in named_tensors:
                    self.client.update_named_param(name, tensor)
            self.client.reset_prefix_cache()
        state.wait_for_everyone()
