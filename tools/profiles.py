"""GPU profiles (profiles/*.yaml): the `-S` arguments that apply one to `dvc exp run`, and its memory plan.

A profile is a flat mapping of dotted params.yaml keys to values, plus `gpu_memory_gib`, the device size
the planner reads (never passed to dvc).

    dvc exp run $(python tools/profiles.py set-args profiles/qwen2.5-1.5b-1gpu.yaml)
    python tools/profiles.py plan profiles/qwen2.5-7b-1gpu-lora.yaml [--params params.yaml] [--gpu-gib 80]
                                 [--config path/to/config.json]

`plan` merges the profile over params.yaml, prints the per-device memory estimate (src/r3/training/plan.py)
and exits 1 when it does not fit.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from r3.errors import R3Error
from r3.params import _Loader  # YAML 1.2 floats (1e-5), as params.yaml is read
from r3.training.plan import format_plan, plan_from_params

PLANNER_ONLY = "gpu_memory_gib"  # read by the planner, not a params.yaml key
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PLAIN = re.compile(r"[A-Za-z0-9_./:@+-]+")  # strings Hydra (dvc's -S parser) reads unquoted


def _load_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # _Loader is a SafeLoader
    except OSError as exc:
        raise R3Error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise R3Error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_profile(path: Path) -> dict[str, Any]:
    data = _load_yaml(path, "profile")
    if not isinstance(data, dict):
        raise R3Error(f"{path}: a profile must be a mapping of dotted params keys to values, "
                      f"got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise R3Error(f"{path}: key {key!r} is not a dotted params key like train.micro_batch_size")
        scalars = value if isinstance(value, list) else [value]
        if not all(v is None or isinstance(v, str | int | float | bool) for v in scalars):
            raise R3Error(f"{path}: key {key!r}: the value must be a scalar or a list of scalars, got {value!r}")
    if PLANNER_ONLY in data and (isinstance(data[PLANNER_ONLY], bool)
                                 or not isinstance(data[PLANNER_ONLY], int | float) or data[PLANNER_ONLY] <= 0):
        raise R3Error(f"{path}: key {PLANNER_ONLY!r} must be a positive number of GiB, got {data[PLANNER_ONLY]!r}")
    return data


def hydra_value(value: Any) -> str:
    """`value` as Hydra's override grammar (what `dvc exp run -S` parses) reads it back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text.replace("e", ".0e") if "e" in text and "." not in text else text  # 1.0e-05: a float in YAML 1.1
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if _PLAIN.fullmatch(value) and yaml.load(value, Loader=_Loader) == value:
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_args(profile: dict[str, Any]) -> str:
    args = []
    for key, value in profile.items():
        if key != PLANNER_ONLY:
            args += ["-S", f"{key}={hydra_value(value)}"]
    return " ".join(shlex.quote(a) for a in args)


def _missing_keys(profile: dict[str, Any], params: dict) -> list[str]:
    """Profile keys params.yaml does not have (dvc exp run -S rejects them)."""
    missing = []
    for key in profile:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    return [k for k in missing if k != PLANNER_ONLY]


def merge(profile: dict[str, Any], params: dict, source: Path) -> dict:
    """params with every profile key set (nested), new keys included."""
    merged = json.loads(json.dumps(params))  # a deep copy of plain YAML data
    for key, value in profile.items():
        if key == PLANNER_ONLY:
            continue
        node, parts = merged, key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise R3Error(f"{source}: key {key!r}: {'.'.join(parts[:i + 1])!r} is not a mapping in params.yaml")
        node[parts[-1]] = value
    return merged


def _load_params(path: Path) -> dict:
    params = _load_yaml(path, "params file")
    if not isinstance(params, dict):
        raise R3Error(f"{path}: expected a mapping at the top level")
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_set = sub.add_parser("set-args", help="print the -S key=value arguments for dvc exp run")
    p_set.add_argument("profile", type=Path)
    p_set.add_argument("--params", type=Path, default=Path("params.yaml"), help="warn about keys it lacks")
    p_plan = sub.add_parser("plan", help="print the per-device memory plan; exit 1 if it does not fit")
    p_plan.add_argument("profile", type=Path)
    p_plan.add_argument("--params", type=Path, default=Path("params.yaml"))
    p_plan.add_argument("--gpu-gib", type=float, default=None, help="device size (default: the profile's)")
    p_plan.add_argument("--config", type=Path, default=None, help="the model's HF config.json")
    args = parser.parse_args(argv)

    try:
        profile = load_profile(args.profile)
        if args.command == "set-args":
            if args.params.is_file():
                for key in _missing_keys(profile, _load_params(args.params)):
                    print(f"warning: {args.profile}: {key!r} is not in {args.params}; "
                          f"dvc exp run -S rejects it until it is added", file=sys.stderr)
            print(set_args(profile))
            return 0
        params = _load_params(args.params)
        gpu_gib = args.gpu_gib if args.gpu_gib is not None else profile.get(PLANNER_ONLY)
        if gpu_gib is None:
            raise R3Error(f"{args.profile}: no {PLANNER_ONLY!r} key; pass --gpu-gib")
        config = None
        if args.config is not None:
            try:
                config = json.loads(args.config.read_text())
            except OSError as exc:
                raise R3Error(f"{args.config}: cannot read config ({exc.strerror or exc})") from None
            except json.JSONDecodeError as exc:
                raise R3Error(f"{args.config}: not valid JSON ({exc})") from None
            if not isinstance(config, dict):
                raise R3Error(f"{args.config}: expected a JSON object")
        for key in _missing_keys(profile, params):
            print(f"note: {key!r} is not in {args.params} yet (a new key)", file=sys.stderr)
        result = plan_from_params(merge(profile, params, args.profile), float(gpu_gib), config)
    except R3Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_plan(result))
    if not result.fits:
        print(f"error: {args.profile}: does NOT fit: needs {result.estimate.total:.1f} GiB of {gpu_gib:g} GiB",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
