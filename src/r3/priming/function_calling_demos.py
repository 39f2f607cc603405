"""Function-calling priming data: reference demonstrations and reflect-and-retry dialogues.

Demonstrations are assistant turns in the task's answer format (`<tool_call>[...]</tool_call>`, the values
render_answer picks: the first allowed value that is not "") built from train-split ground truth (BFCL
offline, xLAM online: both share one ground-truth shape). A fraction of them opens with a one-line check
read off the tool schemas, "Checking: `tool` fits the request (its purpose); required arguments a=1
present.", so the verification habit exists here too. When the prompt uses an assistant prefill (params:
`prompt.function_calling.prefill`, e.g. "<tool_call>["), every turn must start with the prefill exactly,
so nothing can come before the call: the check line is then omitted.

Reflection dialogues: a first attempt with a real mistake of one error category (format, wrong_tool,
wrong_arguments; each verified to get exactly that category from function_calling.verify, and starting
with the prefill when one is used), a short reflection, and a correct retry. The reflection names the error
class and its evidence, never the fix: not the right tool, not the right value, not the corrected JSON. The
evidence is the failed attempt's own (the wrong tool and its description, the wrong value, the missing or extra
argument, the broken format), plus how to avoid the mistake, so the retry has nothing to copy from it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from r3.tasks.function_calling import render_answer, verify
from r3.tasks.tool_calls import CLOSE, OPEN, extract_calls

CATEGORIES = ("format", "wrong_tool", "wrong_arguments")
_RETRY_CHECK = 0.7  # chance that a retry opens with the check line (only without a prefill)
_SUFFIXES = ("_v2", "_tool", "_api", "_info")  # invented tool names: the right name with a suffix
_EXTRA_ARGS = {"verbose": True, "limit": 10, "format": "json", "language": "en", "units": "metric"}

_REFLECT = {  # phrasing templates per kind of mistake; the rng picks one
    "no_tags": ["I wrote the list of calls without the <tool_call></tool_call> tags, so no call could be read. "
                "The JSON list must always sit inside those tags.",
                "My call to `{name}` had no <tool_call> tags around it. Next time I'll wrap the JSON list in them."],
    "python": ["I wrote `{name}(...)` as a Python-style function call, which is not JSON. Each call must be a JSON "
               "object with a name and an arguments object, in a list inside the <tool_call> tags.",
               "Writing the call to `{name}` in Python syntax made it unreadable; I should write it as a JSON object "
               "with the keys name and arguments instead."],
    "missing_bracket": ["My JSON was not closed: the ] that ends the list was missing, so it could not be parsed. "
                        "I should check that every bracket is closed before </tool_call>.",
                        "The list with the call to `{name}` lacked its final ], which made the JSON invalid. Before "
                        "closing the tag I'll count the brackets."],
    "wrong_keys": ["I used the keys function and parameters for the call to `{name}`, but each call needs exactly "
                   "the keys name and arguments.",
                   "The call object had the wrong keys (function/parameters). The tool goes under name and its "
                   "parameters under arguments."],
    "other_tool": ["Wrong tool: I called `{wrong}` ({wrong_purpose}), which is not what the request asks for. I "
                   "should match the request against every tool description before choosing.",
                   "I called `{wrong}`, but its description ({wrong_purpose}) does not fit the request. Next time "
                   "I'll compare the request with every tool description first.",
                   "I picked `{wrong}` ({wrong_purpose}) without checking that it does what was asked, and it does "
                   "not. I should read every description before calling."],
    "invented_tool": ["`{wrong}` is not one of the available tools; I altered a tool name. Tool names must be "
                      "copied exactly from the tool list.",
                      "I called a tool that does not exist, `{wrong}`: no tool in the list has that name. I should "
                      "use the names exactly as listed."],
    "value": ["I passed {arg}={got} to `{name}`, but that value is not what the request says. I should take each "
              "argument value straight from the request.",
              "The `{arg}` argument of `{name}` was wrong: {got} does not match the request. Next time I'll re-read "
              "the request for every value before calling.",
              "Right tool, wrong value: `{arg}`={got} in my call to `{name}` is not what the request says. I'll "
              "double-check each argument against the request."],
    "omit": ["I left out `{arg}`, a required argument of `{name}`. Before calling I should check that every required "
             "argument is given.",
             "The call to `{name}` had no `{arg}`, which its schema requires. I'll go through the required list "
             "before answering.",
             "Missing argument: `{name}` requires `{arg}`, and I did not pass it. I should check the required list "
             "of every tool I call."],
    "extra": ["I added `{arg}`, which is not a parameter of `{name}`. I should only use the arguments its schema "
              "defines.",
              "`{name}` has no `{arg}` parameter, yet I passed it. Next time I'll compare my arguments with the "
              "schema's properties."],
}


@dataclass(frozen=True)
class Demo:
    id: str
    inputs: dict[str, Any]
    ground_truth: dict[str, Any]
    text: str  # the whole assistant turn (starting with the prefill when one is used)
    has_check: bool  # whether text opens with the one-line check


@dataclass(frozen=True)
class ReflectionDialogue:
    id: str
    inputs: dict[str, Any]
    ground_truth: dict[str, Any]
    category: str  # the error category of first_attempt
    first_attempt: str  # a complete assistant turn that fails with exactly `category`
    reflection: str
    retry: str  # a correct assistant turn


# ---------------------------------------------------------------- demonstrations


def _val(v: Any, limit: int = 40) -> str:
    s = repr(v) if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _tools(inputs: dict[str, Any]) -> dict[str, dict]:
    return {t["name"]: t for t in inputs["tools"]}


def _purpose(tool: dict | None) -> str:
    """The first sentence of a tool's description, lower-cased and cut at a word, for inline use."""
    desc = " ".join(((tool or {}).get("description") or "").split()).split(". ")[0].rstrip(".")
    if len(desc) > 60:
        desc = desc[:60].rsplit(" ", 1)[0] + "..."
    if desc[:2].istitle():  # "Calculate ..." -> "calculate ...", but keep "API ..."
        desc = desc[0].lower() + desc[1:]
    return desc or "the requested action"


