"""tools/train_ablation.py: param overrides and the table (the runs themselves are stage runs, tested there)."""

import pytest
from conftest import ROOT, load_script

ablation = load_script(ROOT / "tools" / "train_ablation.py")


def test_overrides_set_nested_fields_as_yaml_values_and_leave_the_params_alone():
    params = {"train": {"lora": {"enabled": False}, "learning_rate": 1e-5}, "seed": 0}
    out = ablation.with_overrides(params, ["train.lora.enabled=true", "train.learning_rate=1e-4", "seed=3"])
    assert out == {"train": {"lora": {"enabled": True}, "learning_rate": 1e-4}, "seed": 3}
    assert params["train"]["lora"]["enabled"] is False


@pytest.mark.parametrize("kv", ["train.lerning_rate=1", "train.lora.rank.x=2", "nokey", "=3"])
def test_an_unknown_or_malformed_override_is_an_error_naming_it(kv):
    with pytest.raises(SystemExit, match="error: -S"):
        ablation.with_overrides({"train": {"lora": {"r": 16}, "learning_rate": 1e-5}}, [kv])


def test_a_row_reads_the_training_and_validation_metrics():
    train = {"global_step": 8, "frac_reward_zero_std": 0.875, "retry_success": 0.03125}
    val = {"n": 64, "first_try_acc": 0.0625, "second_try_acc": 0.125, "retry_success_rate": 0.0667, "n_retried": 60}
    r = ablation.row("lora", ["train.lora.enabled=true"], train, val)
    assert (r["groups_with_variance"], r["val_fixed"], r["val_retried"]) == (0.125, 4, 60)
    line = ablation.markdown([r, ablation.row("primed", [], None, val)]).splitlines()
    assert line[2] == "| lora | `train.lora.enabled=true` | 8 | 12.5% | 3.1% | 6.2% | 12.5% | 4 of 60 |"
    assert line[3] == "| primed | – | – | – | – | 6.2% | 12.5% | 4 of 60 |"
