"""Countdown: combine the given numbers (each exactly once) with + - * / into an equation = target.

Sources: "generated" (seeded, offline default; every puzzle is solved and its solution verified)
and "hub" (`Jiayi-Pan/Countdown-Tasks-3to4`, needs network). Items are deduplicated by
(sorted numbers, target), which is also their split group.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from fractions import Fraction
from functools import lru_cache
from itertools import combinations_with_replacement
from typing import Any

from r3.errors import R3Error
from r3.tasks import arithmetic
from r3.tasks.base import CORRECT, SPLITS, Item, Task, Verdict

HUB_DATASET = "Jiayi-Pan/Countdown-Tasks-3to4"
TOLERANCE = 1e-5
_OPEN, _CLOSE = "<answer>", "</answer>"
_ENUMERATE_LIMIT = 5000  # up to this many number multisets, a stalled generator counts its space exactly


# ---------------------------------------------------------------- verifier


def extract_answer(completion: str) -> str | None:
    """Text of the last <answer> span, or None. A missing close tag is tolerated at the very end
    (generation stops on "</answer>" and some backends drop the stop string). str.rfind is linear."""
    start = completion.rfind(_OPEN)
    if start < 0:
        return None
    start += len(_OPEN)
    end = completion.find(_CLOSE, start)
    return completion[start:] if end < 0 else completion[start:end]


def _equation(completion: str) -> str:
    """The stripped equation text of the last answer; ArithmeticParseError when there is none to parse."""
    answer = extract_answer(completion) if isinstance(completion, str) else None
    if answer is None:
        raise arithmetic.ArithmeticParseError("no <answer> tag")
    if len(answer) > 4 * arithmetic.MAX_CHARS:  # skip stripping megabytes; parse would reject it anyway
        raise arithmetic.ArithmeticParseError(f"equation longer than {arithmetic.MAX_CHARS} characters")
    return answer.strip()


def verify(completion: str, ground_truth: dict[str, Any]) -> Verdict:
    """Binary verdict plus category; never raises on any completion string.

    ground_truth["unary_minus"] (default True, as TinyZero's eval) allows `-3 + 5 + 2`; the number
    check uses the unsigned literals, so `-3` uses the number 3 (as TinyZero's digit regex reads it).
    """
    try:
        expr = arithmetic.parse(_equation(completion), unary_minus=ground_truth.get("unary_minus", True))
        value = arithmetic.evaluate(expr)  # before the number check: dividing by zero is invalid whatever the numbers
    except arithmetic.ArithmeticParseError as e:
        return Verdict(False, "invalid_equation", str(e))
    used = arithmetic.literals(expr)
    want = [int(n) for n in ground_truth["numbers"]]
    if Counter(used) != Counter(want):
        return Verdict(False, "wrong_numbers", f"used {sorted(used)}, given {sorted(want)}")
    target = ground_truth["target"]
    if abs(value - Fraction(target)) < TOLERANCE:
        return Verdict(True, CORRECT, f"= {target}")
    return Verdict(False, "missed_target", f"= {value}, target {target}")


def _parses(equation: str, unary_minus: bool) -> bool:
    try:
        arithmetic.parse(equation, unary_minus=unary_minus)
    except arithmetic.ArithmeticParseError:
        return False
    return True


def uses_unary_minus(completion: str) -> bool:
    """Whether the answer's equation needs the unary-minus rule: it parses with it and not without it."""
    try:
        equation = _equation(completion)
    except arithmetic.ArithmeticParseError:
        return False
    return _parses(equation, True) and not _parses(equation, False)


# ---------------------------------------------------------------- solver

# An expression is kept as (text, precedence) so that parentheses are added only where needed.
_ATOM, _SUM, _PRODUCT = 3, 1, 2


def _combine(x: tuple[str, int], op: str, y: tuple[str, int]) -> tuple[str, int]:
    p = _SUM if op in "+-" else _PRODUCT
    a = x[0] if x[1] >= p else f"({x[0]})"
    # right operand: equal precedence needs parens after - and / (a - (b + c) != a - b + c)
    b = y[0] if y[1] > p or (y[1] == p and op in "+*") else f"({y[0]})"
    return f"{a} {op} {b}", p


@lru_cache(maxsize=200_000)
def _values(nums: tuple[int, ...]) -> dict[Fraction | int, tuple[str, int]]:
    """Every value reachable using each number of the sorted tuple exactly once -> one expression.

    Dynamic programming over splits into two sub-multisets (memoised, shared across puzzles);
    ints are kept as ints (fast) and only non-exact divisions become Fractions.
    """
    if len(nums) == 1:
        return {nums[0]: (str(nums[0]), _ATOM)}
    out: dict[Fraction | int, tuple[str, int]] = {}
    n = len(nums)
    seen: set[tuple[int, ...]] = set()
    for mask in range(1, 1 << n, 2):  # index 0 always on the left: the ops below cover both orders
        if mask == (1 << n) - 1:
            continue
        left = tuple(nums[i] for i in range(n) if mask >> i & 1)
        if left in seen:
            continue
        seen.add(left)
        right = tuple(nums[i] for i in range(n) if not mask >> i & 1)
        for a, ea in _values(left).items():
            for b, eb in _values(right).items():
                cands = [(a + b, ea, "+", eb), (a * b, ea, "*", eb)]
                cands += [(a - b, ea, "-", eb), (b - a, eb, "-", ea)]
                if b:
                    cands.append((Fraction(a) / b, ea, "/", eb))  # Fraction: int / int is a float
                if a:
                    cands.append((Fraction(b) / a, eb, "/", ea))
                for v, x, op, y in cands:
                    if isinstance(v, Fraction) and v.denominator == 1:
                        v = v.numerator
                    if v not in out:
                        out[v] = _combine(x, op, y)
    return out


def reachable_targets(numbers: list[int] | tuple[int, ...]) -> dict[int, str]:
    """Integer values reachable with all the numbers (each once) -> one equation for each."""
    return {v: e for v, (e, _) in _values(tuple(sorted(numbers))).items() if isinstance(v, int)}


def solve(numbers: list[int] | tuple[int, ...], target: int) -> str | None:
    """One equation using each number exactly once that equals target, or None."""
    found = _values(tuple(sorted(numbers))).get(target)
    return found[0] if found else None


# ---------------------------------------------------------------- sources


def _unary_minus(config: dict[str, Any]) -> bool:
    """data.countdown.unary_minus (default True, as TinyZero): whether the verifier accepts a unary minus."""
    value = config.get("unary_minus", True)
    if not isinstance(value, bool):
        raise R3Error(f"countdown: unary_minus must be true or false, got {value!r}")
    return value


def _make_item(numbers: list[int], target: int, solution: str, source: str, unary_minus: bool) -> Item:
    group = f"{','.join(map(str, sorted(numbers)))}|{target}"
    # the verifier's rule travels in the ground truth: verify(completion, ground_truth) sees nothing else
    gt = {"numbers": list(numbers), "target": target, "solution": solution, "unary_minus": unary_minus}
    verdict = verify(render_answer(gt), gt)
    if not verdict.correct:  # the solver and the verifier disagree: a bug, not bad data
        raise AssertionError(f"solver produced {solution!r} for {group}: {verdict}")
    return Item(
        id="cd-" + hashlib.sha1(group.encode()).hexdigest()[:12],
        inputs={"numbers": list(numbers), "target": target},
        ground_truth=gt,
        source=source,
        group=group,
    )


def _int_range(config: dict[str, Any], key: str, default: Any = None) -> tuple[int, int]:
    value = config.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise R3Error(f"countdown: {key} must be an int or [min, max], got {value!r}") from None
    if lo > hi:
        raise R3Error(f"countdown: {key} has min > max: {value!r}")
    return lo, hi


def _n_items(config: dict[str, Any]) -> int:
    n = config.get("n_items")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise R3Error(f"countdown: n_items must be a non-negative int, got {n!r}")
    return n


@lru_cache(maxsize=200_000)
def _targets_in(nums: tuple[int, ...], lo: int, hi: int) -> tuple[int, ...]:
    return tuple(sorted(t for t in reachable_targets(nums) if lo <= t <= hi))


def load_generated(config: dict[str, Any], seed: int) -> list[Item]:
    """Seeded unique puzzles: sample numbers, pick a reachable target uniformly, record a solution."""
    kmin, kmax = _int_range(config, "num_numbers", [3, 4])
    nlo, nhi = _int_range(config, "number_range", [1, 10])
    tlo, thi = _int_range(config, "target_range", [1, 100])
    n_items = _n_items(config)
    unary_minus = _unary_minus(config)
    if kmin < 2 or kmax > 6:
        raise R3Error(f"countdown: num_numbers must lie in [2, 6], got {config.get('num_numbers')!r}")
    params = f"num_numbers={[kmin, kmax]}, number_range={[nlo, nhi]}, target_range={[tlo, thi]}"
    rng = random.Random(seed)
    items: list[Item] = []
    seen: set[tuple[tuple[int, ...], int]] = set()
    attempts = 0
    while len(items) < n_items:
        attempts += 1
        if attempts == 10 * n_items + 1000:  # sampling stalls: is the space of puzzles too small?
            space = _space_size(kmin, kmax, nlo, nhi, tlo, thi)
            if space is not None and space < n_items:
                raise R3Error(f"countdown: only {space} unique puzzles exist for {params}, n_items={n_items}")
        if attempts > 100 * n_items + 100_000:
            raise R3Error(
                f"countdown: could not generate {n_items} unique puzzles for {params} "
                f"(got {len(items)}); widen the ranges or lower n_items"
            )
        numbers = [rng.randint(nlo, nhi) for _ in range(rng.randint(kmin, kmax))]
        targets = _targets_in(tuple(sorted(numbers)), tlo, thi)
        if not targets:
            continue
        target = rng.choice(targets)
        key = (tuple(sorted(numbers)), target)
        if key in seen:
            continue
        seen.add(key)
        items.append(_make_item(numbers, target, solve(numbers, target), "generated", unary_minus))  # type: ignore[arg-type]
    return items


def _space_size(kmin: int, kmax: int, nlo: int, nhi: int, tlo: int, thi: int) -> int | None:
    """Exact number of unique puzzles, or None when there are too many number multisets to count."""
    m = nhi - nlo + 1
    if sum(math.comb(m + k - 1, k) for k in range(kmin, kmax + 1)) > _ENUMERATE_LIMIT:
        return None
    return sum(
        len(_targets_in(c, tlo, thi))
        for k in range(kmin, kmax + 1)
        for c in combinations_with_replacement(range(nlo, nhi + 1), k)
    )


def load_hub(config: dict[str, Any], seed: int) -> list[Item]:
    """A seeded, deduplicated sample of solvable puzzles from the HF hub dataset."""
    name = config.get("dataset", HUB_DATASET)
    n_items = _n_items(config)
    unary_minus = _unary_minus(config)
    try:
        import datasets

        ds = datasets.load_dataset(name, split="train", revision=config.get("revision"))
    except Exception as e:  # any failure (no network, missing package, bad revision) -> one line
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise R3Error(
            f"could not load {name} from the HF hub ({reason}); use source: generated for the offline default"
        ) from None
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    items: list[Item] = []
    seen: set[tuple[tuple[int, ...], int]] = set()
    for i in order:
        if len(items) >= n_items:
            break
        row = ds[i]
        numbers, target = [int(x) for x in row["nums"]], int(row["target"])
        key = (tuple(sorted(numbers)), target)
        if key in seen:
            continue
        seen.add(key)
        solution = solve(numbers, target)
        if solution is not None:  # the hub data has a few unsolvable rows
            items.append(_make_item(numbers, target, solution, f"hub:{name}", unary_minus))
    if len(items) < n_items:
        raise R3Error(f"countdown: {name} has only {len(items)} unique solvable puzzles, n_items={n_items}")
    return items


# ---------------------------------------------------------------- splits and prompts


def assign_splits(items: list[Item], sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Seeded group-level split: test is taken first, then validation, then train.

    Groups are ordered by a seeded hash (independent of item order), so the test split does not
    move when the train size changes. Items beyond the requested sizes are left unassigned.
    """
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise R3Error(f"countdown: unknown split(s) {sorted(unknown)}; allowed: {list(SPLITS)}")
    by_group: dict[str, list[str]] = {}
    for it in items:
        by_group.setdefault(it.group, []).append(it.id)
    order = sorted(by_group, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    need = sum(sizes.values())
    if need > len(items):
        raise R3Error(f"countdown: splits {sizes} need {need} items, only {len(items)} available")
    out: dict[str, str] = {}
    groups = iter(order)
    for split in ("test", "validation", "train"):
        taken = 0
        while taken < sizes.get(split, 0):
            g = next(groups, None)
            if g is None:
                raise R3Error(f"countdown: not enough item groups to fill splits {sizes}")
            for item_id in by_group[g]:
                out[item_id] = split
            taken += len(by_group[g])
    return out


PROMPT_STYLES = ("tinyzero", "concise")


def render_prompt(inputs: dict[str, Any], style: str = "tinyzero") -> list[dict[str, str]]:
    """Chat messages for one puzzle; "tinyzero" is TinyZero's wording, "concise" a short variant."""
    nums, target = list(inputs["numbers"]), inputs["target"]
    if style == "tinyzero":
        text = (
            f"Using the numbers {nums}, create an equation that equals {target}. You can use basic "
            "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work "
            "in <think> </think> tags. And return the final answer in <answer> </answer> tags, for "
            "example <answer> (1 + 2) / 3 </answer>."
        )
    elif style == "concise":
        text = (
            f"Write an equation that equals {target} using each of the numbers {nums} exactly once, "
            "with +, -, *, / and parentheses. Put only the equation in <answer></answer> tags, "
            "for example <answer>(1 + 2) * 3</answer>."
        )
    else:
        raise R3Error(f"countdown: unknown prompt style {style!r}; allowed: {list(PROMPT_STYLES)}")
    return [{"role": "user", "content": text}]


def render_answer(ground_truth: dict[str, Any]) -> str:
    return f"{_OPEN}{ground_truth['solution']}{_CLOSE}"


TASK = Task(
    name="countdown",
    error_categories=("invalid_equation", "wrong_numbers", "missed_target"),
    sources={"generated": load_generated, "hub": load_hub},
    assign_splits=assign_splits,
    render_prompt=render_prompt,
    prompt_styles=PROMPT_STYLES,
    render_answer=render_answer,
    verify=verify,
    stop_strings=(_CLOSE,),
    answer_span=extract_answer,
    error_cues={
        "invalid_equation": r"pars|format|syntax|invalid|malformed|\btags?\b|not an? (valid )?(equation|expression)"
                            r"|only (write|put) the equation",
        "wrong_numbers": r"twice|left out|leave out|each (number )?(exactly )?once|every number|more than once"
                         r"|missing|did(n't| not) use|extra number|not (in|one of) the (given )?numbers",
        "missed_target": r"target|miss|(not|n't) equal|result (is|was) (wrong|off)|wrong (value|result|total)",
    },
)
