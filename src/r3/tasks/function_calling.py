"""Function calling: answer a user query with a JSON list of tool calls inside <tool_call>...</tool_call>.

Sources: "bfcl" (offline default: the Berkeley Function Calling Leaderboard data shipped inside the
`bfcl-eval` package; single-turn AST categories) and "xlam" (`Salesforce/xlam-function-calling-60k`,
the APIGen data of the paper; gated, needs HF_TOKEN and network). Both are normalised to BFCL's
ground-truth shape: {"calls": [{"name", "arguments": {arg: [allowed values...]}}], "schemas": {tool:
{"required": [arg...], "types": {arg: type}}}} where an allowed "" means the argument may be omitted and
"schemas" holds what the verifier needs from the called tools' schemas (r3.tasks.tool_calls). Ground-truth
arguments the tool's schema lacks are dropped (BFCL data bugs); items whose ground truth contradicts the
schema are skipped; both are counted in the loader's report (ItemList.report). Splits are by function, so
no test function is seen in training.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from typing import Any

from r3.errors import R3Error
from r3.tasks.base import SPLITS, Item, Task, Verdict
from r3.tasks.tool_calls import CLOSE, OPEN, ToolCallFormatError, compare_calls, extract_calls

XLAM_DATASET = "Salesforce/xlam-function-calling-60k"
CATEGORIES = (
    "simple", "multiple", "parallel", "parallel_multiple",
    "live_simple", "live_multiple", "live_parallel", "live_parallel_multiple",
)  # fmt: skip
_BFCL_FILE = re.compile(r"^BFCL_v(\d+)_(\w+)\.json$")

# ---------------------------------------------------------------- verifier


def verify(completion: str, ground_truth: dict[str, Any]) -> Verdict:
    """format / wrong_tool / wrong_arguments / correct; never raises on any completion."""
    try:
        calls = extract_calls(completion)
    except ToolCallFormatError as e:
        return Verdict(False, "format", str(e))
    return compare_calls(calls, ground_truth["calls"], ground_truth.get("schemas"))


def _reference(allowed: Any) -> Any:
    """One concrete value from an allowed value: dicts hold {key: [allowed...]} (BFCL's convention)."""
    if isinstance(allowed, dict):
        out = {}
        for k, v in allowed.items():
            alts = [a for a in (v if isinstance(v, list) else [v]) if a != ""]
            if alts:
                out[k] = _reference(alts[0])
        return out
    if isinstance(allowed, list):
        return [_reference(a) for a in allowed]
    return allowed


def answer_span(completion: str) -> str | None:
    """The text inside the last <tool_call> block, or None."""
    start = completion.rfind(OPEN) if isinstance(completion, str) else -1
    if start < 0:
        return None
    return completion[start + len(OPEN):].split(CLOSE, 1)[0]


def render_answer(ground_truth: dict[str, Any]) -> str:
    """<tool_call>[...]</tool_call> with the first non-"" allowed value of each argument."""
    calls = [{"name": c["name"], "arguments": _reference(c["arguments"])} for c in ground_truth["calls"]]
    return f"{OPEN}{json.dumps(calls, ensure_ascii=False)}{CLOSE}"


# ---------------------------------------------------------------- prompts

PROMPT_STYLES = ("xlam", "user")
# The system prompt SmolLM2-Instruct was trained with for APIGen/xLAM function calling (trailing
# spaces included, as in the original).
XLAM_SYSTEM = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. \n"
    "Based on the question, you will need to make one or more function/tool calls to achieve the purpose. \n"
    "If none of the functions can be used, point it out and refuse to answer. \n"
    "If the given question lacks the parameters required by the function, also point it out.\n"
    "\n"
    "You have access to the following tools:\n"
    "<tools>{tools}</tools>\n"
    "\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. If no function call "
    "is needed, please make the tool calls an empty list '[]'.\n"
    "<tool_call>[\n"
    '{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},\n'
    "... (more tool calls as required)\n"
    "]</tool_call>"
)
USER_INSTRUCTIONS = """You have access to the following tools:
<tools>{tools}</tools>

Answer the question below by calling one or more of these tools. Reply with the calls as a JSON list \
inside <tool_call></tool_call> tags and nothing else, for example:
<tool_call>[{{"name": "func_name1", "arguments": {{"argument1": "value1"}}}}]</tool_call>
If none of the tools can be used, reply <tool_call>[]</tool_call>.

"""


