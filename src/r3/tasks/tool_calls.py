"""Extracting tool calls from model output and comparing them with a BFCL-style ground truth.

Answer format: a JSON list of calls `[{"name": ..., "arguments": {...}}]` inside
`<tool_call>...</tool_call>`. Ground truth ("expected"): `[{"name": str, "arguments": {arg: [allowed...]}}]`
where an allowed value "" means the argument may be omitted (BFCL's convention). Inside an allowed
value, a dict maps each key to its own list of allowed values (BFCL's nested-dict convention); a
non-list there is taken as the single allowed value. Per tool, the ground truth may carry the schema's
`{"required": [arg...], "types": {arg: type}}` where a type is the typing part of a BFCL parameter schema:
`{"type": "integer"|"float"|"string"|"boolean"|"array"|"tuple"|"dict"|"any", "items"?: type,
"properties"?: {key: type}}`.

Comparison follows BFCL's AST checker (bfcl_eval/eval_checker/ast_eval/ast_checker.py:
simple_function_checker, type_checker, standardize_string):
- strings: both sides go through standardize_string (drop spaces and ,./-_*^, lowercase, ' -> ").
- numbers are never booleans; where the schema says float an int is accepted (BFCL's Python
  auto-conversion), where it says integer a float is not. Where the ground truth holds a number for a
  parameter of another type (BFCL's "variable" path, e.g. 2 for a string), the number must have the
  ground truth's own type.
- an argument the schema marks required may not be omitted, even where the ground truth allows "".
It deliberately differs where BFCL is wrong:
- parallel calls are matched as a set (maximum bipartite matching); BFCL's
  parallel_function_checker_no_order pairs them greedily in order and can reject a valid answer.
- a string given for a non-string parameter (the variable path, e.g. "dontcare" for an integer, or
  "data['sales']" for an array) is standardised like every other string. BFCL compares it exactly only
  because its string_checker is reached through the schema type; it standardises the same kind of text
  everywhere else ("any" and string parameters), and the strings on this path are sentinels and
  expressions whose case, spacing or quote style carries no meaning. On the same path BFCL takes an
  empty string for the "" that marks an omittable argument (is_unisex: ["", "dontcare"] accepts
  is_unisex=""); here an empty string passes only for string parameters.
- nested values are checked at every depth with the schema's item and property types, with the same
  number rules (BFCL checks one level deep, rejects [1, 2] for an array of floats though it accepts 1 for
  a float, and lets True equal 1 inside lists and dicts).
- without schemas (rows written before the loaders stored them) the rules are value-based: any number
  equals an equal number, and only the ground truth's "" marks what may be omitted.

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

_STD = re.compile(r"[ ,./\-_*^]")  # spaces only, as BFCL: "units\n" is not "units"
_NUMBER_TYPES = {"integer": (int,), "float": (int, float)}  # Python types a number may have, per schema type
_STRING_TYPES = ("string", "any")  # schema types BFCL checks as str


def _std(s: str) -> str:
    """BFCL's standardize_string."""
    return _STD.sub("", s).lower().replace("'", '"')


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _alternatives(allowed: Any) -> list:
    return allowed if isinstance(allowed, list) else [allowed]


def _number_ok(got: int | float, allowed: int | float, spec: dict | None) -> bool:
    """The schema's type rule for a number, else the ground truth's own type; without a schema, any number."""
    if spec is None:
        return True
    return isinstance(got, _NUMBER_TYPES.get(spec.get("type"), ())) or type(got) is type(allowed)


def _items(spec: dict | None) -> dict | None:
    return spec.get("items") if spec and spec.get("type") in ("array", "tuple") else None


def _properties(spec: dict | None) -> dict:
    return (spec.get("properties") or {}) if spec and spec.get("type") == "dict" else {}


def value_matches(got: Any, allowed: Any, spec: dict | None = None) -> bool:
    """Whether a predicted value equals one allowed value; `spec` is the parameter's type from the tool schema
    ({"type", "items"?, "properties"?}), None where unknown (see the module docstring for conventions)."""
    if isinstance(allowed, bool) or allowed is None:
        return got is allowed
    if _is_num(allowed):
        return _is_num(got) and got == allowed and _number_ok(got, allowed, spec)
    if isinstance(allowed, str):
        if allowed == "" and spec is not None and spec.get("type") not in _STRING_TYPES:
            return False  # "" marks an argument that may be left out, not an empty value of another type
        return isinstance(got, str) and _std(got) == _std(allowed)
    if isinstance(allowed, list):
        item = _items(spec)
        return (
            isinstance(got, list | tuple)
            and len(got) == len(allowed)
            and all(value_matches(g, a, item) for g, a in zip(got, allowed, strict=True))
        )
    if isinstance(allowed, dict):
        return isinstance(got, dict) and not _args_mismatch(got, allowed, _properties(spec))
    return got == allowed


