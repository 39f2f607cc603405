"""Countdown priming data: narrated search traces whose behaviour labels are known by construction.

A trace narrates a real search (combine two numbers with an operator, then the result with the next
number, until all are used). Each sentence of the reasoning is one *step* with a kind, and the behaviour
labels are the counts of the behaviour kinds among the steps, so they are exact by construction:
backtracking (abandons the attempt just before it: a real computation over all the numbers whose value
is not the target), verification (checks a failed attempt's value against the target, or re-checks the
final equation), subgoal_setting ("first make X from these numbers, then ...") and backward_chaining
("target = need op k, so I need `need` from ..."). Other kinds (intro, attempt, solution, conclusion)
are not behaviours. Every "a op b = c" statement in any generated text is true.

Variants (the priming conditions of "Cognitive Behaviors that Enable Self-Improving Reasoners"):
  all_strategies             1-2 failed attempts, each checked (the first always) and abandoned; usually
                             backward chaining and a subgoal; the solution; a final check.
  backtracking_only          failed attempts that are abandoned; nothing else.
  backtracking_verification  failed attempts, checked and abandoned; a final check.
  negative_control           straight to the solution: intro, its arithmetic, the answer.
  empty_cot                  no reasoning, only <answer>...</answer>.
  incorrect_with_behaviours  like all_strategies, but settles on a near miss (missed_target) and never
                             claims that it checks out.
In the variants that check, some failed attempts read like a solution and get the final check's opening
("Let me check: ...") followed by the mismatch, so a check decides something: its outcome is the computed
value, not the position in the trace.

Reflection dialogues (the skill R3 rewards: a retry that differs from the failed attempt):
  first attempt  in the primed policy's own format: a search, maybe a checked dead end, then a wrong answer of
                 one error category; half of them falsely claim that the answer checks out, as a policy does
                 whose checks always passed (context only, never trained).
  reflection     quotes the failed answer and what is wrong with it (its value vs the target, the number used
                 twice or left out, the format), never the new answer, which a retry could copy.
  retry          a fresh all_strategies search that tries none of the first attempt's wrong values again and
                 ends correct; it never restates the failed answer.
The first attempts are synthetic imitations of the primed policy's failures, not samples from a model: using
a model's own failures would make priming depend on an earlier primed model.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from r3.tasks import countdown

VARIANTS = ("all_strategies", "backtracking_only", "backtracking_verification", "negative_control", "empty_cot",
            "incorrect_with_behaviours")
BEHAVIOURS = ("verification", "backtracking", "subgoal_setting", "backward_chaining")
CATEGORIES = ("invalid_equation", "wrong_numbers", "missed_target")
ALLOWED = {  # behaviours each variant may contain
    "all_strategies": frozenset(BEHAVIOURS), "incorrect_with_behaviours": frozenset(BEHAVIOURS),
    "backtracking_only": frozenset({"backtracking"}),
    "backtracking_verification": frozenset({"backtracking", "verification"}),
    "negative_control": frozenset(), "empty_cot": frozenset(),
}
_MAX_FAILED = 2  # failed attempts per trace: keeps traces within the attempt budget (protocol.countdown)
_PLAN_PROB = 0.8  # chance of each of backward chaining / subgoal setting where the variant allows them
_CANDIDATE_PROB = 0.5  # chance that a checked failed attempt reads like a solution whose final check fails
_FALSE_CLAIM_PROB = 0.5  # chance that a dialogue's failed first attempt claims that its wrong answer checks out

_T = {  # phrasing templates per step kind; the rng picks one each time
    "intro": ["I need to reach {t} using {nums}, each exactly once.", "The numbers are {nums}; the target is {t}.",
              "Let me find a way to combine {nums} into {t}.", "I have to make {t} from {nums}, each used once.",
              "Target: {t}. Numbers: {nums}. Let me think about which operations could get there."],
    "attempt": ["Let me try {path}.", "What about {path}?", "Try {path}.", "Maybe {path}.", "Suppose I do {path}."],
    "check": ["{v} ≠ {t}.", "Check: {v} is not {t}.", "That gives {v}, but the target is {t}.",
              "{v} is {d} {side} the target {t}."],
    "backtrack": ["That doesn't work; let me try a different approach.", "Dead end. I'll combine them differently.",
                  "This path fails, so I'll backtrack.", "Let me abandon this and try another combination.",
                  "Scratch that, I'll start over with a different pair."],
    "backward": ["Working backwards from {t}: {t} = {eq}, so I need {need}.",
                 "Let me reason from the target: {t} = {eq}, which means I need {need}.",
                 "Going backwards, {t} can be written as {eq}; then I need {need}."],
    "subgoal": ["First I want to {goal}, then {finish}.", "Subgoal: {goal}; after that, {finish}.",
                "Let me break this down: {goal} first, then {finish}."],
    "solution": ["Now {path}.", "How about {path}?", "Let me try {path}.", "Next: {path}."],
    "final_check": ["Let me check: {path}. Yes, that is {t}, and {nums} are each used once.",
                    "Verify: {path}. It equals {t} and uses every number exactly once.",
                    "Double-checking: {path}; the result matches the target {t}."],
    # the same openings as final_check, on a candidate that fails: the check decides, it is not a formality
    "final_check_fail": ["Let me check: {path}. No, that is {v}, not {t}.",
                         "Verify: {path}. It equals {v}, but the target is {t}.",
                         "Double-checking: {path}; the result {v} does not reach the target {t}."],
    # a first attempt's false claim (the failure a policy primed on always-passing checks shows); context only
    "false_claim": ["Double-checking: {path}; the result matches the target {t}.",
                    "Verify: {path}. It equals {t} and uses every number exactly once."],
    "retry_intro": ["Let me search again from the start.", "I'll start a fresh search.",
                    "Starting over with a different combination."],
    "conclude": ["So the answer is {eq}.", "The equation is {eq}.", "Final equation: {eq}."],
    "conclude_wrong": ["I'll go with {eq}.", "So my answer is {eq}.", "I'll settle on {eq}."],
    # reflections, one list per kind of mistake
    "no_tags": ["I didn't put the equation in <answer> tags, so it could not be read. I must end with the bare "
                "equation inside <answer></answer>.",
                "I wrote the equation as plain text instead of inside <answer> tags; next time I'll use the tags."],
    "with_result": ["I wrote '= {t}' inside the answer tags, which makes the equation invalid. The tags should hold "
                    "only the expression, without its result.",
                    "Adding '= {t}' at the end broke my answer: the <answer> tags must hold just the left side."],
    "with_words": ["I put words ('{words}') inside the <answer> tags, so the equation could not be parsed. Only the "
                   "bare equation belongs inside the tags.",
                   "The answer tags contained '{words}' before the equation. I should write nothing but numbers, "
                   "operators and parentheses between the tags."],
    "wrong_numbers": ["In my answer {eq} I {what}. Each given number must appear exactly once, so I should tick off "
                      "{nums} against my equation before answering.",
                      "My answer {eq} had the wrong numbers{hit}: I {what}. Next time I'll compare its numbers with "
                      "the given ones one by one.", "The mistake in {eq}: I {what}. I need to use exactly {nums}, "
                      "each once, so I must search again."],
    "missed_target": ["My answer {eq} equals {v}, not {t}. I need a different combination, and I must compute its "
                      "value before answering.",
                      "I answered {eq}, which gives {v} instead of {t}, {d} {how}. Next time I'll compute each step "
                      "and compare the result with {t} before writing the answer.",
                      "{eq} = {v} misses the target {t}. I should search other combinations and only answer once one "
                      "of them equals {t}."],
    "claimed_miss": ["My check said {eq} matched, but {eq} = {v}, not {t}. I must compute the value before claiming "
                    "it is right, and keep searching until it equals {t}.",
                     "I wrongly claimed that {eq} reaches {t}; it is {v}. A check has to compare the computed value "
                    "with the target, and a different combination is needed."],
}
_INVALID_FORMS = {"no_tags": "{words} {eq}.", "with_result": "<answer>{eq} = {t}</answer>",
                  "with_words": "<answer>{words} {eq}</answer>"}


@dataclass(frozen=True)
class Trace:
    id: str
    variant: str
    numbers: tuple[int, ...]
    target: int
    reasoning: str  # the text inside <think>; "" for empty_cot
    answer: str  # the equation inside the final <answer>
    text: str  # the whole assistant turn
    correct: bool  # countdown.verify's verdict on text
    behaviours: dict[str, int]  # behaviour -> number of steps of that kind
    steps: tuple[tuple[str, str], ...] = ()  # (kind, sentence); reasoning is their texts joined by newlines


@dataclass(frozen=True)
class ReflectionDialogue:
    id: str
    numbers: tuple[int, ...]
    target: int
    category: str  # the error category of first_attempt
    first_attempt: str  # a complete assistant turn that fails with exactly `category`
    reflection: str
    retry: str  # a correct assistant turn


# ---------------------------------------------------------------- search over expression trees

_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


@dataclass(frozen=True)
class _Node:
    value: Fraction
    expr: str  # minimal parentheses
    prec: int  # 1 sum, 2 product, 3 atom
    leaves: tuple[int, ...]  # the given numbers it uses
    left: _Node | None = None
    op: str = ""
    right: _Node | None = None


def _leaf(n: int) -> _Node:
    return _Node(Fraction(n), str(n), 3, (n,))


def _join(a: _Node, op: str, b: _Node) -> _Node:
    p = 1 if op in "+-" else 2
    x = a.expr if a.prec >= p else f"({a.expr})"
    y = b.expr if b.prec > p or (b.prec == p and op in "+*") else f"({b.expr})"
    return _Node(_APPLY[op](a.value, b.value), f"{x} {op} {y}", p, a.leaves + b.leaves, a, op, b)


def _combos(a: _Node, b: _Node, nice: bool) -> list[_Node]:
    """Every way to combine two values; `nice` keeps intermediates non-negative integers (as people do)."""
    if (len(a.leaves), a.value) < (len(b.leaves), b.value):  # "21 + 1" reads better than "1 + 21"
        a, b = b, a
    out = [_join(a, "+", b), _join(a, "*", b)]
    for x, y in ((a, b), (b, a)):
        if not nice or x.value >= y.value:
            out.append(_join(x, "-", y))
        if y.value != 0 and (not nice or (x.value / y.value).denominator == 1):
            out.append(_join(x, "/", y))
    return out


def _find(nodes: list[_Node], target: int, rng: random.Random, nice: bool) -> _Node | None:
    """Depth-first search in a random order for a combination of all nodes equal to target."""
    if len(nodes) == 1:
        return nodes[0] if nodes[0].value == target else None
    pairs = [(i, j) for i in range(len(nodes)) for j in range(i + 1, len(nodes))]
    rng.shuffle(pairs)
    for i, j in pairs:
        rest = [n for k, n in enumerate(nodes) if k not in (i, j)]
        combos = _combos(nodes[i], nodes[j], nice)
        rng.shuffle(combos)
        for c in combos:
            if found := _find(rest + [c], target, rng, nice):
                return found
    return None


def _random_path(numbers: tuple[int, ...], rng: random.Random) -> _Node:
    nodes = [_leaf(n) for n in numbers]
    while len(nodes) > 1:
        i, j = rng.sample(range(len(nodes)), 2)
        c = rng.choice([c for c in _combos(nodes[i], nodes[j], nice=True) if c.value])  # no "5 - 5 = 0" paths
        nodes = [n for k, n in enumerate(nodes) if k not in (i, j)] + [c]
    return nodes[0]


def _solution(numbers: tuple[int, ...], target: int, rng: random.Random) -> _Node:
    leaves = [_leaf(n) for n in numbers]
    node = _find(leaves, target, rng, nice=True) or _find(leaves, target, rng, nice=False)
    if node is None:
        raise ValueError(f"countdown puzzle {list(numbers)} -> {target} has no solution")
    return node


def _wrong_paths(numbers: tuple[int, ...], target: int, rng: random.Random, tries: int = 40) -> list[_Node]:
    """Random complete combinations with distinct values other than the target, closest to the target first."""
    found: dict[Fraction, _Node] = {}
    for _ in range(tries):
        node = _random_path(numbers, rng)
        if node.value != target:
            found.setdefault(node.value, node)
    if not found:
        raise ValueError(f"no wrong combination of {list(numbers)} found for target {target}")
    return sorted(found.values(), key=lambda n: abs(n.value - target))


# ---------------------------------------------------------------- narration


def _steps(node: _Node) -> list[str]:
    if node.left is None or node.right is None:
        return []
    line = f"{_operand(node.left.value)} {node.op} {_operand(node.right.value)} = {node.value}"
    return _steps(node.left) + _steps(node.right) + [line]


def _operand(v: Fraction) -> str:
    return str(v) if v.denominator == 1 else f"({v})"  # "8 / (1/3)", not "8 / 1/3"


def _path_text(node: _Node, rng: random.Random) -> str:
    return rng.choice([", then ", ", and then ", "; "]).join(_steps(node)) or str(node.value)


def _names(numbers: tuple[int, ...] | list[int]) -> str:
    items = [str(n) for n in numbers]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _say(kind: str, rng: random.Random, **fields: Any) -> str:
    return rng.choice(_T[kind]).format(**fields)


def _inverse(op: str, t: Fraction, k: Fraction, x_left: bool) -> Fraction | None:
    """The value x with (x op k if x_left else k op x) == t, or None."""
    if op == "+":
        return t - k
    if op == "*":
        return t / k if k else None
    if op == "-":
        return t + k if x_left else k - t
    if x_left:
        return t * k
    return k / t if t else None


def _plan_steps(final: _Node, target: int, wrong: bool, rng: random.Random) -> list[tuple[str, str]]:
    """Backward chaining and subgoal steps read off the last operation of the final path."""
    left, right = final.left, final.right
    if left is None or right is None or (left.left is None and right.left is None):
        return []  # a leaf or a single operation on two given numbers: nothing to decompose
    x_left = left.left is not None
    x, k = (left, right) if x_left else (right, left)
    need = _inverse(final.op, Fraction(target), k.value, x_left)
    if need is None or (wrong and (need < 0 or need.denominator != 1)):
        return []
    a, b = (need, k.value) if x_left else (k.value, need)
    eq = f"{_operand(a)} {final.op} {_operand(b)}"
    known = f" and {k.value} from {_names(k.leaves)}" if k.left is not None else ""
    kv = str(k.value) if k.left is None else f"{k.value} (from {_names(k.leaves)})"
    finish = {"+": f"add {kv}", "*": f"multiply by {kv}",
              "-": f"subtract {kv}" if x_left else f"subtract it from {kv}",
              "/": f"divide by {kv}" if x_left else f"divide {kv} by it"}[final.op]
    goal = f"get close to {need} with {_names(x.leaves)}" if wrong else f"make {x.value} from {_names(x.leaves)}"
    steps = []
    if rng.random() < _PLAN_PROB:
        need_text = f"{need} from {_names(x.leaves)}{known}"
        steps.append(("backward_chaining", _say("backward", rng, t=target, eq=eq, need=need_text)))
    if rng.random() < _PLAN_PROB:
        steps.append(("subgoal_setting", _say("subgoal", rng, goal=goal, finish=finish)))
    return steps


def _failed_attempt(path: _Node, target: int, check: bool, rng: random.Random) -> list[tuple[str, str]]:
    """A tried combination that misses, (maybe) checked, then abandoned. Some are phrased as a candidate
    solution with the final check's opening, so that a check can fail: its outcome is the computed value."""
    if check and rng.random() < _CANDIDATE_PROB:
        return [("attempt", _say("solution", rng, path=_path_text(path, rng))),
                ("verification", _say("final_check_fail", rng, path=_path_text(path, rng), v=path.value, t=target)),
                ("backtracking", _say("backtrack", rng))]
    steps = [("attempt", _say("attempt", rng, path=_path_text(path, rng)))]
    if check:
        side = "above" if path.value > target else "below"
        text = _say("check", rng, v=path.value, t=target, d=abs(path.value - target), side=side)
        steps.append(("verification", text))
    return steps + [("backtracking", _say("backtrack", rng))]


