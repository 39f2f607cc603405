"""params.yaml as DVC writes it: `dvc exp run -S train.learning_rate=3e-5` stores `3e-05`."""

from r3.params import Params


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text('train: {learning_rate: 3e-05, beta: 1.0e-4, steps: 12, name: "3e-05", big: 1e3}\n')
    train = Params.load(path).section("train")
    assert train.get("learning_rate", float) == 3e-05
    assert train.get("beta", float) == 1e-4
    assert train.get("big", float) == 1000.0
    assert train.get("steps", int) == 12  # integers stay integers
    assert train.get("name", str) == "3e-05"  # a quoted string stays a string