def render_prompt(inputs: dict[str, Any], style: str = "xlam") -> list[dict[str, str]]:
    """Chat messages for one item. An item's own system message (BFCL live) follows the tool prompt."""
    tools = json.dumps(inputs["tools"], ensure_ascii=False)
    own_system = "\n\n".join(m["content"].strip() for m in inputs["messages"] if m["role"] == "system")
    turns = [dict(m) for m in inputs["messages"] if m["role"] != "system"]
    if style == "xlam":
        system = XLAM_SYSTEM.format(tools=tools) + (f"\n\n{own_system}" if own_system else "")
        return [{"role": "system", "content": system}, *turns]
    if style == "user":
        context = f"{own_system}\n\n" if own_system else ""
        head = f"{USER_INSTRUCTIONS.format(tools=tools)}{context}Question:\n"
        first = next(i for i, m in enumerate(turns) if m["role"] == "user")
        turns[first]["content"] = head + turns[first]["content"]
        return turns
    raise R3Error(f"function_calling: unknown prompt style {style!r}; allowed: {list(PROMPT_STYLES)}")


# ---------------------------------------------------------------- sources


def _tool_names(tools: list[dict]) -> list[str]:
    return sorted({t["name"] for t in tools})


def _read_jsonl(path: Any) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def bfcl_files() -> dict[str, str]:
    """Category -> file name of the newest BFCL_v*_ data shipped in bfcl-eval ("simple" = simple_python)."""
    try:
        from importlib.resources import files

        data = files("bfcl_eval") / "data"
        names = [p.name for p in data.iterdir()]
    except (ImportError, OSError) as e:
        raise R3Error(
            f"function_calling: BFCL data not found ({type(e).__name__}); "
            "install it with `pip install --no-deps bfcl-eval`"
        ) from None
    newest: dict[str, tuple[int, str]] = {}
    for name in names:
        m = _BFCL_FILE.match(name)
        if m and (data / "possible_answer" / name).is_file():
            cat = "simple" if m[2] == "simple_python" else m[2]
            if cat in CATEGORIES and int(m[1]) > newest.get(cat, (-1, ""))[0]:
                newest[cat] = (int(m[1]), name)
    return {cat: name for cat, (_, name) in sorted(newest.items())}


class ItemList(list):
    """A loader's items plus its report: what it dropped or skipped on the way (the download metrics)."""

    def __init__(self, items: list[Item], report: dict[str, Any]):
        super().__init__(items)
        self.report = report


def _report(dropped: dict[str, int], skipped: list[str]) -> dict[str, Any]:
    return {
        "dropped_unknown_args": sum(dropped.values()),
        "items_with_dropped_args": sorted(dropped),
        "skipped_inconsistent_items": sorted(skipped),
    }


def _type_spec(prop: Any) -> dict | None:
    """The typing part of a BFCL parameter schema ({"type", "items"?, "properties"?}); None without a type."""
    if not isinstance(prop, dict) or not isinstance(prop.get("type"), str):
        return None
    spec: dict[str, Any] = {"type": prop["type"]}
    items = _type_spec(prop.get("items"))
    if items:
        spec["items"] = items
    props = prop.get("properties")
    if isinstance(props, dict):
        spec["properties"] = {k: t for k, v in props.items() if (t := _type_spec(v))}
    return spec


def _bfcl_schema(tool: dict) -> dict:
    params = tool.get("parameters") or {}
    types = {k: t for k, v in (params.get("properties") or {}).items() if (t := _type_spec(v))}
    return {"required": list(params.get("required") or []), "types": types}


def _known_args(calls: list[dict], tools: list[dict]) -> tuple[list[dict], int]:
    """The calls without arguments their tool's schema lacks (BFCL data bugs, e.g. parallel_multiple_12 gives
    calculate_voltage_difference a `permeability`), and how many were dropped: no answer could pass them."""
    props = {t["name"]: (t.get("parameters") or {}).get("properties") or {} for t in tools}
    out, dropped = [], 0
    for c in calls:
        known = props.get(c["name"])
        args = c["arguments"] if known is None else {k: v for k, v in c["arguments"].items() if k in known}
        dropped += len(c["arguments"]) - len(args)
        out.append({"name": c["name"], "arguments": args})
    return out, dropped


def _contradictions(calls: list[dict], schemas: dict[str, dict]) -> list[str]:
    """Required arguments the ground truth leaves out or only allows to omit: no answer can pass those."""
    return [
        f"{c['name']}.{r}"
        for c in calls
        for r in schemas.get(c["name"], {}).get("required", [])
        if all(a == "" for a in c["arguments"].get(r, [""]))
    ]


