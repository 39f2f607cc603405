"""The `llm` behaviour classifier: an LLM judge, one prompt per behaviour, answering `<count>N</count>`.

The judge talks to a chat function: the project's own inference backend over any local model
(`backend_chat`), or any OpenAI-compatible chat-completions endpoint (`openai_chat`: vLLM,
llama.cpp server, a hosted API).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from r3.analysis.behaviours import BEHAVIOURS, Classifier
from r3.errors import R3Error
from r3.inference import Backend, Request, SamplingParams

Chat = Callable[[list[list[dict[str, str]]]], list[str]]  # conversations -> one reply each

_INTRO = ("Here is a piece of reasoning that a language model wrote while solving a Countdown puzzle (combine "
          "the given numbers with +, -, *, / to reach a target) or a tool-calling task, or while reflecting on "
          "a failed attempt.\n\n<reasoning>\n{text}\n</reasoning>\n\n")
_ASK = ("Count the distinct {what} in the reasoning. Answer with the count between the tags <count> </count>, "
        "for example <count>2</count>; if there are none, answer <count>0</count>.")
PROMPTS = {
    "verification": _INTRO + "Evaluate whether the reasoning contains answer-verification steps: the writer "
    "checks an intermediate or final result against the target or the rules, e.g. 'this gives 13, which is not "
    "15' or 'check: 9 - 3 = 6 and 6 * 4 = 24, correct'. Computing a value without checking it is not "
    "verification. " + _ASK.format(what="verification steps"),
    "backtracking": _INTRO + "Evaluate whether the reasoning contains backtracking: the writer realises a path "
    "will not work and explicitly abandons it for another, e.g. 'that does not work, let me try multiplying "
    "instead'. Advice for a future attempt is not backtracking. " + _ASK.format(what="backtracking instances"),
    "subgoal_setting": _INTRO + "Evaluate whether the reasoning sets explicit subgoals: the writer breaks the "
    "problem into intermediate goals, e.g. 'first I need to make 12 from 7 and 5, then add 3'. "
    + _ASK.format(what="subgoals"),
    "backward_chaining": _INTRO + "Evaluate whether the reasoning uses backward chaining: the writer starts "
    "from the target and works back to what is needed, e.g. '24 = 4 * 6, so I need a 6 from 9 and 3'. "
    + _ASK.format(what="backward-chaining steps"),
}
_COUNT = re.compile(r"<count>\s*(\d+)\s*</count>")


def parse_count(reply: str) -> int | None:
    """The judge's count (the last `<count>N</count>` in its reply), or None if it gave none."""
    found = _COUNT.findall(reply)
    return int(found[-1]) if found else None


class LLMJudge(Classifier):
    """Counts each behaviour with one judge prompt per (text, behaviour); unparsable replies count 0."""

    name = "llm"

    def __init__(self, chat: Chat):
        self.chat = chat
        self.unparsed = 0  # replies with no <count> tag so far (reported by the analysis)

    def count(self, texts: Sequence[str]) -> list[dict[str, int]]:
        convs = [[{"role": "user", "content": PROMPTS[b].format(text=t)}] for t in texts for b in BEHAVIOURS]
        replies = self.chat(convs) if convs else []
        counts = [parse_count(r) for r in replies]
        self.unparsed += sum(c is None for c in counts)
        it = iter(c or 0 for c in counts)
        return [{b: next(it) for b in BEHAVIOURS} for _ in texts]


def backend_chat(backend: Backend, max_new_tokens: int = 32) -> Chat:
    """Greedy replies from the project's inference backend (any local model directory)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, stop=("</count>",))

    def chat(convs):
        return [c[0].text for c in backend.generate([Request(messages=m) for m in convs], params, desc="judge")]

    return chat


def openai_chat(url: str, model: str, api_key: str | None = None, max_tokens: int = 32, timeout: float = 120,
                workers: int = 8) -> Chat:
    """Replies from an OpenAI-compatible server: POST `<url>/chat/completions` (url like http://host:8000/v1)."""
    endpoint = url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def one(messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": model, "messages": messages, "temperature": 0.0, "max_tokens": max_tokens})
        req = urllib.request.Request(endpoint, data=body.encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                payload = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise R3Error(f"judge endpoint {endpoint}: HTTP {exc.code} {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise R3Error(f"judge endpoint {endpoint}: {exc}") from None
        except ValueError:
            raise R3Error(f"judge endpoint {endpoint}: reply is not JSON") from None
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise R3Error(f"judge endpoint {endpoint}: reply has no choices[0].message.content") from None

    def chat(convs):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, convs))

    return chat


def api_key_from_env(name: str | None) -> str | None:
    return os.environ.get(name) if name else None
