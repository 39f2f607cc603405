"""Call matching in the function-calling verifier: maximum bipartite matching vs the former backtracking.

Usage:
    PYTHONPATH=src python benchmarks/verify_matching.py [--sizes 8 10 12 20 50] [--old-max 10] [--repeat 3]

compare_calls pairs every expected call with a distinct predicted call whose arguments match. It used to
search the assignments by backtracking (copied below as `old_perfect_matching`), which is exponential in
the worst case; it now runs Kuhn's augmenting paths (polynomial). Both are timed on the same synthetic
worst cases: n calls to one tool "f", where one predicted call carries an optional flag that every
expected call accepts but one (or two) expected calls require. The backtracking hands that call to the
first expected call and then enumerates every arrangement of the others before it backs out:

- valid:   expected 0..n-2 accept flag omitted or true, expected n-1 requires it; one predicted call
           has it. Correct, but only if the flagged call goes to the last expected call.
- invalid: the same with two expected calls requiring the flag: no assignment exists (Hall's
           condition fails), which the backtracking proves by trying all of them.

The old algorithm runs only up to --old-max calls ("skipped" beyond: (n-1)! arrangements). The time is
the best of --repeat runs of the whole compare_calls (argument comparison included). The 50-call cases
must take < 50 ms with the new algorithm; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from unittest import mock

from r3.tasks import tool_calls
from r3.tasks.tool_calls import compare_calls

SCHEMAS = {"f": {"required": ["k"], "types": {"k": {"type": "integer"}, "flag": {"type": "boolean"}}}}
BUDGET_S, BUDGET_N = 0.050, 50


def old_perfect_matching(ok: list[list[int]], used: set[int], i: int = 0) -> bool:
    """The former compare_calls matching (git history: src/r3/tasks/tool_calls.py), verbatim."""
    if i == len(ok):
        return True
    for j in ok[i]:
        if j not in used:
            used.add(j)
            if old_perfect_matching(ok, used, i + 1):
                return True
            used.discard(j)
    return False


def worst_case(n: int, strict: int) -> tuple[list[dict], list[dict]]:
    """(predicted, expected): n calls; the last `strict` expected calls require the flag only one call has."""
    loose = {"k": [1], "flag": ["", True]}
    expected = [{"name": "f", "arguments": loose if i < n - strict else {"k": [1], "flag": [True]}} for i in range(n)]
    predicted = [{"name": "f", "arguments": {"k": 1, "flag": True} if j == 0 else {"k": 1}} for j in range(n)]
    return predicted, expected


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run_case(n: int, strict: int, old: bool, repeat: int) -> tuple[float, bool]:
    predicted, expected = worst_case(n, strict)
    if not old:
        seconds, verdict = best_time(lambda: compare_calls(predicted, expected, SCHEMAS), repeat)
        return seconds, verdict.correct
    with mock.patch.object(tool_calls, "_has_perfect_matching", lambda ok, _n: old_perfect_matching(ok, set())):
        seconds, verdict = best_time(lambda: compare_calls(predicted, expected, SCHEMAS), repeat)
    return seconds, verdict.correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 10, 12, 20, 50])
    parser.add_argument("--old-max", type=int, default=10, help="largest n the backtracking is run on")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"{'calls':>5}  {'case':<8} {'verdict':<8} {'matching (ms)':>14} {'backtracking (ms)':>18}")
    over_budget = False
    for n in args.sizes:
        for case, strict in (("valid", 1), ("invalid", 2)):
            new_s, new_ok = run_case(n, strict, old=False, repeat=args.repeat)
            assert new_ok == (case == "valid"), (n, case)
            if n <= args.old_max:
                old_s, old_ok = run_case(n, strict, old=True, repeat=1)
                assert old_ok == new_ok, (n, case)  # both algorithms decide the same
                old_col = f"{old_s * 1e3:18.1f}"
            else:
                old_col = f"{'skipped':>18}"
            verdict = "correct" if new_ok else "wrong"
            print(f"{n:>5}  {case:<8} {verdict:<8} {new_s * 1e3:14.2f} {old_col}")
            if n == BUDGET_N and new_s >= BUDGET_S:
                over_budget = True
    if BUDGET_N in args.sizes:
        print(f"{BUDGET_N} calls {'over' if over_budget else 'within'} the {BUDGET_S * 1e3:.0f} ms budget")
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
