"""model: materialise `model.base` (bundled GGUF, HF hub id or local path) as models/raw."""

import json

from r3 import cli
from r3.artifacts import atomic_path
from r3.models import materialize
from r3.params import Params

log = cli.log


def main(args):
    p = Params.load(args.params).section("model")
    base = p.get("base", str)
    revision = p.get("revision", (str, type(None)), None)
    dtype = p.get("dtype", str, "float32", choices=("float32", "bfloat16", "float16"))
    with atomic_path(args.out, is_dir=True) as tmp:
        info = materialize(base, revision, tmp, dtype=dtype)
        (tmp / "r3_model.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("%s -> %s (%.1fM parameters)", base, args.out, info["n_params"] / 1e6)


if __name__ == "__main__":
    parser = cli.parser(__doc__)
    parser.add_argument("--out", required=True)
    cli.stage_main("model", main, parser)
