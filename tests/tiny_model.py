"""A tiny random Llama chat model with a byte-level tokenizer, built locally (no downloads) for tests.

`build_tiny_model_dir(path)` saves a `LlamaForCausalLM` (2 layers, hidden 64, 2 heads of 32) and a
`PreTrainedTokenizerFast` (special tokens + the 256 bytes, no merges; eos = pad = <|im_end|>) with a
ChatML template like SmolLM2's, so `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained(path)`
load it like a real model directory. Takes well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 0, 1, 2 as in SmolLM2
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    byte_chars = [bytes_to_unicode()[b] for b in range(256)]  # token id = 3 + byte value
    vocab = {tok: i for i, tok in enumerate(SPECIAL + byte_chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>", additional_special_tokens=SPECIAL)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    # initializer_range 0.2 (not 0.02) so that greedy outputs vary with the prompt
    # head size 32: the smallest vLLM's CPU attention takes
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=16384,
                         initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def build_tiny_model_dir(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    build_model(len(tokenizer), seed).save_pretrained(path)
    return path