def _short(x: Any, limit: int = 120) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _args_mismatch(got: dict, expected: dict, types: dict | None = None, required: Any = ()) -> list[str]:
    """What is wrong with `got` against {arg: [allowed...]}, given the schema's {arg: type} and required
    arguments; empty when it matches."""
    types = types or {}
    problems = [f"unexpected arg {k!r}" for k in got if k not in expected]
    problems += [f"missing required arg {k!r}" for k in required if k not in got]
    for k, allowed in expected.items():
        alts = _alternatives(allowed)
        if k not in got:
            if "" not in alts and k not in required:
                problems.append(f"missing arg {k!r}")
        elif not any(value_matches(got[k], a, types.get(k)) for a in alts):
            problems.append(f"arg {k!r}: got {_short(got[k])}, allowed {_short(alts)}")
    return problems


def _call_mismatch(got: dict, expected: dict, schema: dict | None) -> list[str]:
    """_args_mismatch with a tool's schema {"required": [...], "types": {...}}, if the ground truth has one."""
    if not schema:
        return _args_mismatch(got, expected)
    return _args_mismatch(got, expected, schema.get("types"), schema.get("required") or ())


def _augment(i: int, ok: list[list[int]], owner: list[int], seen: list[bool]) -> bool:
    """Kuhn's step: find an augmenting path from expected call i and flip it (depth <= len(ok))."""
    for j in ok[i]:
        if not seen[j]:
            seen[j] = True
            if owner[j] < 0 or _augment(owner[j], ok, owner, seen):
                owner[j] = i
                return True
    return False


def _has_perfect_matching(ok: list[list[int]], n_predicted: int) -> bool:
    """Can every expected call i take a distinct predicted call from ok[i]? Kuhn's augmenting paths, O(V*E).

    Why this decides the same as trying every assignment (the former backtracking): after expected calls
    0..i-1 are matched (matching M, |M| = i), the only unmatched expected vertex of the subgraph on 0..i is i.
    If no augmenting path starts at i, M has none at all there, so by Berge's theorem M is a maximum matching
    of that subgraph; it has i < i + 1 edges, so no assignment covers 0..i and none covers all expected
    calls. If a path exists, flipping it matches 0..i. So the loop matches everything iff an assignment exists.
    """
    owner = [-1] * n_predicted  # predicted call j -> the expected call it serves
    return all(_augment(i, ok, owner, [False] * n_predicted) for i in range(len(ok)))


def compare_calls(predicted: list[dict], expected: list[dict], schemas: dict | None = None) -> Verdict:
    """Order-independent comparison: wrong_tool if the multiset of names differs, else wrong_arguments
    unless every expected call can be paired with a distinct predicted call whose arguments match.
    `schemas` maps a tool name to {"required": [arg...], "types": {arg: type}} (module docstring)."""
    got_names = Counter(c["name"] for c in predicted)
    want_names = Counter(c["name"] for c in expected)
    if got_names != want_names:
        want, got = sorted(want_names.elements()), sorted(got_names.elements())
        return Verdict(False, "wrong_tool", f"expected calls {want}, got {got}")
    schemas = schemas or {}
    # per expected call: (index, mismatches) of every predicted call of the same name
    problems = [
        [
            (j, _call_mismatch(p["arguments"], e["arguments"], schemas.get(e["name"])))
            for j, p in enumerate(predicted)
            if p["name"] == e["name"]
        ]
        for e in expected
    ]
    ok = [[j for j, prob in cands if not prob] for cands in problems]
    if _has_perfect_matching(ok, len(predicted)):
        return Verdict(True, CORRECT)
    for e, cands, matches in zip(expected, problems, ok, strict=True):
        if not matches:  # report the closest predicted call of the same name
            closest = min((prob for _, prob in cands), key=len)
            return Verdict(False, "wrong_arguments", f"{e['name']}: " + "; ".join(closest[:3]))
    return Verdict(False, "wrong_arguments", "calls match individually but not as a set (duplicated call)")
