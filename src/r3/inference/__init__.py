"""Inference backends: batched chat generation behind one interface.

`transformers` is the CPU default; `vllm` is for GPU machines (optional extra).
"""

from __future__ import annotations

from r3.errors import R3Error
from r3.inference.base import Backend, Completion, Request, SamplingParams

BACKENDS = ("transformers", "vllm")


def load_backend(name: str, model_dir: str, **options) -> Backend:
    if name == "transformers":
        from r3.inference.transformers_backend import TransformersBackend

        return TransformersBackend(model_dir, **options)
    if name == "vllm":
        from r3.inference.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, **options)
    raise R3Error(f"inference.backend: unknown backend {name!r}; choose one of {list(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Completion", "Request", "SamplingParams", "load_backend"]