def _check_line(calls: list[dict], inputs: dict[str, Any]) -> str:
    """"Checking: `t` fits the request (purpose); required arguments a=1 present." (one clause per call)."""
    tools = _tools(inputs)
    names = list(dict.fromkeys(c["name"] for c in calls))
    if not names:
        return "Checking: none of the tools fits the request, so no call is needed."
    if len(names) == 1:
        head = f"`{names[0]}` fits the request ({_purpose(tools.get(names[0]))})"
    else:
        head = " and ".join(f"`{n}` ({_purpose(tools.get(n))})" for n in names) + " fit the request"
    parts = []
    for c in calls:
        required = (tools.get(c["name"]) or {}).get("parameters", {}).get("required", [])
        given = [f"{k}={_val(c['arguments'][k])}" for k in required if k in c["arguments"]]
        missing = [k for k in required if k not in c["arguments"]]
        found = ([f"{', '.join(given)} present"] if given else []) + (
            [f"{', '.join(missing)} not given in the request"] if missing else [])
        part = f"required argument{'s' * (len(required) > 1)} {', '.join(found)}" if required else ""
        parts.append((f"`{c['name']}`: " if len(names) > 1 else "") + (part or "no required arguments"))
    each = f"in each of the {len(calls)} calls, " if len(names) == 1 < len(calls) else ""
    return f"Checking: {head}; {each}{'; '.join(parts)}."


def render_demo(ground_truth: dict[str, Any], inputs: dict[str, Any], with_check: bool, prefill: str = "") -> str:
    """The reference assistant turn; a non-empty prefill must start it, so the check line is then omitted."""
    answer = render_answer(ground_truth)
    if prefill:
        if not answer.startswith(prefill):
            raise ValueError(f"prefill {prefill!r} is not a prefix of the answer format {answer[:30]!r}...")
        return answer
    return f"{_check_line(extract_calls(answer), inputs)}\n{answer}" if with_check else answer