def _make_trace(trace_id: str, variant: str, numbers: tuple[int, ...], target: int,
                steps: list[tuple[str, str]], answer: str) -> Trace:
    reasoning = "\n".join(text for _, text in steps)
    text = (f"<think>\n{reasoning}\n</think>\n" if reasoning else "") + f"<answer>{answer}</answer>"
    counts = {b: sum(kind == b for kind, _ in steps) for b in BEHAVIOURS}
    verdict = countdown.verify(text, {"numbers": list(numbers), "target": target})
    return Trace(trace_id, variant, numbers, target, reasoning, answer, text, verdict.correct, counts, tuple(steps))


def generate_trace(numbers: list[int] | tuple[int, ...], target: int, variant: str, rng: random.Random,
                   trace_id: str = "", avoid: frozenset[Fraction] | set[Fraction] = frozenset()) -> Trace:
    """One narrated search for the puzzle, in the given variant (see the module docstring).

    `avoid`: values no failed attempt reaches (a retry does not try its failed answers again)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown priming variant {variant!r}; allowed: {list(VARIANTS)}")
    numbers, target = tuple(int(n) for n in numbers), int(target)
    final = _solution(numbers, target, rng)
    if variant == "empty_cot":
        return _make_trace(trace_id, variant, numbers, target, [], final.expr)
    allowed, wrong = ALLOWED[variant], variant == "incorrect_with_behaviours"
    steps = [("intro", _say("intro", rng, t=target, nums=_names(numbers)))]
    if allowed:
        pool = [p for p in _wrong_paths(numbers, target, rng) if p.value not in avoid]  # closer misses first
        attempts = rng.sample(pool[:6], min(rng.randint(1, _MAX_FAILED), len(pool[:6])))
        for i, path in enumerate(attempts):
            check = "verification" in allowed and (i == 0 or rng.random() < 0.6)
            steps += _failed_attempt(path, target, check, rng)
        if wrong:  # the closest miss not yet tried
            final = next((p for p in pool if p not in attempts), pool[0])
    if "backward_chaining" in allowed:
        steps += _plan_steps(final, target, wrong, rng)
    steps.append(("solution", _say("solution", rng, path=_path_text(final, rng))))
    if "verification" in allowed and not wrong:
        steps.append(("verification", _say("final_check", rng, path=_path_text(final, rng), t=target,
                                           nums=_names(numbers))))
    steps.append(("conclusion", _say("conclude_wrong" if wrong else "conclude", rng, eq=final.expr)))
    return _make_trace(trace_id, variant, numbers, target, steps, final.expr)


def _train_cycle(items: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """n items, the list reshuffled on each pass; refuses items of any split other than train."""
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if n and not items:
        raise ValueError("no items to generate priming data from")
    for it in items:
        if it.get("split", "train") != "train":
            raise ValueError(f"priming data must come from the train split; item {it.get('id')} is {it['split']!r}")
    out: list[dict[str, Any]] = []
    while len(out) < n:
        batch = list(items)
        rng.shuffle(batch)
        out += batch
    return out[:n]


def generate_traces(items: list[dict[str, Any]], variant: str, n: int, seed: int) -> list[Trace]:
    """n traces over train items ({"id", "numbers", "target"}), deterministic for a seed."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown priming variant {variant!r}; allowed: {list(VARIANTS)}")
    order, rng = random.Random(f"order:{seed}"), random.Random(f"traces:{variant}:{seed}")  # n=10 is a prefix of n=20
    return [generate_trace(it["numbers"], it["target"], variant, rng, f"{it['id']}-{variant}-{i}")
            for i, it in enumerate(_train_cycle(items, n, order))]


