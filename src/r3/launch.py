"""Run a training stage in one process, or under `accelerate launch` when `train.num_processes` > 1.

    python -m r3.launch stages/train.py --task countdown ...

One process: the script itself. More: `accelerate launch` with `train.num_processes` processes, one per GPU
with the DDP or DeepSpeed ZeRO config of `train.zero_stage` (configs/accelerate/), or, when no GPU is
visible, CPU processes over gloo started by torchrun (tests run the train stage that way). Each rank runs
the whole script; the script writes only on the main process (stages/train.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from r3.errors import R3Error
from r3.params import Params

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
ZERO_CONFIGS = {0: "ddp.yaml", 2: "zero2.yaml", 3: "zero3.yaml"}


def command(script: str, args: list[str], num_processes: int, zero_stage: int, cuda: bool) -> list[str]:
    """The command line that runs `script args` on `num_processes` processes."""
    if num_processes == 1:
        return [sys.executable, script, *args]
    if not cuda:
        if zero_stage:
            raise R3Error(f"train.zero_stage={zero_stage}: DeepSpeed ZeRO needs GPUs; use 0 on CPU")
        # CPU processes over gloo (accelerate's own CPU launcher needs MPI): torchrun, which accelerate reads
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                str(num_processes), script, *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
            "--num_machines", "1", "--config_file", str(CONFIGS / ZERO_CONFIGS[zero_stage]), script, *args]


def main(argv: list[str]) -> None:
    if not argv:
        raise R3Error("usage: python -m r3.launch SCRIPT [ARGS...]")
    script, args = argv[0], argv[1:]
    params = "params.yaml"
    if "--params" in args:
        params = args[args.index("--params") + 1]
    t = Params.load(params).section("train")
    num_processes = t.get("num_processes", int, min_value=1)
    zero_stage = t.get("zero_stage", int, choices=tuple(ZERO_CONFIGS))
    cmd = command(script, args, num_processes, zero_stage, torch.cuda.is_available())
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except R3Error as exc:
        print(f"error: launch: {exc}", file=sys.stderr)
        sys.exit(1)
