"""Keep policies of the failure set: the exact queries each keeps for fixed pass counts."""

import pytest

from r3.failures import KEEP_POLICIES, keep

# (n_correct, k): never solved, sometimes solved, always solved, for k = 1, 2 and 4
CASES = [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 4), (1, 4), (3, 4), (4, 4)]
KEPT = {
    "failed_any": {(0, 1), (0, 2), (1, 2), (0, 4), (1, 4), (3, 4)},  # the paper: failed at least once
    "failed_all": {(0, 1), (0, 2), (0, 4)},  # never solved
    "mixed": {(1, 2), (1, 4), (3, 4)},  # solved sometimes, failed sometimes
}


def test_the_policies_are_the_documented_three():
    assert set(KEEP_POLICIES) == set(KEPT)


@pytest.mark.parametrize("policy", sorted(KEPT))
def test_each_policy_keeps_exactly_its_queries(policy):
    assert {case for case in CASES if keep(policy, *case)} == KEPT[policy]


def test_a_query_solved_every_time_is_never_kept():
    assert not any(keep(policy, k, k) for policy in KEPT for k in (1, 2, 4))


@pytest.mark.parametrize("name", ["sometimes", "", "Failed_any", "failed-any", "failed_any "])
def test_an_unknown_policy_is_refused(name):
    with pytest.raises(KeyError):
        keep(name, 0, 2)
