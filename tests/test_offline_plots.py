"""The offline `dvc plots` template (tools/offline_plots_template.py, `make plots-template`).

It must carry Vega, Vega-Lite and vega-embed inline (pinned in plots/package.json, installed from npm
into plots/node_modules), keep DVC's `{plot_divs}` placeholder and load nothing over the network, and
`dvc plots show --html-template` must produce a page with no CDN <script src>. Skipped where
plots/node_modules is absent (no npm: `make test` builds it first wherever npm exists).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, load_script

NODE_MODULES = ROOT / "plots" / "node_modules"
PACKAGE_JSON = ROOT / "plots" / "package.json"
DVC = [sys.executable, "-m", "dvc"]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}  # the throwaway repos report nothing

SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=", re.IGNORECASE)
REMOTE_ATTR = re.compile(r"""\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


tool = load_script(ROOT / "tools" / "offline_plots_template.py")
missing = [p for p, f in tool.BUNDLES.items() if not (NODE_MODULES / p / "build" / f).is_file()]
pytestmark = pytest.mark.skipif(
    bool(missing),
    reason=f"plots/node_modules lacks {', '.join(missing)}: run `make plots-template` (needs npm)",
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The template as the current generator writes it from the installed (pin-checked) bundles."""
    out = tmp_path_factory.mktemp("tmpl") / "offline_template.html"
    assert tool.main(["--node-modules", str(NODE_MODULES), "--package-json", str(PACKAGE_JSON), "-o", str(out)]) == 0
    return out


def test_pins_match_dvc_render_majors():
    """Same major versions as the CDN scripts dvc-render's default page loads (the specs it emits)."""
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@(\d+)\.", VegaRenderer.SCRIPTS))
    assert set(cdn) == set(tool.BUNDLES)
    pins = tool.pinned_versions(PACKAGE_JSON)
    for name, major in cdn.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", pins[name]), f"{name} is not pinned exactly: {pins[name]}"
        assert pins[name].split(".")[0] == major, f"{name} {pins[name]} vs dvc-render's major {major}"


def test_template_inlines_the_three_libraries(template):
    html = template.read_text(encoding="utf8")
    assert not SCRIPT_SRC.search(html), "a <script src=...> in the offline template"
    assert not REMOTE_ATTR.search(html), "a remote src/href in the offline template"
    assert tool.PLOTS_PLACEHOLDER in html
    # with {scripts} dvc-render would insert its CDN <script src> tags
    assert tool.SCRIPTS_PLACEHOLDER not in html
    for name, version in tool.pinned_versions(PACKAGE_JSON).items():
        bundle = (NODE_MODULES / name / "build" / tool.BUNDLES[name]).read_text(encoding="utf8")
        code = tool.SOURCE_MAP.sub("", bundle).strip()
        assert code in html, f"{name} bundle not inlined verbatim"
        assert f"/* {name}@{version} */" in html
    # in load order: vega-lite reads the global `vega`, vega-embed both
    assert html.index("/* vega@") < html.index("/* vega-lite@") < html.index("/* vega-embed@")


def test_template_accepted_by_dvc_render(template):
    from dvc_render.html import HTML

    page = HTML(template.read_text(encoding="utf8")).with_element("<div id='x'></div>").embed()
    assert "<div id='x'></div>" in page and "{plot_divs}" not in page and "{refresh_tag}" not in page


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A throwaway git+DVC repo with one dvc.yaml plot over a small TSV."""
    repo = tmp_path_factory.mktemp("plots_repo")
    subprocess.run(["git", "init", "-q"], cwd=repo, env=ENV, check=True)
    subprocess.run([*DVC, "init", "-q"], cwd=repo, env=ENV, check=True)
    (repo / "curves").mkdir()
    rows = "\n".join(f"{step}\t{0.5 + step * 0.0123:.4f}" for step in range(20))
    (repo / "curves" / "reward.tsv").write_text(f"step\treward\n{rows}\n")
    (repo / "dvc.yaml").write_text("plots:\n  - curves:\n      x: step\n")
    return repo


def _show(repo: Path, out: str, *extra: str) -> str:
    (repo / out).parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([*DVC, "plots", "show", *extra, "-o", out], cwd=repo, env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return (repo / out / "index.html").read_text(encoding="utf8")


def test_dvc_plots_show_with_template_has_no_cdn(plots_repo, template):
    page = _show(plots_repo, "out/offline", "--html-template", str(template))
    assert not SCRIPT_SRC.search(page), "dvc plots show still emitted a <script src>"
    assert not re.search(r"<script[^>]*src=[\"']https?://", page, re.IGNORECASE)
    assert "vegaEmbed('#" in page and "0.7337" in page  # the plot div with its data (step 19)
    assert "/* vega-embed@" in page
    # the default page is what this replaces: CDN scripts (checks the test can tell them apart)
    default = _show(plots_repo, "out/cdn")
    assert re.search(r"<script src=\"https://cdn\.jsdelivr\.net/npm/vega@", default)


def test_dvc_config_html_template(plots_repo, template):
    """`plots.html_template` in .dvc/config (relative paths resolve from .dvc/) works as --html-template."""
    shutil.copy(template, plots_repo / "offline_template.html")
    config = [*DVC, "config", "--local", "plots.html_template"]
    subprocess.run([*config, "../offline_template.html"], cwd=plots_repo, env=ENV, check=True)
    try:
        page = _show(plots_repo, "out/config")
    finally:
        subprocess.run([*config[:-1], "--unset", "plots.html_template"], cwd=plots_repo, env=ENV, check=True)
    assert not SCRIPT_SRC.search(page) and "/* vega-embed@" in page


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_pinned_vega_renders_dvc_spec(plots_repo):
    """The pinned Vega-Lite compiles, and Vega renders, the spec DVC emits (headless, to SVG)."""
    res = subprocess.run(
        [*DVC, "plots", "show", "--show-vega", "curves/reward.tsv"],
        cwd=plots_repo,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    spec = json.loads(res.stdout)
    script = (
        "const vega = require('vega'), vl = require('vega-lite');"
        "let s = ''; process.stdin.on('data', d => s += d).on('end', async () => {"
        "  const view = new vega.View(vega.parse(vl.compile(JSON.parse(s)).spec), {renderer: 'none'});"
        "  process.stdout.write(await view.toSVG()); });"
    )
    node = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        timeout=60,
    )
    assert node.returncode == 0, node.stderr
    assert node.stdout.startswith("<svg") and "reward" in node.stdout and "<path" in node.stdout
