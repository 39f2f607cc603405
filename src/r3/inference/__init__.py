"""Inference: batched chat generation behind one interface, served by vLLM on CPU and GPU."""

from __future__ import annotations

from r3.errors import R3Error
from r3.inference.base import Backend, Completion, Request, SamplingParams

BACKENDS = ("vllm",)


def load_backend(name: str, model_dir: str, **options) -> Backend:
    if name == "vllm":
        from r3.inference.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, **options)
    raise R3Error(f"inference.backend: unknown backend {name!r}; choose one of {list(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "Completion", "Request", "SamplingParams", "load_backend"]
