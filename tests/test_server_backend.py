"""Training rollouts on a separate `trl vllm-serve` server (train.server_url): how requests map onto TRL's client,
how its answers become completions, the weight push, and a server that does not answer. TRL's client needs CUDA,
so a recording stand-in plays the server here."""

import contextlib
import socket

import yaml
from conftest import run_stage
from test_train_eval_stages import _failures

from r3.inference import Request, SamplingParams
from r3.inference.server_backend import ServerBackend


class FakeClient:
    """Answers each prompt with `n` completions `[7 + i, 8, eos]` and logprobs -0.5 per token."""

    def __init__(self, eos: int):
        self.eos, self.calls, self.pushed, self.events = eos, [], [], []

    def generate(self, prompts, n, temperature, top_p, max_tokens, logprobs, generation_kwargs):
        self.calls.append({"prompts": prompts, "n": n, "temperature": temperature, "max_tokens": max_tokens,
                           "logprobs": logprobs, **generation_kwargs})
        ids = [[7 + i, 8, self.eos] for _ in prompts for i in range(n)]
        return {"prompt_ids": prompts, "completion_ids": ids,
                "logprobs": [[[-0.5]] * len(c) for c in ids] if logprobs is not None else None}

    def init_communicator(self, device):
        self.events.append("init")

    @contextlib.contextmanager
    def weight_update(self):
        self.events.append("start")
        yield
        self.events.append("finish")

    def update_named_param(self, name, tensor):
        self.pushed.append(name)

    def reset_prefix_cache(self):
        self.events.append("reset")


def _backend(tiny_model_dir):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    return ServerBackend("http://server:8000", str(tiny_model_dir), client=FakeClient(eos))


def test_requests_map_onto_the_client_and_answers_become_completions(tiny_model_dir):
    backend = _backend(tiny_model_dir)
    reqs = [Request([{"role": "user", "content": "hi"}], prefill="<answer>"),
            Request([{"role": "user", "content": "x"}])]
    out = backend.generate(reqs, SamplingParams(max_new_tokens=5, temperature=1.0, n=2, stop=("</answer>",),
                                                logprobs=True))
    [call] = backend.client.calls
    assert call["prompts"] == [backend.encode(r) for r in reqs] and call["n"] == 2 and call["logprobs"] == 0
    assert call["stop"] == ["</answer>"] and call["include_stop_str_in_output"] and "seed" not in call
    assert [[c.token_ids[0] for c in per] for per in out] == [[7, 8], [7, 8]]
    first = out[0][0]
    assert first.logprobs == (-0.5, -0.5, -0.5) and first.num_tokens == 3 and first.finish_reason == "stop"
    assert first.text == backend.tokenizer.decode([7, 8], skip_special_tokens=True)


def test_greedy_n_is_one_request_copied_and_no_logprobs_unless_asked(tiny_model_dir):
    backend = _backend(tiny_model_dir)
    out = backend.generate([Request([{"role": "user", "content": "hi"}])], SamplingParams(max_new_tokens=3, n=3))
    assert backend.client.calls[0]["n"] == 1 and backend.client.calls[0]["logprobs"] is None
    assert out[0] == [out[0][0]] * 3 and out[0][0].logprobs == ()


def test_weights_are_pushed_once_per_sync_inside_one_update(tiny_model_dir):
    import torch

    backend = _backend(tiny_model_dir)
    weights = [("a.weight", torch.zeros(2)), ("b.weight", torch.ones(2))]
    backend.sync_weights(weights)
    backend.sync_weights(weights)
    assert backend.client.pushed == ["a.weight", "b.weight"] * 2
    assert backend.client.events == ["init", "start", "finish", "reset", "start", "finish", "reset"]


def test_a_server_url_that_does_not_answer_is_one_line_naming_the_param(workdir):
    _, failures = _failures(workdir, "countdown")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = yaml.safe_load((workdir / "params.yaml").read_text())
    p["train"]["server_url"] = f"http://127.0.0.1:{port}"
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))
    proc = run_stage(workdir, "train.py", "--task", "countdown", "--failures", str(failures), "--out", "m",
                     "--metrics", "t.json", "--checkpoints", "ck", "--live", "live")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert f"train.server_url: http://127.0.0.1:{port} does not answer" in errors[0]
    assert not any((workdir / name).exists() for name in ("m", "t.json", "live"))
