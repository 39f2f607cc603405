"""Extracting tool calls from model output and comparing them with a BFCL-style ground truth.

Answer format: a JSON list of calls `[{"name": ..., "arguments": {...}}]` inside
`<tool_call>...</tool_call>`. Ground truth ("expected"): `[{"name": str, "arguments": {arg: [allowed...]}}]`
where an allowed value "" means the argument may be omitted (BFCL's convention). Inside an allowed
value, a dict maps each key to its own list of allowed values (BFCL's nested-dict convention); a
non-list there is taken as the single allowed value.

Everything here is bounded: model output is untrusted, so extraction rejects huge or deeply nested
text before parsing and never raises anything but ToolCallFormatError.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

from r3.tasks.base import CORRECT, Verdict

OPEN, CLOSE = "<tool_call>", "</tool_call>"
MAX_CHARS = 100_000  # longer completions are rejected unparsed (bounded time)
MAX_DEPTH = 32  # json.loads recurses; reject deep nesting before it can
_FENCE_LANG = re.compile(r"```[A-Za-z]*")  # only ever matched at one position: linear time
_STD = re.compile(r"[\s,./\-_*^]")


class ToolCallFormatError(ValueError):
    """The completion holds no well-formed tool-call list."""


# ---------------------------------------------------------------- extraction


def _nesting_depth(text: str) -> int:
    """Max bracket depth outside JSON strings: a linear scan, so hostile input stays cheap."""
    depth = best = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _loads(text: str) -> Any:
    if _nesting_depth(text) > MAX_DEPTH:
        raise ToolCallFormatError(f"JSON nested deeper than {MAX_DEPTH}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ToolCallFormatError(f"invalid JSON: {str(e)[:80]}") from None


def _check_call(call: Any) -> dict:
    if not isinstance(call, dict):
        raise ToolCallFormatError(f"a call is a {type(call).__name__}, not an object")
    extra = set(call) - {"name", "arguments"}
    if extra:
        raise ToolCallFormatError(f"unexpected keys in a call: {sorted(extra)}")
    name, args = call.get("name"), call.get("arguments")
    if not isinstance(name, str) or not name:
        raise ToolCallFormatError("a call has no 'name' string")
    if isinstance(args, str):  # some models JSON-encode the arguments (OpenAI style)
        args = _loads(args)
    if not isinstance(args, dict):
        raise ToolCallFormatError(f"'arguments' of {name!r} is not an object")
    return {"name": name, "arguments": args}


def _blocks(text: str) -> list[str]:
    """Contents of the <tool_call> blocks; the last may lack its closing tag (stop string)."""
    parts = text.split(OPEN)
    if len(parts) == 1:
        raise ToolCallFormatError(f"no {OPEN} tag")
    blocks = []
    for i, part in enumerate(parts[1:], start=1):
        if CLOSE in part:
            blocks.append(part.split(CLOSE, 1)[0])
        elif i == len(parts) - 1:
            blocks.append(part)
        else:
            raise ToolCallFormatError(f"{OPEN} opened again before {CLOSE}")
    return blocks


def _unfence(block: str) -> str:
    """Strip whitespace and a ``` / ```json fence (string operations, no backtracking regex)."""
    block = block.strip()
    fence = _FENCE_LANG.match(block)
    if fence and block.endswith("```") and len(block) >= fence.end() + 3:
        block = block[fence.end() : -3].strip()
    return block


def extract_calls(text: str) -> list[dict]:
    """The tool calls in a completion, as [{"name": str, "arguments": dict}]; ToolCallFormatError if none."""
    if not isinstance(text, str):
        raise ToolCallFormatError("completion is not text")
    if len(text) > MAX_CHARS:
        raise ToolCallFormatError(f"completion longer than {MAX_CHARS} characters")
    calls: list[dict] = []
    for block in _blocks(text):
        value = _loads(_unfence(block))
        for call in value if isinstance(value, list) else [value]:
            calls.append(_check_call(call))
    return calls


# ---------------------------------------------------------------- comparison


def _std(s: str) -> str:
    """BFCL's string standardisation: case, whitespace and ,./-_*^ don't matter; quotes unified."""
    return _STD.sub("", s).lower().replace("'", '"')


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _alternatives(allowed: Any) -> list:
    return allowed if isinstance(allowed, list) else [allowed]


def value_matches(got: Any, allowed: Any) -> bool:
    """Whether a predicted value equals one allowed value (see the module docstring for conventions)."""
    if isinstance(allowed, bool) or allowed is None:
        return got is allowed
    if _is_num(allowed):
        return _is_num(got) and got == allowed
    if isinstance(allowed, str):
        return isinstance(got, str) and _std(got) == _std(allowed)
    if isinstance(allowed, list):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(allowed)
            and all(value_matches(g, a) for g, a in zip(got, allowed, strict=True))
        )
    if isinstance(allowed, dict):
        return isinstance(got, dict) and not _args_mismatch(got, allowed)
    return got == allowed


def _short(x: Any, limit: int = 120) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _args_mismatch(got: dict, expected: dict) -> list[str]:
    """What is wrong with `got` against {arg: [allowed...]}; empty when it matches."""
    problems = [f"unexpected arg {k!r}" for k in got if k not in expected]
    for k, allowed in expected.items():
        alts = _alternatives(allowed)
        if k not in got:
            if "" not in alts:
                problems.append(f"missing arg {k!r}")
        elif not any(value_matches(got[k], a) for a in alts):
            problems.append(f"arg {k!r}: got {_short(got[k])}, allowed {_short(alts)}")
    return problems


def _perfect_matching(ok: list[list[int]], used: set[int], i: int = 0) -> bool:
    """Backtracking: can expected calls i.. each take a distinct predicted call from ok[i]?"""
    if i == len(ok):
        return True
    for j in ok[i]:
        if j not in used:
            used.add(j)
            if _perfect_matching(ok, used, i + 1):
                return True
            used.discard(j)
    return False


def compare_calls(predicted: list[dict], expected: list[dict]) -> Verdict:
    """Order-independent comparison: wrong_tool if the multiset of names differs, else wrong_arguments
    unless every expected call can be paired with a distinct predicted call whose arguments match."""
    got_names = Counter(c["name"] for c in predicted)
    want_names = Counter(c["name"] for c in expected)
    if got_names != want_names:
        want, got = sorted(want_names.elements()), sorted(got_names.elements())
        return Verdict(False, "wrong_tool", f"expected calls {want}, got {got}")
    # per expected call: (index, mismatches) of every predicted call of the same name
    problems = [
        [
            (j, _args_mismatch(p["arguments"], e["arguments"]))
            for j, p in enumerate(predicted)
            if p["name"] == e["name"]
        ]
        for e in expected
    ]
    ok = [[j for j, prob in cands if not prob] for cands in problems]
    if _perfect_matching(ok, set()):
        return Verdict(True, CORRECT)
    for e, cands, matches in zip(expected, problems, ok, strict=True):
        if not matches:  # report the closest predicted call of the same name
            closest = min((prob for _, prob in cands), key=len)
            return Verdict(False, "wrong_arguments", f"{e['name']}: " + "; ".join(closest[:3]))
    return Verdict(False, "wrong_arguments", "calls match individually but not as a set (duplicated call)")
