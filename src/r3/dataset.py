"""The task dataset table written by `download` and read by every inference stage.

Columns: id, task, split, source (str); inputs, ground_truth (JSON str). See tasks/base.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from r3.artifacts import read_json_column, read_parquet
from r3.errors import R3Error
from r3.tasks import SPLITS, Item

COLUMNS = {"id": str, "task": str, "split": str, "source": str, "inputs": str, "ground_truth": str}


@dataclass(frozen=True)
class Row:
    id: str
    split: str
    inputs: dict[str, Any]
    ground_truth: dict[str, Any]


def to_frame(task: str, items: list[Item], splits: dict[str, str]) -> pd.DataFrame:
    """Items that received a split, ordered by split then id (a stable, reviewable order)."""
    order = {s: i for i, s in enumerate(SPLITS)}
    kept = sorted((it for it in items if it.id in splits), key=lambda it: (order[splits[it.id]], it.id))
    return pd.DataFrame({
        "id": [it.id for it in kept],
        "task": task,
        "split": [splits[it.id] for it in kept],
        "source": [it.source for it in kept],
        "inputs": [json.dumps(it.inputs, sort_keys=True, ensure_ascii=False) for it in kept],
        "ground_truth": [json.dumps(it.ground_truth, sort_keys=True, ensure_ascii=False) for it in kept],
    }, columns=list(COLUMNS))


def load_rows(path: str | Path, task: str, split: str | None = None) -> list[Row]:
    """Rows of one task (and split), validated: schema, task name, split names, JSON fields."""
    df = read_parquet(path, COLUMNS)
    bad_task = df.index[df["task"] != task]
    if len(bad_task):
        raise R3Error(f"{path}: row {bad_task[0]} has task {df['task'][bad_task[0]]!r}, expected {task!r}")
    bad_split = df.index[~df["split"].isin(SPLITS)]
    if len(bad_split):
        raise R3Error(f"{path}: row {bad_split[0]} has split {df['split'][bad_split[0]]!r}; expected one of {SPLITS}")
    if df["id"].duplicated().any():
        raise R3Error(f"{path}: duplicate id {df['id'][df['id'].duplicated()].iloc[0]!r}")
    inputs = read_json_column(df, "inputs", path)
    truths = read_json_column(df, "ground_truth", path)
    rows = [Row(i, s, x, t) for i, s, x, t in zip(df["id"], df["split"], inputs, truths, strict=True)]
    return [r for r in rows if split is None or r.split == split]
