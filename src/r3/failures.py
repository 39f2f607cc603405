"""Choosing the failure set: which train queries to keep from k sampled first attempts."""

from __future__ import annotations

KEEP_POLICIES = {
    # the paper: keep a query the model fails (at least once among its samples)
    "failed_any": lambda n_correct, k: n_correct < k,
    # only queries the model never solves
    "failed_all": lambda n_correct, k: n_correct == 0,
    # solved sometimes, failed sometimes: the easiest failures to learn from
    "mixed": lambda n_correct, k: 0 < n_correct < k,
}


def keep(policy: str, n_correct: int, k: int) -> bool:
    return KEEP_POLICIES[policy](n_correct, k)