# ---------------------------------------------------------------- reflect-and-retry dialogues


def _first_attempt(numbers: tuple[int, ...], target: int, final: _Node, ending: str, rng: random.Random,
                   claim: bool) -> tuple[str, set[Fraction]]:
    """A failed first attempt in the primed policy's own format: a search that may check and abandon a miss,
    then settles on `final` (narrated truthfully) and ends with `ending`; `claim`: it falsely says it checks out,
    as a policy does whose checks always passed in training. Context only, never a training target.
    Returns the text and the values of the wrong combinations it tried (the retry tries none of them again)."""
    steps, tried = [_say("intro", rng, t=target, nums=_names(numbers))], {final.value} - {Fraction(target)}
    if rng.random() < 0.6:
        pool = [p for p in _wrong_paths(numbers, target, rng) if p.value not in (final.value, target)]
        if pool:
            dead_end = rng.choice(pool[:6])
            steps += [text for _, text in _failed_attempt(dead_end, target, True, rng)]
            tried.add(dead_end.value)
    steps.append(_say("solution", rng, path=_path_text(final, rng)))
    if claim:
        steps.append(_say("false_claim", rng, path=_path_text(final, rng), t=target))
    if ending.startswith("<answer>"):
        steps.append(_say("conclude_wrong", rng, eq=final.expr))
    return "<think>\n" + "\n".join(steps) + "\n</think>\n" + ending, tried


