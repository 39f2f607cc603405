"""Choosing the failure set: which train queries to sample, which to keep from k sampled first attempts, and
which failed attempt a training prompt shows."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from r3.errors import R3Error

T = TypeVar("T")

KEEP_POLICIES = {
    # the paper: keep a query the model fails (at least once among its samples)
    "failed_any": lambda n_correct, k, band: n_correct < k,
    # only queries the model never solves
    "failed_all": lambda n_correct, k, band: n_correct == 0,
    # solved sometimes, failed sometimes: the easiest failures to learn from
    "mixed": lambda n_correct, k, band: 0 < n_correct < k,
    # solved at a pass rate inside `failures.pass_rate` = [low, high] (inclusive): a retry can succeed where a
    # sampled first attempt sometimes does, while a query the model always fails gives a reflection nothing to
    # be rewarded for
    "pass_rate": lambda n_correct, k, band: band[0] <= n_correct / k <= band[1],
}


def keep(policy: str, n_correct: int, k: int, pass_rate: tuple[float, float] = (0.0, 1.0)) -> bool:
    return KEEP_POLICIES[policy](n_correct, k, pass_rate)


def pass_rate_band(value, field: str = "failures.pass_rate") -> tuple[float, float]:
    """`[low, high]` with 0 <= low <= high < 1 (a query solved every time has no failed attempt to show)."""
    ok = (isinstance(value, list | tuple) and len(value) == 2
          and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value))
    if not ok or not 0.0 <= value[0] <= value[1] < 1.0:
        raise R3Error(f"params.yaml: field {field!r} must be [low, high] with 0 <= low <= high < 1, got {value!r}")
    return float(value[0]), float(value[1])


def draw_queries(pool: Sequence[T], n: int, seed: int, field: str = "failures.queries") -> list[T]:
    """`n` items of `pool` drawn without replacement with `seed`, in pool order (all of them when n = len)."""
    if n > len(pool):
        raise R3Error(f"params.yaml: field {field!r} is {n}, but there are only {len(pool)} train queries to draw from")
    chosen = sorted(random.Random(seed).sample(range(len(pool)), n))
    return [pool[i] for i in chosen]


def shown_attempt(evaluated: tuple[str, bool] | None, failed_samples: Sequence[str]) -> tuple[str, str]:
    """The failed first attempt a training prompt shows, and where it comes from.

    Evaluation reflects on the policy's first attempt drawn with `baseline`'s sampling (greedy by default) when
    it fails; training shows that same attempt wherever it failed (`evaluated` = `(text, correct)`, when one
    was drawn): 'evaluation'. Otherwise the first failed sample: 'sampled'.
    """
    if evaluated is not None and not evaluated[1]:
        return evaluated[0], "evaluation"
    return failed_samples[0], "sampled"
