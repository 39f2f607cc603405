"""TransformersBackend's decode loop on a tiny random Llama: equality with HF generate, order, n samples,
seeding, stop strings, max_new_tokens, prefill."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_model import build_tiny_model_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from r3.inference.base import Request, SamplingParams, cut_at_stop
from r3.inference.transformers_backend import TransformersBackend, _nucleus

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: the tiny model runs on one thread

EOS = 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def make_backend(model_dir, batch_size=4, eos_like: int | None = None) -> TransformersBackend:
    """fp32 backend; `eos_like` swaps the lm_head rows of eos and that token so eos gets generated."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if eos_like is not None:
        with torch.no_grad():
            w = model.lm_head.weight
            w[[EOS, eos_like]] = w[[eos_like, EOS]]
    return TransformersBackend(str(model_dir), dtype="float32", batch_size=batch_size, model=model,
                               tokenizer=AutoTokenizer.from_pretrained(model_dir))


def requests(k: int = 10) -> list[Request]:
    # varied lengths so batches need left padding
    return [Request([{"role": "user", "content": f"q{i} " + "abc " * (i * 7 % 11)}]) for i in range(k)]


def hf_greedy(backend: TransformersBackend, reqs: list[Request], max_new_tokens: int) -> list[list[int]]:
    """HF `generate` on the whole batch; each row's tokens up to and including the first eos."""
    tok = backend.tokenizer
    enc = tok([backend.render(r) for r in reqs], add_special_tokens=False, padding=True, return_tensors="pt")
    out = backend.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=EOS, pad_token_id=EOS)
    rows = out[:, enc["input_ids"].shape[1]:].tolist()
    return [row[: row.index(EOS) + 1] if EOS in row else row for row in rows]


def texts(results) -> list[list[str]]:
    return [[c.text for c in r] for r in results]


@pytest.fixture(scope="module")
def frequent_token(model_dir) -> int:
    """A token the greedy model produces in some rows only: as eos, rows end at varied steps or never."""
    rows = hf_greedy(make_backend(model_dir), requests(), 24)
    firsts = {t: {row.index(t) for row in rows if t in row} for t in set(sum(rows, []))
              if t != EOS and any(t not in row for row in rows)}
    return max(firsts, key=lambda t: (len(firsts[t]), -t))


@pytest.mark.parametrize("batch_size", [3, 16])
def test_greedy_equals_hf_generate(model_dir, frequent_token, batch_size):
    backend = make_backend(model_dir, batch_size, eos_like=frequent_token)
    reqs = requests()
    expected = hf_greedy(backend, reqs, 24)
    got = backend.generate(reqs, SamplingParams(max_new_tokens=24))
    for ids, (c,) in zip(expected, got, strict=True):
        ended = ids[-1] == EOS
        assert c.text == backend.tokenizer.decode(ids[:-1] if ended else ids, skip_special_tokens=True)
        assert c.num_tokens == len(ids)
        assert c.finish_reason == ("stop" if ended else "length")
    # rows left the batch at different steps, and some ran to the end: compaction was exercised
    assert len({c.num_tokens for (c,) in got}) >= 3
    assert {c.finish_reason for (c,) in got} == {"stop", "length"}


def test_results_in_request_order(model_dir):
    backend = make_backend(model_dir, batch_size=3)
    reqs = requests(7)
    params = SamplingParams(max_new_tokens=8)
    together = backend.generate(reqs, params)
    alone = [backend.generate([r], params)[0] for r in reqs]
    assert together == alone


def test_n_samples_and_seeding(model_dir):
    backend = make_backend(model_dir, batch_size=4)
    reqs = requests(3)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, n=3, seed=7)
    first = backend.generate(reqs, params)
    assert [len(r) for r in first] == [3, 3, 3]
    assert all(len(set(r)) > 1 for r in texts(first))  # the samples of one request differ
    assert backend.generate(reqs, params) == first  # same seed, same samples
    other = backend.generate(reqs, dataclasses.replace(params, seed=8))
    assert texts(other) != texts(first)