def _row(row: Any) -> dict[str, Any]:
    """A dataset Row or a dict as {"id", "split", "inputs", "ground_truth"} (JSON strings are parsed)."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k, None)
    out = {"id": str(get("id")), "split": get("split")}
    for key in ("inputs", "ground_truth"):
        value = get(key)
        out[key] = json.loads(value) if isinstance(value, str) else value
    return out


def _train_rows(rows: list[Any], n: int) -> list[dict[str, Any]]:
    """The rows as dicts; refuses rows of any split other than train."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    items = [_row(r) for r in rows]
    for it in items:
        if it["split"] != "train":
            raise ValueError(f"priming data must come from the train split; row {it['id']} is {it['split']!r}")
    if n and not items:
        raise ValueError("no rows to generate priming data from")
    return items


def _stream(items: list[dict[str, Any]], rng: random.Random) -> Iterator[dict[str, Any]]:
    """The items without replacement, reshuffled on each pass, for ever."""
    while items:
        batch = list(items)
        rng.shuffle(batch)
        yield from batch


def _checked_demo(it: dict[str, Any], with_check: bool, prefill: str) -> str:
    text = render_demo(it["ground_truth"], it["inputs"], with_check, prefill)
    if not verify(text, it["ground_truth"]).correct:  # a generator bug or a broken ground truth
        raise AssertionError(f"demonstration for row {it['id']} does not verify: {text[:200]}")
    return text


def generate_demos(rows: list[Any], n: int, seed: int, check_fraction: float = 0.0, prefill: str = "") -> list[Demo]:
    """n demonstrations over train rows, deterministic for a seed; check lines only without a prefill."""
    if not 0.0 <= check_fraction <= 1.0:
        raise ValueError(f"check_fraction must be in [0, 1], got {check_fraction}")
    items = _train_rows(rows, n)
    order, rng = random.Random(f"order:{seed}"), random.Random(f"demos:{seed}")
    out = []
    for i, it in enumerate(islice(_stream(items, order), n)):
        check = not prefill and rng.random() < check_fraction
        out.append(Demo(f"{it['id']}-demo-{i}", it["inputs"], it["ground_truth"],
                        _checked_demo(it, check, prefill), check))
    return out


# ---------------------------------------------------------------- reflect-and-retry dialogues


def _wrap(calls: list[dict]) -> str:
    return f"{OPEN}{json.dumps(calls, ensure_ascii=False)}{CLOSE}"


def _format_attempts(calls: list[dict]) -> list[tuple[str, str]]:
    """(kind, text) of every format mistake; the caller keeps those that start with the prefill."""
    body = json.dumps(calls, ensure_ascii=False)
    python = ", ".join(f"{c['name']}(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}"
                                                   for k, v in c["arguments"].items()) + ")" for c in calls)
    keys = [{"function": c["name"], "parameters": c["arguments"]} for c in calls]
    return [("no_tags", body), ("python", python), ("python", f"{OPEN}[{python}]{CLOSE}"),
            ("missing_bracket", f"{OPEN}{body[:-1]}{CLOSE}"), ("wrong_keys", _wrap(keys))]


def _tool_attempts(calls: list[dict], inputs: dict[str, Any], rng: random.Random) -> list[tuple[str, str, dict]]:
    i = rng.randrange(len(calls))
    right, tools = calls[i]["name"], _tools(inputs)
    others = sorted(set(tools) - {right})
    uncalled = [t for t in others if t not in {c["name"] for c in calls}]
    if others:
        kind, wrong = "other_tool", rng.choice(uncalled or others)
    else:
        kind, wrong = "invented_tool", right + rng.choice([s for s in _SUFFIXES if right + s not in tools])
    bad = [dict(c, name=wrong) if j == i else c for j, c in enumerate(calls)]
    return [(kind, _wrap(bad), {"wrong": wrong, "wrong_purpose": _purpose(tools.get(wrong))})]