def load_bfcl(config: dict[str, Any], seed: int) -> ItemList:
    """Single-turn items of the requested BFCL categories, in file order (seed unused: no sampling)."""
    from importlib.resources import files

    available = bfcl_files()
    categories = config.get("categories", list(CATEGORIES))
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise R3Error(f"function_calling: categories must be a list of names, got {categories!r}")
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise R3Error(f"function_calling: unknown BFCL categories {unknown}; available: {list(available)}")
    data = files("bfcl_eval") / "data"
    items: list[Item] = []
    dropped: dict[str, int] = {}
    skipped: list[str] = []
    for cat in categories:
        answers = {a["id"]: a["ground_truth"] for a in _read_jsonl(data / "possible_answer" / available[cat])}
        for q in _read_jsonl(data / available[cat]):
            if len(q["question"]) != 1 or q["id"] not in answers:  # multi-turn items are out of scope
                continue
            # An empty allowed list (2 live_simple items) can only mean "the empty list": BFCL's own
            # checker would reject every answer there.
            calls = [
                {"name": name, "arguments": {a: allowed or [[]] for a, allowed in args.items()}}
                for call in answers[q["id"]]
                for name, args in call.items()
            ]
            calls, n_dropped = _known_args(calls, q["function"])
            if n_dropped:
                dropped[q["id"]] = n_dropped
            called = {c["name"] for c in calls}
            schemas = {t["name"]: _bfcl_schema(t) for t in q["function"] if t["name"] in called}
            if _contradictions(calls, schemas):  # e.g. live_multiple_964-207-0 (`question` for `statement`)
                skipped.append(q["id"])
                continue
            items.append(
                Item(
                    id=q["id"],
                    inputs={"messages": q["question"][0], "tools": q["function"]},
                    ground_truth={"calls": calls, "category": cat, "schemas": schemas},
                    source=f"bfcl:{cat}",
                    group="|".join(_tool_names(q["function"])),
                )
            )
    return ItemList(items, _report(dropped, skipped))


def _allowed_form(value: Any) -> Any:
    """A literal value in BFCL's allowed-value form: nested dicts map keys to [allowed]."""
    if isinstance(value, dict):
        return {k: [_allowed_form(v)] for k, v in value.items()}
    if isinstance(value, list):
        return [_allowed_form(v) for v in value]
    return value


def _xlam_tool(tool: dict) -> dict:
    """xLAM's {name, description, parameters: {arg: {type, description, default?}}} in BFCL's shape."""
    params = tool.get("parameters") or {}
    required = [a for a, p in params.items() if "default" not in p and "optional" not in str(p.get("type"))]
    return {
        "name": tool["name"],
        "description": tool.get("description", ""),
        "parameters": {"type": "dict", "properties": params, "required": required},
    }


_XLAM_SCALARS = {"str": "string", "string": "string", "int": "integer", "integer": "integer",
                 "float": "float", "number": "float", "bool": "boolean", "boolean": "boolean"}
_XLAM_CONTAINERS = {"list": "array", "array": "array", "tuple": "tuple", "dict": "dict", "object": "dict"}


def _xlam_type(text: Any) -> dict | None:
    """xLAM's Python-style type ("int", "List[int]", "Dict[str, Any]", "str, optional") as a BFCL type spec;
    None where unknown (Union, Callable, ...), which leaves the value-based rules."""
    t = str(text).strip().lower().removesuffix(", optional").strip()
    if t.startswith("optional[") and t.endswith("]"):
        t = t[len("optional["):-1].strip()
    if t in _XLAM_SCALARS:
        return {"type": _XLAM_SCALARS[t]}
    head, bracket, inner = t.partition("[")
    kind = _XLAM_CONTAINERS.get(head.strip())
    if kind is None or (bracket and not inner.endswith("]")):
        return None
    spec: dict[str, Any] = {"type": kind}
    items = _xlam_type(inner[:-1]) if kind == "array" and bracket else None
    if items:
        spec["items"] = items
    return spec


def _xlam_schemas(tools: list[dict], calls: list[dict]) -> dict[str, dict]:
    """The called tools' schemas. `required` keeps only arguments every call of the tool gives: xLAM marks
    nothing required, our guess (no default, not optional) is a hint for the prompt, not a fact to enforce."""
    out = {}
    for tool in tools:
        given = [set(c["arguments"]) for c in calls if c["name"] == tool["name"]]
        if given:
            params = tool["parameters"]
            types = {k: t for k, p in params["properties"].items() if (t := _xlam_type(p.get("type")))}
            required = [r for r in params["required"] if all(r in g for g in given)]
            out[tool["name"]] = {"required": required, "types": types}
    return out


