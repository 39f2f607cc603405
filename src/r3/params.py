"""Loading `params.yaml` and reading typed fields out of it with errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from r3.errors import R3Error

_MISSING = object()


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) reads `3e-05` as a string, and `dvc exp run -S x=3e-5` writes just
    that into params.yaml."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """A YAML text read as params.yaml is read (YAML 1.2 floats such as `1e-4`)."""
    return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader


class Params:
    """A read-only view of a params mapping that validates every field it hands out."""

    def __init__(self, data: dict[str, Any], source: str = "params.yaml", prefix: str = ""):
        self._data = data
        self._source = source
        self._prefix = prefix

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> Params:
        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=_Loader)  # _Loader is a SafeLoader
        except FileNotFoundError:
            raise R3Error(f"{path}: params file not found") from None
        except yaml.YAMLError as exc:
            raise R3Error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise R3Error(f"{path}: expected a mapping at the top level")
        return cls(data, str(path))

    def _name(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        node: Any = self._data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not _MISSING:
                    return default
                raise R3Error(f"{self._source}: missing field {self._name(key)!r}")
            node = node[part]
        return node

    def section(self, key: str) -> Params:
        value = self.raw(key)
        if not isinstance(value, dict):
            raise R3Error(f"{self._source}: field {self._name(key)!r} must be a mapping")
        return Params(value, self._source, f"{self._name(key)}.")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _MISSING, *, choices=None,
            min_value=None, max_value=None) -> Any:
        value = self.raw(key, default)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a YAML `true` where a number belongs is a mistake
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value) if int not in kinds else value
        if value is None and type(None) in kinds:
            ok = True
        if not ok:
            names = "/".join(k.__name__ for k in kinds)
            raise R3Error(f"{self._source}: field {self._name(key)!r} must be {names}, got {value!r}")
        if choices is not None and value not in choices:
            raise R3Error(f"{self._source}: field {self._name(key)!r} is {value!r}; choose one of {list(choices)}")
        if min_value is not None and value is not None and value < min_value:
            raise R3Error(f"{self._source}: field {self._name(key)!r} must be >= {min_value}, got {value!r}")
        if max_value is not None and value is not None and value > max_value:
            raise R3Error(f"{self._source}: field {self._name(key)!r} must be <= {max_value}, got {value!r}")
        return value

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"a.b.c": leaf} (the dotted keys of `dvc exp run -S`)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return out