def _invalid_attempt(numbers: tuple[int, ...], target: int, solution: _Node,
                     rng: random.Random) -> tuple[str, str, set[Fraction]]:
    """The right equation, but not readable as an answer; the retry may give the same equation, well formed."""
    kind, words = rng.choice(sorted(_INVALID_FORMS)), rng.choice(["The equation is", "My answer:", "I think"])
    ending = _INVALID_FORMS[kind].format(eq=solution.expr, t=target, words=words)
    first, tried = _first_attempt(numbers, target, solution, ending, rng, claim=rng.random() < _FALSE_CLAIM_PROB)
    return first, _say(kind, rng, t=target, words=words), tried


def _wrong_numbers_attempt(numbers: tuple[int, ...], target: int, solution: _Node,
                           rng: random.Random) -> tuple[str, str, set[Fraction]]:
    """Drop one number, and (usually) reuse another in its place; still aim at the target."""
    i = rng.randrange(len(numbers))
    dropped, used = numbers[i], numbers[:i] + numbers[i + 1:]
    what = "left out " + (f"one of the {dropped}s" if numbers.count(dropped) > 1 else str(dropped))
    others = sorted({n for n in numbers if n != dropped})
    if others and (len(numbers) < 3 or rng.random() < 0.6):
        dup = rng.choice(others)
        used += (dup,)
        what = f"used {dup} " + ("twice" if numbers.count(dup) == 1 else "more often than given") + " and " + what
    node = _find([_leaf(n) for n in used], target, rng, nice=True) or _wrong_paths(used, target, rng)[0]
    hit = f" even though it reached {target}" if node.value == target else ""
    first, tried = _first_attempt(numbers, target, node, f"<answer>{node.expr}</answer>", rng,
                                  claim=rng.random() < _FALSE_CLAIM_PROB)
    reflection = _say("wrong_numbers", rng, eq=node.expr, what=what, hit=hit, nums=_names(numbers))
    return first, reflection, tried


