"""A small report document rendered twice: Markdown (figures as PNG files beside it) and one
self-contained HTML file (figures embedded as base64 data URIs)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{background:#f7f7f7;padding:.6em;white-space:pre-wrap;border-left:3px solid #ccc}
figcaption{color:#555;font-size:.9em}.example{margin:1em 0 2em}"""


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def text(self, text: str) -> None:
        self.blocks.append(("text", text))

    def table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in row] for row in rows]))

    def figure(self, fig, name: str, caption: str) -> None:
        """Add a matplotlib figure (closed after rendering) as `<name>.png`."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        self.figures[f"{name}.png"] = buf.getvalue()
        self.blocks.append(("figure", f"{name}.png", caption))

    def example(self, title: str, parts: dict[str, str]) -> None:
        """A labelled sequence of verbatim texts (query, attempt, reflection, retry)."""
        self.blocks.append(("example", title, parts))

    def markdown(self, figure_dir: str = "figures") -> str:
        out = [f"# {self.title}", ""]
        for kind, *rest in self.blocks:
            if kind == "heading":
                out += ["#" * rest[0] + " " + rest[1], ""]
            elif kind == "text":
                out += [rest[0], ""]
            elif kind == "table":
                header, rows = rest
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows] + [""]
            elif kind == "figure":
                out += [f"![{rest[1]}]({figure_dir}/{rest[0]})", "", f"*{rest[1]}*", ""]
            elif kind == "example":
                out += [f"**{rest[0]}**", ""]
                for label, text in rest[1].items():
                    fence = "````" if "```" in text else "```"
                    out += [f"{label}:", "", fence, text, fence, ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(self.title)}</title>",
               f"<style>{_CSS}</style></head><body>", f"<h1>{e(self.title)}</h1>"]
        for kind, *rest in self.blocks:
            if kind == "heading":
                out.append(f"<h{rest[0]}>{e(rest[1])}</h{rest[0]}>")
            elif kind == "text":
                out.append(f"<p>{e(rest[0])}</p>")
            elif kind == "table":
                header, rows = rest
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
                out.append("</table>")
            elif kind == "figure":
                data = base64.b64encode(self.figures[rest[0]]).decode()
                out.append(f'<figure><img alt="{e(rest[1])}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{e(rest[1])}</figcaption></figure>")
            elif kind == "example":
                out.append(f'<div class="example"><h4>{e(rest[0])}</h4>')
                out += [f"<p><b>{e(label)}</b></p><pre>{e(text)}</pre>" for label, text in rest[1].items()]
                out.append("</div>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"

    def write(self, out_dir: Path, name: str = "report") -> None:
        """Write `<name>.md`, `<name>.html` and `figures/*.png` into `out_dir` (an empty folder)."""
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        for fname, png in self.figures.items():
            (out_dir / "figures" / fname).write_bytes(png)
        (out_dir / f"{name}.md").write_text(self.markdown())
        (out_dir / f"{name}.html").write_text(self.html())