def load_xlam(config: dict[str, Any], seed: int) -> ItemList:
    """A seeded sample of config["n_items"] rows of the (gated) xLAM dataset."""
    name = config.get("dataset", XLAM_DATASET)
    n_items = config.get("n_items")
    if not isinstance(n_items, int) or isinstance(n_items, bool) or n_items < 0:
        raise R3Error(f"function_calling: n_items must be a non-negative int, got {n_items!r}")
    token = os.environ.get("HF_TOKEN")  # never printed: redacted from error messages below
    try:
        import datasets

        ds = datasets.load_dataset(name, split="train", revision=config.get("revision"), token=token)
    except Exception as e:  # no network, no token, no access, missing package -> one line
        reason = " ".join(str(e).replace(token or "\0", "***").split())[:200] or type(e).__name__
        raise R3Error(
            f"function_calling: could not load {name} ({reason}); it is gated and needs HF_TOKEN and "
            "network access; `source: bfcl` is the offline default"
        ) from None
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    items: list[Item] = []
    dropped: dict[str, int] = {}
    for i in order:
        if len(items) >= n_items:
            break
        row = ds[i]
        try:
            tools = [_xlam_tool(t) for t in json.loads(row["tools"])]
            answers = json.loads(row["answers"])
            calls = [
                {"name": a["name"], "arguments": {k: [_allowed_form(v)] for k, v in a["arguments"].items()}}
                for a in answers
            ]
            calls, n_dropped = _known_args(calls, tools)
            schemas = _xlam_schemas(tools, calls)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a malformed row: skip it rather than fail the whole download
        item_id = f"xlam_{row.get('id', i)}"
        if n_dropped:
            dropped[item_id] = n_dropped
        items.append(
            Item(
                id=item_id,
                inputs={"messages": [{"role": "user", "content": row["query"]}], "tools": tools},
                ground_truth={"calls": calls, "category": "xlam", "schemas": schemas},
                source=f"xlam:{name}",
                group="|".join(_tool_names(tools)),
            )
        )
    if len(items) < n_items:
        raise R3Error(f"function_calling: {name} has only {len(items)} usable rows, n_items={n_items}")
    return ItemList(items, _report(dropped, []))


# ---------------------------------------------------------------- splits


def _components(tool_sets: list[list[str]]) -> list[str]:
    """Union-find over tool names: items sharing any tool (transitively) get the same key, namely the
    smallest tool name of their component (independent of item order)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for names in tool_sets:
        for n in names:
            a, b = find(n), find(names[0])
            parent[max(a, b)] = min(a, b)  # the root is always the smallest name
    return [find(names[0]) for names in tool_sets]


def assign_splits(items: list[Item], sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Split by function: no tool offered in a train item is offered in a validation or test item.

    Items that share a tool (directly or through other items) form a component, and a component goes
    to one split whole. Components are taken in a seeded hash order and each goes to the first split
    (test, validation, train) that still needs at least its size, else to the one that needs most.
    Each split is then trimmed to its size by a seeded sample (trimming never leaks), so a split holds
    min(available, requested) items: the caller sees the counts. Leftover items stay unassigned.
    Large, connected tool families (BFCL live_multiple's shared tool sets) thus tend to land in train.
    """
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise R3Error(f"function_calling: unknown split(s) {sorted(unknown)}; allowed: {list(SPLITS)}")
    tool_sets = [_tool_names(it.inputs["tools"]) or [it.group] for it in items]
    members: dict[str, list[str]] = {}
    for it, c in zip(items, _components(tool_sets), strict=True):
        members.setdefault(c, []).append(it.id)
    need = {s: sizes.get(s, 0) for s in ("test", "validation", "train")}
    by_split: dict[str, list[str]] = {s: [] for s in need}
    for c in sorted(members, key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest()):
        size = len(members[c])
        split = next((s for s, n in need.items() if n >= size), max(need, key=lambda s: need[s]))
        if need[split] <= 0:
            continue  # every split is full
        by_split[split] += members[c]
        need[split] -= size
    out: dict[str, str] = {}
    for split, ids in by_split.items():
        rng = random.Random(f"{seed}:{split}")
        for item_id in rng.sample(sorted(ids), min(len(ids), sizes.get(split, 0))):
            out[item_id] = split
    return out


TASK = Task(
    name="function_calling",
    error_categories=("format", "wrong_tool", "wrong_arguments"),
    sources={"bfcl": load_bfcl, "xlam": load_xlam},
    assign_splits=assign_splits,
    render_prompt=render_prompt,
    prompt_styles=PROMPT_STYLES,
    render_answer=render_answer,
    verify=verify,
    stop_strings=(CLOSE,),
    answer_span=answer_span,
    error_cues={
        "format": r"format|pars|json|syntax|<tool_call>|bracket|quot|\btags?\b|list of calls",
        "wrong_tool": r"wrong (tool|function)|(tool|function) name|(another|different|right|correct) (tool|function)"
                      r"|should (have )?(call|use)",
        "wrong_arguments": r"argument|parameter|value|required|missing|\btype\b|unit",
    },
)
