"""The failure set's rules: the exact queries each keep policy keeps for fixed pass counts, the seeded draw of
queries, and which failed attempt a training prompt shows."""

import pytest

from r3.errors import R3Error
from r3.failures import KEEP_POLICIES, draw_queries, keep, pass_rate_band, shown_attempt

# (n_correct, k): never solved, sometimes solved, always solved, for k = 1, 2 and 4
CASES = [(0, 1), (1, 1), (0, 2), (1, 2), (2, 2), (0, 4), (1, 4), (3, 4), (4, 4)]
KEPT = {
    "failed_any": {(0, 1), (0, 2), (1, 2), (0, 4), (1, 4), (3, 4)},  # the paper: failed at least once
    "failed_all": {(0, 1), (0, 2), (0, 4)},  # never solved
    "mixed": {(1, 2), (1, 4), (3, 4)},  # solved sometimes, failed sometimes
    "pass_rate": {(1, 4), (1, 2)},  # with the band [0.25, 0.5]
}
BAND = (0.25, 0.5)


def test_the_policies_are_the_documented_three():
    assert set(KEEP_POLICIES) == set(KEPT)


@pytest.mark.parametrize("policy", sorted(KEPT))
def test_each_policy_keeps_exactly_its_queries(policy):
    assert {case for case in CASES if keep(policy, *case, BAND)} == KEPT[policy]


def test_a_query_solved_every_time_is_never_kept():
    assert not any(keep(policy, k, k, pass_rate_band([0.0, 0.99])) for policy in KEPT for k in (1, 2, 4))


@pytest.mark.parametrize("name", ["sometimes", "", "Failed_any", "failed-any", "failed_any "])
def test_an_unknown_policy_is_refused(name):
    with pytest.raises(KeyError):
        keep(name, 0, 2)


def test_the_pass_rate_band_of_eight_samples_keeps_one_to_six_solved():
    band = pass_rate_band([0.125, 0.75])
    assert [n for n in range(9) if keep("pass_rate", n, 8, band)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("value", [[0.5, 0.25], [0.0, 1.0], [-0.1, 0.5], [0.2], "0.1-0.5", [True, 0.5], None])
def test_a_bad_pass_rate_band_is_refused_naming_the_param(value):
    with pytest.raises(R3Error, match="failures.pass_rate"):
        pass_rate_band(value)


def test_queries_are_drawn_with_the_seed_in_pool_order():
    pool = list(range(100))
    one, again, other = draw_queries(pool, 10, 0), draw_queries(pool, 10, 0), draw_queries(pool, 10, 1)
    assert one == again and one != other
    assert one == sorted(one) and len(set(one)) == 10 and one != pool[:10]
    assert draw_queries(pool, 100, 3) == pool


def test_drawing_more_queries_than_the_pool_holds_names_the_param():
    with pytest.raises(R3Error, match="failures.queries.*only 5"):
        draw_queries(list(range(5)), 6, 0)


def test_the_shown_attempt_is_evaluations_when_it_failed():
    assert shown_attempt(("greedy wrong", False), ["s1", "s2"]) == ("greedy wrong", "evaluation")
    assert shown_attempt(("greedy right", True), ["s1", "s2"]) == ("s1", "sampled")
    assert shown_attempt(None, ["s1", "s2"]) == ("s1", "sampled")