def test_tiny_top_p_is_greedy(model_dir):
    backend = make_backend(model_dir)
    reqs = requests(4)
    greedy = backend.generate(reqs, SamplingParams(max_new_tokens=10))
    assert backend.generate(reqs, SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1e-6)) == greedy


def test_stop_strings_cut_text_and_end_early(model_dir):
    backend = make_backend(model_dir)
    reqs = requests(6)
    full = backend.generate(reqs, SamplingParams(max_new_tokens=24))
    full_ids = hf_greedy(backend, reqs, 24)
    letters = [ch for (c,) in full for ch in c.text[1:] if ch.isascii() and ch.isalnum()]
    stop = (max(set(letters), key=lambda ch: (letters.count(ch), ch)),)  # a byte token generated mid-answer
    stopped = backend.generate(reqs, SamplingParams(max_new_tokens=24, stop=stop))
    hits = 0
    for (f,), (s,), ids in zip(full, stopped, full_ids, strict=True):
        cut, found = cut_at_stop(f.text, stop)
        assert s.text == cut
        if found:
            hits += 1
            assert s.finish_reason == "stop" and s.text.endswith(stop[0])
            assert s.num_tokens == ids.index(backend.tokenizer.convert_tokens_to_ids(stop[0])) + 1
            assert s.num_tokens < f.num_tokens
        else:
            assert s == f
    assert hits >= 2


def test_max_new_tokens(model_dir):
    backend = make_backend(model_dir)
    for (c,) in backend.generate(requests(5), SamplingParams(max_new_tokens=5)):
        assert (c.num_tokens, c.finish_reason) == (5, "length")


def test_prefill_is_appended_to_prompt(model_dir):
    backend = make_backend(model_dir)
    plain, prefilled = requests(2), [Request(r.messages, prefill="<answer>") for r in requests(2)]
    assert backend.render(prefilled[0]) == backend.render(plain[0]) + "<answer>"
    assert backend.render(plain[0]).endswith("<|im_start|>assistant\n")
    got = backend.generate(prefilled, SamplingParams(max_new_tokens=8))
    expected = hf_greedy(backend, prefilled, 8)  # continues the prompt that ends with the prefill
    assert [c.text for (c,) in got] == [backend.tokenizer.decode(ids, skip_special_tokens=True)
                                        for ids in expected]
    assert got != backend.generate(plain, SamplingParams(max_new_tokens=8))


def test_greedy_samples_share_a_prefill_and_agree(model_dir):
    backend = make_backend(model_dir, batch_size=5)
    reqs = requests(4)
    single = backend.generate(reqs, SamplingParams(max_new_tokens=10))
    assert backend.generate(reqs, SamplingParams(max_new_tokens=10, n=3)) == [r * 3 for r in single]


@pytest.mark.parametrize(("top_p", "support"), [(1.0, 4), (0.85, 3), (0.8, 2), (0.5, 1), (0.0, 1)])
def test_sampler_matches_temperature_and_nucleus(top_p, support):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = (probs.log() * 2).expand(40_000, 4)  # temperature 2 undoes the factor 2
    params = SamplingParams(max_new_tokens=1, temperature=2.0, top_p=top_p)
    picked = TransformersBackend._pick(logits, params, torch.Generator().manual_seed(0))
    freq = torch.bincount(picked, minlength=4) / len(picked)
    expected = torch.cat([probs[:support] / probs[:support].sum(), torch.zeros(4 - support)])
    assert torch.allclose(freq, expected, atol=0.01)


def test_nucleus_falls_back_to_a_full_sort():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    for k in (2, 4):  # the top 2 hold 0.8 < 0.85: the full sort must find the third token
        top, ids = _nucleus(probs, 0.85, k=k)
        assert ids[0, :3].tolist() == [1, 3, 0]
        assert torch.equal(top, torch.tensor([[0.5, 0.3, 0.15, 0.0]])[:, : top.shape[1]])
