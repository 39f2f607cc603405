"""The bundled model: found inside its package, dequantised, saved as a plain HF checkpoint."""

import pytest

from r3.errors import R3Error
from r3.inference import Request, SamplingParams, load_backend
from r3.models import bundled_gguf_path, materialize


def test_bundled_gguf_is_found_without_importing_the_package():
    path = bundled_gguf_path("smollm2-135m-instruct")
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_unknown_bundled_model_is_a_clean_error():
    with pytest.raises(R3Error, match="unknown bundled model"):
        bundled_gguf_path("gpt-5")


@pytest.mark.slow
def test_bundled_model_materialises_and_answers(tmp_path):
    info = materialize("bundled:smollm2-135m-instruct", None, tmp_path / "m")
    assert 130e6 < info["n_params"] < 140e6
    assert (tmp_path / "m" / "model.safetensors").is_file()
    backend = load_backend("vllm", str(tmp_path / "m"), dtype="float32", batch_size=2, enforce_eager=True,
                           kv_cache_gib=1, max_model_len=2048)
    [[reply]] = backend.generate([Request([{"role": "user", "content": "What is the capital of France?"}])],
                                 SamplingParams(max_new_tokens=16))
    assert "Paris" in reply.text  # a real instruct model, not random weights
