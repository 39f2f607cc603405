"""Write a `dvc plots` HTML template that carries Vega, Vega-Lite and vega-embed inline.

DVC's default page (dvc-render's PAGE_HTML) pulls the three libraries from cdn.jsdelivr.net, so
without network the page is blank. This template inlines the minified bundles of the npm packages
pinned in plots/package.json (installed by `make plots-template` into plots/node_modules) and has no
`{scripts}` placeholder, so dvc-render's CDN <script> tags are never inserted.

    python tools/offline_plots_template.py [--node-modules plots/node_modules] [-o plots/offline_template.html]
    dvc plots show --html-template plots/offline_template.html -o plots/out/show
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLOTS_DIR = ROOT / "plots"

# package -> bundle under node_modules/<package>/build/, in load order (vega-lite and vega-embed
# read the globals `vega` and `vegaLite` that the earlier bundles define)
BUNDLES = {
    "vega": "vega.min.js",
    "vega-lite": "vega-lite.min.js",
    "vega-embed": "vega-embed.min.js",
}
# dvc-render replaces these three; the template must keep {plot_divs} and must not have {scripts}
PLOTS_PLACEHOLDER = "{plot_divs}"
REFRESH_PLACEHOLDER = "{refresh_tag}"
SCRIPTS_PLACEHOLDER = "{scripts}"
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh}
    <title>DVC Plot</title>
    <!-- Offline template built by tools/offline_plots_template.py (make plots-template):
         {versions}, inlined from npm (BSD-3-Clause, see plots/node_modules/*/LICENSE). -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plots}
</body>
</html>
"""


def pinned_versions(package_json: Path) -> dict[str, str]:
    deps = json.loads(package_json.read_text(encoding="utf8"))["dependencies"]
    return {name: deps[name] for name in BUNDLES}


def read_bundle(node_modules: Path, package: str, pinned: str) -> str:
    pkg_dir = node_modules / package
    installed = json.loads((pkg_dir / "package.json").read_text(encoding="utf8"))["version"]
    if installed != pinned:
        raise SystemExit(
            f"{package} {installed} is installed but plots/package.json pins {pinned}: run `make plots-template`"
        )
    code = SOURCE_MAP.sub("", (pkg_dir / "build" / BUNDLES[package]).read_text(encoding="utf8")).strip()
    # an inline <script> ends at the first "</script"; "<!--" can also derail the HTML parser, and
    # dvc-render would substitute its placeholders inside the code
    for bad in ("</script", "<!--", PLOTS_PLACEHOLDER, REFRESH_PLACEHOLDER, SCRIPTS_PLACEHOLDER):
        if bad.lower() in code.lower():
            raise SystemExit(f"{package}/build/{BUNDLES[package]} contains {bad!r}; cannot inline it as is")
    return code


def build(node_modules: Path, package_json: Path) -> str:
    versions = pinned_versions(package_json)
    scripts = "\n".join(
        f'    <script type="text/javascript">/* {name}@{version} */\n{read_bundle(node_modules, name, version)}\n'
        "    </script>"
        for name, version in versions.items()
    )
    return PAGE.format(
        refresh=REFRESH_PLACEHOLDER,
        versions=", ".join(f"{name}@{version}" for name, version in versions.items()),
        scripts=scripts,
        plots=PLOTS_PLACEHOLDER,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node-modules", type=Path, default=PLOTS_DIR / "node_modules")
    ap.add_argument("--package-json", type=Path, default=PLOTS_DIR / "package.json")
    ap.add_argument("-o", "--out", type=Path, default=PLOTS_DIR / "offline_template.html")
    args = ap.parse_args(argv)
    missing = [p for p in BUNDLES if not (args.node_modules / p / "build" / BUNDLES[p]).is_file()]
    if missing:
        print(f"missing in {args.node_modules}: {', '.join(missing)}; run `make plots-template`", file=sys.stderr)
        return 1
    html = build(args.node_modules, args.package_json)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(html, encoding="utf8")
    tmp.replace(args.out)
    print(f"wrote {args.out} ({len(html) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
