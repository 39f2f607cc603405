"""The validation curve during RL: when it measures, what it logs, and the one-line error for a bad interval."""

from types import SimpleNamespace

import pytest
from transformers import TrainerControl

from r3.errors import R3Error
from r3.training.validation import ValidationCurve, check_interval


def _run(curve: ValidationCurve, max_steps: int, stop_at: int | None = None) -> list[dict]:
    """Drive the callback as the Trainer does: train begin, then per step on_step_end and on_log."""
    state, logs = SimpleNamespace(global_step=0, max_steps=max_steps), []
    curve.on_train_begin(None, state, TrainerControl())
    for step in range(1, max_steps + 1):
        state.global_step = step
        control = TrainerControl(should_training_stop=step == stop_at)
        curve.on_step_end(None, state, control)
        entry = {"loss": 0.0}
        curve.on_log(None, state, control, logs=entry)
        logs.append(entry)
        if control.should_training_stop:
            break
    return logs


def test_measures_at_the_start_every_n_steps_and_at_the_end():
    weights = iter(range(100))  # the "accuracy" is the number of syncs so far: proves a sync precedes each measure
    synced = []
    curve = ValidationCurve(lambda: len(synced) / 10, lambda: synced.append(next(weights)), every=3)
    logs = _run(curve, max_steps=7)
    assert [step for step, _ in curve.curve] == [0, 3, 6, 7]
    assert curve.curve == [(0, 0.0), (3, 0.1), (6, 0.2), (7, 0.3)]
    assert [log.get("eval/first_try_acc") for log in logs] == [None, None, 0.1, None, None, 0.2, 0.3]


def test_a_run_stopped_early_is_measured_where_it_stopped():
    curve = ValidationCurve(lambda: 0.5, lambda: None, every=4)
    _run(curve, max_steps=10, stop_at=5)  # e.g. the token budget ran out
    assert [step for step, _ in curve.curve] == [0, 4, 5]


def test_only_the_main_process_measures_but_every_process_syncs():
    synced, measured = [], []
    curve = ValidationCurve(lambda: measured.append(1) or 0.0, lambda: synced.append(1), every=1, main=False)
    logs = _run(curve, max_steps=3)
    assert synced == [1, 1, 1] and measured == [] and curve.curve == []
    assert all("eval/first_try_acc" not in log for log in logs)


@pytest.mark.parametrize("every", [0, 9])
def test_an_interval_outside_the_run_is_an_error_naming_the_param(every):
    with pytest.raises(R3Error, match=r"^train\.eval_every=\d+ must lie in \[1, train\.max_steps=8\]$"):
        check_interval(every, 8)
    check_interval(None, 8)
    check_interval(8, 8)
