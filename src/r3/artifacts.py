"""Reading and writing pipeline artifacts: atomic writes and schema-checked Parquet reads.

Every write goes to a temporary sibling and is renamed into place, so a failing stage never
leaves a half-written output behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from r3.errors import R3Error


@contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    target = tmp / path.name
    if is_dir:
        target.mkdir()
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table deterministically (no pandas index, fixed row order as given)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    # pandas metadata holds nothing we need and can vary between runs; drop it for byte-stability
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: str | os.PathLike, columns: dict[str, type | tuple[type, ...]]) -> pd.DataFrame:
    """Read a Parquet table and check that it has `columns` with values of the given Python types."""
    path = Path(path)
    if not path.is_file():
        raise R3Error(f"{path}: input file is missing (run the stage that writes it: dvc repro)")
    try:
        df = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise R3Error(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    for name, kind in columns.items():
        if name not in df.columns:
            raise R3Error(f"{path}: missing column {name!r} (has {list(df.columns)})")
        for i, value in enumerate(df[name]):
            if not isinstance(value, kind):
                raise R3Error(
                    f"{path}: column {name!r} row {i} has type {type(value).__name__}, expected {_type_name(kind)}"
                )
    return df


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def write_json(obj: object, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json_column(df: pd.DataFrame, column: str, path: str | os.PathLike) -> list:
    """Decode a JSON-string column, naming the row on a decode error."""
    out = []
    for i, text in enumerate(df[column]):
        try:
            out.append(json.loads(text))
        except (TypeError, ValueError) as exc:
            raise R3Error(f"{path}: column {column!r} row {i} is not valid JSON ({exc})") from None
    return out


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts with None (not NaN) where a value is missing, as the protocol wrote them."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def content_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (relative names and bytes, in sorted order).

    Resume keys use it: a checkpoint is valid only for the exact starting model and training data it was
    made from, whatever their paths or timestamps.
    """
    path = Path(path)
    if not path.exists():
        raise R3Error(f"{path}: input is missing (run the stage that writes it: dvc repro)")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path)).encode() if path.is_dir() else b"")
        digest.update(b"\0")
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def run_key(**parts: object) -> str:
    """A short, stable key for everything that determines a run (JSON of the parts, sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
