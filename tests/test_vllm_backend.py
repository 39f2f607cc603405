"""VLLMBackend, the project's one generation engine, on the tiny model: results against HF transformers in
float32 (greedy tokens, sampler logprobs), n samples, seeding, stop strings, weight sync (LoRA merged), errors."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from tiny_model import build_model
from transformers import AutoModelForCausalLM

from r3.errors import R3Error
from r3.inference import Request, SamplingParams, load_backend
from r3.inference.base import cut_at_stop
from r3.inference.vllm_backend import configure_environment, core_ranges
from r3.training.grpo import policy_weights

EOS = 2


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def requests(k: int = 4, long: bool = False) -> list[Request]:
    """Distinct chat requests of varied length; `long` ones span several of the engine's KV blocks (128 tokens
    on CPU), so a prefix cache would serve them."""
    pad = "lorem ipsum " * (30 if long else 0)
    return [Request([{"role": "user", "content": pad + f"q{i} " + "abc " * (i * 7 % 11)}]) for i in range(k)]


def hf_greedy(model, engine, reqs: list[Request], max_new_tokens: int) -> list[list[int]]:
    """HF `generate` (no sampling), one request at a time; each row's tokens up to and including the first eos."""
    rows = []
    for r in reqs:
        ids = torch.tensor([engine.encode(r)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
        row = out[0, ids.shape[1]:].tolist()
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def engine_greedy(engine, reqs: list[Request], max_new_tokens: int) -> list[list[int]]:
    return [list(c.token_ids) for (c,) in engine.generate(reqs, SamplingParams(max_new_tokens=max_new_tokens))]


def text_matches(engine, ids: list[int], text: str) -> bool:
    """`text` is the decoded ids without eos; vLLM's detokenizer holds back an unfinished UTF-8 character at the
    end (the tiny model writes random bytes)."""
    decoded = engine.tokenizer.decode(ids[:-1] if ids[-1] == EOS else ids, skip_special_tokens=True)
    return text == decoded or (decoded.startswith(text) and set(decoded[len(text):]) == {"\ufffd"})


def hf_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """log softmax(logits / temperature) of each completion token, as the policy computes it."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1: -1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(completion)[:, None])[:, 0]


# ---------------------------------------------------------------- decoding


def test_greedy_equals_hf_generate(tiny_engine, hf_model):
    reqs = requests(4) + [Request(requests(1)[0].messages, prefill="<answer>")]
    expected = hf_greedy(hf_model, tiny_engine, reqs, 24)
    got = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=24))
    assert len(got) == len(reqs)
    for ids, (c,) in zip(expected, got, strict=True):
        assert list(c.token_ids) == ids
        ended = ids[-1] == EOS
        assert c.num_tokens == len(ids) and c.finish_reason == ("stop" if ended else "length")
        assert text_matches(tiny_engine, ids, c.text)
    assert len({tuple(ids) for ids in expected}) == len(reqs)  # the prompts (and the prefill) matter


def test_results_in_request_order_with_n_samples(tiny_engine):
    reqs = requests(5)
    greedy = SamplingParams(max_new_tokens=8)
    together = tiny_engine.generate(reqs, greedy)
    assert together == [tiny_engine.generate([r], greedy)[0] for r in reqs]
    assert len({c.token_ids for (c,) in together}) == 5
    sampled = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=1))
    assert [len(r) for r in sampled] == [3] * 5
    for samples in sampled:
        assert len({c.token_ids for c in samples}) == 3  # the n samples of a request differ


def test_greedy_n_samples_are_copies(tiny_engine):
    reqs = requests(3)
    single = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=8))
    assert tiny_engine.generate(reqs, SamplingParams(max_new_tokens=8, n=3)) == [r * 3 for r in single]


def test_group_copies_of_a_prompt_get_distinct_samples(tiny_engine):
    # TRL hands the rollout G consecutive copies of each prompt, each generated with n=1
    reqs = [r for r in requests(2) for _ in range(4)]
    got = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=12, temperature=1.0, seed=3))
    assert len({c.token_ids for (c,) in got[:4]}) == 4 and len({c.token_ids for (c,) in got[4:]}) == 4


def test_same_seed_same_samples_other_seed_others(tiny_engine):
    reqs = [r for r in requests(3) for _ in range(2)]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    first = tiny_engine.generate(reqs, params)
    tiny_engine.generate(reqs, dataclasses.replace(params, seed=99))  # the global generator moved on meanwhile
    again = tiny_engine.generate(reqs, params)
    assert [[(c.token_ids, c.text) for c in r] for r in again] == [[(c.token_ids, c.text) for c in r] for r in first]
    other = tiny_engine.generate(reqs, dataclasses.replace(params, seed=8))
    assert [c.token_ids for (c,) in other] != [c.token_ids for (c,) in first]
    assert sum(a.token_ids != b.token_ids for (a,), (b,) in zip(first, other, strict=True)) >= 4


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_are_the_policys_at_the_sampling_temperature(tiny_engine, hf_model, temperature):
    reqs = requests(3)
    got = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=16, temperature=temperature, n=2, seed=5,
                                                    logprobs=True))
    for r, samples in zip(reqs, got, strict=True):
        for c in samples:
            assert len(c.logprobs) == len(c.token_ids) == c.num_tokens > 0
            expected = hf_logprobs(hf_model, tiny_engine.encode(r), list(c.token_ids), temperature)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
    if temperature != 1.0:  # the processed logprobs (after temperature), not the raw model's
        c = got[0][0]
        raw = hf_logprobs(hf_model, tiny_engine.encode(reqs[0]), list(c.token_ids), 1.0)
        assert (torch.tensor(c.logprobs) - raw).abs().max() > 1e-2
    assert all(c.logprobs == () for (c,) in tiny_engine.generate(reqs, SamplingParams(max_new_tokens=4)))


def test_stop_strings_cut_the_text_and_end_generation(tiny_engine, hf_model):
    reqs = requests(6)
    full = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=24))
    letters = [ch for (c,) in full for ch in c.text[1:] if ch.isascii() and ch.isalnum()]
    stop = (max(set(letters), key=lambda ch: (letters.count(ch), ch)),)  # a byte generated mid-answer
    stopped = tiny_engine.generate(reqs, SamplingParams(max_new_tokens=24, stop=stop))
    stop_id = tiny_engine.tokenizer.convert_tokens_to_ids(stop[0])
    hits = 0
    for (f,), (s,) in zip(full, stopped, strict=True):
        cut, found = cut_at_stop(f.text, stop)
        assert s.text == cut
        if found:
            hits += 1
            assert s.finish_reason == "stop" and s.text.endswith(stop[0])
            assert list(s.token_ids) == list(f.token_ids[: f.token_ids.index(stop_id) + 1])
            assert s.num_tokens == len(s.token_ids) < f.num_tokens
        else:
            assert s == f
    assert hits >= 2


def test_max_new_tokens_ends_with_length(tiny_engine):
    for (c,) in tiny_engine.generate(requests(5), SamplingParams(max_new_tokens=5, temperature=1.0, seed=2)):
        assert (c.num_tokens, len(c.token_ids), c.finish_reason) == (5, 5, "length")


def test_a_long_prompt_shortens_only_its_own_budget(tiny_engine):
    """Near the context limit a prompt gets what room is left; the other prompts of the call keep theirs."""
    short = requests(1)[0]
    room = 3
    filler = "x" * (tiny_engine.max_model_len - len(tiny_engine.encode(short)) - room)
    near_limit = Request([{"role": "user", "content": short.messages[0]["content"] + filler}])
    assert len(tiny_engine.encode(near_limit)) == tiny_engine.max_model_len - room  # one byte = one token
    (a,), (b,) = tiny_engine.generate([near_limit, short], SamplingParams(max_new_tokens=6, temperature=1.0, seed=4))
    assert (a.num_tokens, a.finish_reason) == (room, "length")
    assert (b.num_tokens, b.finish_reason) == (6, "length")


# ---------------------------------------------------------------- weight sync


def test_sync_weights_replaces_the_model_and_back(engine_to_restore, hf_model):
    engine = engine_to_restore
    reqs = requests(3, long=True)  # served from the prefix cache if it survived the sync
    original = engine_greedy(engine, reqs, 12)
    assert original == hf_greedy(hf_model, engine, reqs, 12)
    other = build_model(len(engine.tokenizer), seed=1)
    engine.sync_weights(other.state_dict().items())
    expected = hf_greedy(other, engine, reqs, 12)
    assert expected != original
    assert engine_greedy(engine, reqs, 12) == expected
    engine.sync_weights(hf_model.state_dict().items())
    assert engine_greedy(engine, reqs, 12) == original


def test_eos_ends_a_completion_as_in_hf_generate(engine_to_restore, hf_model, tiny_model_dir):
    engine, reqs = engine_to_restore, requests(8)
    rows = hf_greedy(hf_model, engine, reqs, 24)
    # a token the greedy model writes in some rows only, at varied steps: made eos, rows end at varied steps
    firsts = {t: {row.index(t) for row in rows if t in row} for t in set(sum(rows, []))
              if t != EOS and any(t not in row for row in rows)}
    frequent = max(firsts, key=lambda t: (len(firsts[t]), -t))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        w = model.lm_head.weight
        w[[EOS, frequent]] = w[[frequent, EOS]]
    engine.sync_weights(model.state_dict().items())
    expected = hf_greedy(model, engine, reqs, 24)
    got = engine.generate(reqs, SamplingParams(max_new_tokens=24))
    for ids, (c,) in zip(expected, got, strict=True):
        assert list(c.token_ids) == ids and c.num_tokens == len(ids)  # eos included, as the trainer needs it
        assert c.finish_reason == ("stop" if ids[-1] == EOS else "length")
        assert text_matches(engine, ids, c.text)
    assert {c.finish_reason for (c,) in got} == {"stop", "length"} and len({c.num_tokens for (c,) in got}) >= 3


def test_lora_policy_is_synced_merged_and_left_unmerged(engine_to_restore, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    engine = engine_to_restore
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # peft starts B at zero: a no-op adapter would prove nothing
    policy.eval()
    reqs = requests(3, long=True)
    ids = torch.tensor([engine.encode(reqs[0])])
    with torch.no_grad():
        adapted = policy(input_ids=ids).logits
    merged = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                            policy.peft_config["default"])
    merged.load_state_dict(policy.state_dict())
    merged = merged.merge_and_unload().eval()
    expected = hf_greedy(merged, engine, reqs, 12)
    assert expected != engine_greedy(engine, reqs, 12)  # the adapter changes the greedy output

    with policy_weights(policy) as weights:
        names = [n for n, _ in weights]
        assert names == list(merged.state_dict())  # the base checkpoint's names, no lora_ tensors
        engine.sync_weights(weights)
    assert engine_greedy(engine, reqs, 12) == expected
    # after the sync the adapter is unmerged again: the base weights are the base model's again, and the output
    # is base + adapter (once), with the adapter in the graph (a merged one would get no gradient: no training)
    assert not any(getattr(m, "merged", False) for m in policy.modules())
    base_weights = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    for name, t in policy.state_dict().items():
        if "lora_" not in name:
            key = name.removeprefix("base_model.model.").replace(".base_layer", "")
            torch.testing.assert_close(t, base_weights[key], atol=1e-5, rtol=0, msg=name)
    logits = policy(input_ids=ids).logits
    torch.testing.assert_close(logits.detach(), adapted, atol=1e-4, rtol=1e-4)
    torch.log_softmax(logits, dim=-1)[0, :-1].gather(1, ids[0, 1:, None]).sum().backward()
    lora_b = [p for name, p in policy.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


# ---------------------------------------------------------------- settings and errors


def test_core_ranges():
    assert core_ranges([0, 1, 2, 5]) == "0-2,5"
    assert core_ranges([7, 3, 4]) == "3-4,7" and core_ranges([4]) == "4"


def test_configure_environment_keeps_variables_already_set(monkeypatch):
    names = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CONFIGURE_LOGGING", "VLLM_CPU_OMP_THREADS_BIND",
             "VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_KVCACHE_SPACE")
    for name in names:
        monkeypatch.setenv(name, "")  # so that monkeypatch restores each one, set or not, afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")
    configure_environment(kv_cache_gib=3)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7" and os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    if not torch.cuda.is_available():
        assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
        monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")
        monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
        configure_environment(kv_cache_gib=3)
        assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == core_ranges(os.sched_getaffinity(0))


def test_a_prompt_past_max_model_len_names_the_setting(tiny_engine):
    long = Request([{"role": "user", "content": "x" * tiny_engine.max_model_len}])  # one token per byte
    with pytest.raises(R3Error, match=r"inference\.max_model_len=16384"):
        tiny_engine.generate(requests(1) + [long], SamplingParams(max_new_tokens=4))


def test_an_unknown_backend_names_the_setting(tiny_model_dir):
    with pytest.raises(R3Error, match=r"inference\.backend: unknown backend 'transformers'"):
        load_backend("transformers", str(tiny_model_dir))
