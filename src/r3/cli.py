"""What every stage script shares: argument parsing, one-line errors, logging set-up."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

from r3.errors import R3Error

log = logging.getLogger("r3")


def stage_main(name: str, main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Run a stage: user errors become one line on stderr and exit code 1 (outputs are atomic)."""
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    start = time.perf_counter()
    try:
        main(args)
    except R3Error as exc:
        print(f"error: {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    log.info("done in %.1f s", time.perf_counter() - start)


def parser(description: str, task: bool = False, policy: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if task:
        p.add_argument("--task", required=True, help="task name, e.g. countdown")
    if policy:
        p.add_argument("--policy", required=True, help="policy name: the model directory models/<policy>")
    return p