def _changed(v: Any, k: str, args: dict, schema: dict, rng: random.Random) -> list[Any]:
    """Wrong values of the same type for argument k (value v) of a call."""
    if isinstance(v, bool):
        return [not v]
    if isinstance(v, int):
        return [v * 10 if v and rng.random() < 0.5 else v + 1]
    if isinstance(v, float):
        return [v + rng.choice((0.5, 1.0))]
    if isinstance(v, list):
        return [v[:-1]] if len(v) > 1 else []
    if not isinstance(v, str):
        return []
    enum = [e for e in schema.get(k, {}).get("enum", []) if isinstance(e, str) and e != v]
    swaps = [o for o in args.values() if isinstance(o, str) and o != v]  # another argument's value
    return enum[:2] + swaps[:1] + ([v.rsplit(" ", 1)[0]] if " " in v.strip() else [])


def _argument_attempts(calls: list[dict], inputs: dict[str, Any], rng: random.Random) -> list[tuple[str, str, dict]]:
    """Every single-argument mistake (changed value, omitted required argument, extra argument), shuffled."""
    out = []
    for i, c in enumerate(calls):
        params = (_tools(inputs).get(c["name"]) or {}).get("parameters", {})
        props, args = params.get("properties", {}), c["arguments"]
        changes = []  # (kind, new arguments, reflection fields)
        for k, v in args.items():
            changes += [("value", {**args, k: new}, {"arg": k, "got": _val(new)})
                        for new in _changed(v, k, args, props, rng)]
            if k in params.get("required", []):
                changes.append(("omit", {a: x for a, x in args.items() if a != k}, {"arg": k}))
        extra = next((a for a in rng.sample(sorted(_EXTRA_ARGS), len(_EXTRA_ARGS)) if a not in props), None)
        if extra:
            changes.append(("extra", {**args, extra: _EXTRA_ARGS[extra]}, {"arg": extra}))
        for kind, new_args, fields in changes:
            bad = [dict(x, arguments=new_args) if j == i else x for j, x in enumerate(calls)]
            out.append((kind, _wrap(bad), {"name": c["name"], **fields}))
    rng.shuffle(out)
    return out


def _dialogue(it: dict[str, Any], category: str, rng: random.Random, dialogue_id: str,
              prefill: str) -> ReflectionDialogue | None:
    """A dialogue whose first attempt gets exactly `category`, or None when the row can't produce one."""
    calls = extract_calls(_checked_demo(it, False, ""))
    if category == "format":
        candidates = [(kind, text, {}) for kind, text in _format_attempts(calls)]
        rng.shuffle(candidates)
    elif category == "wrong_tool":
        candidates = _tool_attempts(calls, it["inputs"], rng) if calls else []
    else:
        candidates = _argument_attempts(calls, it["inputs"], rng)
    names = list(dict.fromkeys(c["name"] for c in calls)) or ["the tool"]
    for kind, first, fields in candidates:
        if first.startswith(prefill) and verify(first, it["ground_truth"]).category == category:
            reflection = rng.choice(_REFLECT[kind]).format(**{"name": names[0], **fields})
            retry = _checked_demo(it, not prefill and rng.random() < _RETRY_CHECK, prefill)
            return ReflectionDialogue(dialogue_id, it["inputs"], it["ground_truth"], category, first, reflection,
                                      retry)
    return None


def generate_reflection_dialogues(rows: list[Any], n: int, seed: int, prefill: str = "") -> list[ReflectionDialogue]:
    """n dialogues over train rows, the error categories in rotation; deterministic for a seed.

    A row that cannot produce the category due next is skipped (the category stays due)."""
    items = _train_rows(rows, n)
    order, rng = random.Random(f"order:{seed}"), random.Random(f"reflections:{seed}")
    out: list[ReflectionDialogue] = []
    skipped = 0
    for it in _stream(items if n else [], order):
        category = CATEGORIES[len(out) % len(CATEGORIES)]
        dialogue = _dialogue(it, category, rng, f"{it['id']}-reflect-{len(out)}", prefill)
        skipped = 0 if dialogue else skipped + 1
        if skipped > 2 * len(items):  # two passes hold every row at least once
            raise ValueError(f"no train row can produce a {category} first attempt (prefill {prefill!r})")
        if dialogue:
            out.append(dialogue)
        if len(out) == n:
            break
    return out
