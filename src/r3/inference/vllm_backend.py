"""Generation with vLLM for GPU machines.

vLLM 0.33 pins torch 2.14 and transformers < 5.21, which conflict with this project's CPU pins,
so it is not a pyproject extra: install it into the GPU machine's environment (README).

The prompt is rendered with the model's own chat template plus the prefill, exactly as the
transformers backend does, and passed to `LLM.generate` as token ids, so both backends see the
same tokens. Not exercised by the CPU test suite (vLLM needs a GPU).
"""

from __future__ import annotations

from r3.errors import R3Error
from r3.inference.base import Backend, Completion, Request, SamplingParams, cut_at_stop


class VLLMBackend(Backend):
    def __init__(self, model_dir: str, dtype: str = "bfloat16", batch_size: int = 256, **engine_options):
        try:
            import vllm
        except ImportError:
            raise R3Error(
                "inference.backend: vllm is not installed (see README: running on a GPU)"
            ) from None
        self._vllm = vllm
        # vLLM schedules its own batches; batch_size caps concurrent sequences
        self.llm = vllm.LLM(model=model_dir, dtype=dtype, max_num_seqs=batch_size, **engine_options)
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, request: Request) -> str:
        prompt = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
        return prompt + request.prefill

    def generate(self, requests: list[Request], params: SamplingParams,
                 desc: str = "generate") -> list[list[Completion]]:
        sampling = self._vllm.SamplingParams(
            n=params.n, temperature=max(params.temperature, 0.0), top_p=params.top_p,
            max_tokens=params.max_new_tokens, seed=params.seed, stop=list(params.stop) or None,
            include_stop_str_in_output=True, skip_special_tokens=True)
        # token ids, not text: vLLM would add special tokens (a second BOS) to a rendered chat prompt
        prompts = [{"prompt_token_ids": self.tokenizer(self.render(r), add_special_tokens=False)["input_ids"]}
                   for r in requests]
        outputs = self.llm.generate(prompts, sampling, use_tqdm=True)
        results = []
        for out in outputs:
            per_request = []
            for o in out.outputs:
                text, _ = cut_at_stop(o.text, params.stop)
                reason = "length" if o.finish_reason == "length" else "stop"
                per_request.append(Completion(text=text, num_tokens=len(o.token_ids), finish_reason=reason))
            results.append(per_request)
        return results
