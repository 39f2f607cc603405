"""The `llm` behaviour classifier's prompt-and-parse path against a local OpenAI-compatible server."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from r3.analysis.behaviours import BEHAVIOURS, measure
from r3.analysis.judge import PROMPTS, LLMJudge, openai_chat, parse_count
from r3.errors import R3Error

# the fake judge's verdicts: a behaviour's count is how often its marker word appears in the text
MARKERS = {"verification": "CHECK", "backtracking": "BACK", "subgoal_setting": "GOAL", "backward_chaining": "CHAIN"}


class FakeJudge(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        prompt = body["messages"][-1]["content"]
        text = re.search(r"<reasoning>\n(.*)\n</reasoning>", prompt, re.S).group(1)
        behaviour = next(b for b in BEHAVIOURS if prompt.startswith(PROMPTS[b].split("{text}")[0])
                         and PROMPTS[b].split("{text}")[1] in prompt)
        if "GARBLE" in text:
            content = "I cannot tell."
        else:
            content = f"Reasoning... <count>{text.count(MARKERS[behaviour])}</count>"
        reply = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeJudge.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def test_prompts_are_one_per_behaviour_and_ask_for_a_count_tag():
    assert set(PROMPTS) == set(BEHAVIOURS)
    for prompt in PROMPTS.values():
        assert "{text}" in prompt and "<count>" in prompt
    assert len({p.split("{text}")[1] for p in PROMPTS.values()}) == 4  # distinct questions


@pytest.mark.parametrize("reply,count", [("<count>3</count>", 3), ("so <count> 0 </count>", 0),
                                         ("<count>1</count> no wait <count>2</count>", 2),
                                         ("three", None), ("<count>-1</count>", None), ("", None)])
def test_parse_count(reply, count):
    assert parse_count(reply) == count


def test_llm_judge_counts_through_an_openai_compatible_endpoint(server):
    judge = LLMJudge(openai_chat(server, "judge-model", api_key="sk-test", max_tokens=16, workers=3))
    texts = ["CHECK this. CHECK again. GOAL first.", "BACK off, CHAIN back from target, CHAIN more.", "nothing"]
    counts = judge.count(texts)
    assert counts == [{"verification": 2, "backtracking": 0, "subgoal_setting": 1, "backward_chaining": 0},
                      {"verification": 0, "backtracking": 1, "subgoal_setting": 0, "backward_chaining": 2},
                      dict.fromkeys(BEHAVIOURS, 0)]
    assert len(FakeJudge.seen) == 12  # one request per text and behaviour
    first = FakeJudge.seen[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["model"] == "judge-model" and first["temperature"] == 0.0 and first["max_tokens"] == 16
    assert judge.unparsed == 0


def test_unparsable_judge_replies_count_zero_and_are_tallied(server):
    judge = LLMJudge(openai_chat(server, "m"))
    assert judge.count(["GARBLE CHECK"]) == [dict.fromkeys(BEHAVIOURS, 0)]
    assert judge.unparsed == 4


def test_measure_with_the_judge_aggregates_per_text_kind(server):
    judge = LLMJudge(openai_chat(server, "m"))
    records = [{"first_attempt": "CHECK CHECK", "reflection": "GOAL", "retry": "CHECK"},
               {"first_attempt": "BACK", "reflection": None, "retry": None}]
    m = measure(records, judge)
    assert m["attempt"]["n"] == 2 and m["attempt"]["verification"] == {"mean": 1.0, "share": 0.5}
    assert m["reflection"]["subgoal_setting"] == {"mean": 1.0, "share": 1.0}
    assert m["retry"]["n"] == 1


def test_an_unreachable_endpoint_is_a_clear_error():
    judge = LLMJudge(openai_chat("http://127.0.0.1:9/v1", "m", timeout=5))
    with pytest.raises(R3Error, match=r"judge endpoint http://127.0.0.1:9/v1/chat/completions"):
        judge.count(["text"])


def test_llm_judge_runs_through_the_project_backend(tiny_engine):
    from r3.analysis.judge import backend_chat

    judge = LLMJudge(backend_chat(tiny_engine, max_new_tokens=6))
    counts = judge.count(["Check: 3 + 4 = 7, which is the target.", "no behaviour here"])
    # a random tiny model never writes a count tag: every reply counts 0 and is tallied
    assert counts == [dict.fromkeys(BEHAVIOURS, 0)] * 2 and judge.unparsed == 8