def _missed_attempt(numbers: tuple[int, ...], target: int, solution: _Node,
                    rng: random.Random) -> tuple[str, str, set[Fraction]]:
    node = rng.choice(_wrong_paths(numbers, target, rng)[:3])  # a near miss
    claim = rng.random() < _FALSE_CLAIM_PROB
    first, tried = _first_attempt(numbers, target, node, f"<answer>{node.expr}</answer>", rng, claim)
    how = "too much" if node.value > target else "too little"
    reflection = _say("claimed_miss" if claim else "missed_target", rng, eq=node.expr, v=node.value, t=target,
                      d=abs(node.value - target), how=how)
    return first, reflection, tried


_ATTEMPTS = {"invalid_equation": _invalid_attempt, "wrong_numbers": _wrong_numbers_attempt,
             "missed_target": _missed_attempt}


def _retry(numbers: tuple[int, ...], target: int, avoid: set[Fraction], rng: random.Random) -> str:
    """A fresh search (all_strategies) that tries none of the first attempt's wrong values again, ending correct."""
    trace = generate_trace(numbers, target, "all_strategies", rng, avoid=avoid)
    if rng.random() < 0.5:
        return trace.text.replace("<think>\n", f"<think>\n{_say('retry_intro', rng)}\n", 1)
    return trace.text


def _dialogue(item: dict[str, Any], category: str, rng: random.Random, dialogue_id: str) -> ReflectionDialogue:
    numbers, target = tuple(int(n) for n in item["numbers"]), int(item["target"])
    solution = _solution(numbers, target, rng)
    first, reflection, tried = _ATTEMPTS[category](numbers, target, solution, rng)
    retry = _retry(numbers, target, tried, rng)
    truth = {"numbers": list(numbers), "target": target}
    got = countdown.verify(first, truth).category
    if got != category or not countdown.verify(retry, truth).correct:  # a generator bug, never bad data
        raise AssertionError(f"reflection dialogue for {truth}: first attempt is {got}, wanted {category}")
    return ReflectionDialogue(dialogue_id, numbers, target, category, first, reflection, retry)


def generate_reflection_dialogues(items: list[dict[str, Any]], n: int, seed: int) -> list[ReflectionDialogue]:
    """n dialogues over train items, the error categories in rotation; deterministic for a seed."""
    order, rng = random.Random(f"order:{seed}"), random.Random(f"reflections:{seed}")
    return [_dialogue(it, CATEGORIES[i % len(CATEGORIES)], rng, f"{it['id']}-reflect-{i}")
            for i, it in enumerate(_train_cycle(items, n, order))]
