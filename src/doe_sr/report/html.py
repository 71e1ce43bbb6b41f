"""``reports/<study>/index.html``: the whole report as one self-contained page.

Why one file with everything inline: a researcher mails it, opens it from a USB stick or
attaches it to the study's MLflow parent run, and it must show the same summary, tables
and figures anywhere, without a server, a network or a script. So the figures are the
report's SVG files embedded as inline ``<svg>`` (vector, searchable text), the style is
an inline ``<style>``, and the page has no ``src``/``href`` to any file or URL (only
``#`` fragments inside the SVGs, which matplotlib uses for markers and clip paths).

The page is built from the report folder itself (``summary.md``, ``*.svg``, the tables'
``.md`` files), so whoever adds files to the folder later (``doe-sr compare``) rebuilds it
with :func:`write_index` and it shows those too. ``summary.md`` is rendered by a small
Markdown reader for exactly what doe-sr writes (headings, paragraphs, ``-`` lists, pipe
tables, inline code and bold): no dependency for a page of known shape.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["FIGURE_CAPTIONS", "SUMMARY_TABLES", "inline_svg", "markdown_to_html", "render_index", "write_index"]

#: Figures in the order a reader wants them, with their captions; other SVGs follow by name.
FIGURE_CAPTIONS = {
    "main_effects": "Main effects: means (top) and S/N ratios (bottom) at each level; dashed: grand mean",
    "interactions": "Interaction plot matrix (non-parallel lines hint at an interaction)",
    "pareto": "Pareto chart of the % contributions of the judged ANOVA, with the 5% significance line when "
              "an error estimate exists",
    "anova_contribution": "Contribution of each source to the S/N variation (ANOVA)",
    "residuals": "Residuals of the additive model: normal probability, versus fits, versus order, histogram",
    "comparison": "Best trained network against Real-ESRGAN/ESRGAN and bicubic on the test split",
    "comparison_crops": "The same crop of a test image from every model",
    "paired_differences": "Per-image PSNR-Y differences between models, with the mean and its bootstrap 95% "
                          "interval (hollow: too few images to test)",
}

#: Tables that summary.md already shows; the page lists the other tables of the folder after it.
SUMMARY_TABLES = frozenset({"best_vs_bicubic", "sn_response", "mean_response", "anova", "anova_raw", "optimum",
                            "runs", "flagged_runs", "sd_response", "ln_s_response", "sn_nominal_1_response",
                            "sn_nominal_2_response"})

#: Titles of tables shown below the summary.
TABLE_TITLES = {
    "anova_raw": "ANOVA of the raw values (every replicate)",
    "comparison_mean": "Comparison: mean PSNR-Y/SSIM-Y and time per image",
    "comparison_per_image": "Comparison: per image",
    "paired_tests": "Comparison: paired tests (t, Wilcoxon, bootstrap 95% interval)",
    "per_image_differences": "Comparison: per-image differences",
}

_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3 { line-height: 1.2; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f3f3f3; padding: 0 .2em; }
.table { overflow-x: auto; margin: .5rem 0 1.2rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
thead th { border-bottom: 2px solid #444; }
td.num { text-align: right; }
figure { margin: 1.5rem 0; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .92em; margin-top: .3rem; }
"""

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?$")


# -- Markdown (the subset summary.md uses) ----------------------------------------------
def _inline(text: str) -> str:
    """Inline Markdown: `code` spans verbatim, **bold**; everything else escaped."""
    out = []
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            escaped = html.escape(part.replace("\\|", "|"))
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table row; ``\\|`` is a literal bar inside a cell."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _table(lines: list[str]) -> str:
    header, rows = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    out = ['<div class="table"><table>', "<thead><tr>"]
    out += [f"<th>{_inline(c)}</th>" for c in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(f'<td class="num">{_inline(c)}</td>' if _NUMBER.match(c) else f"<td>{_inline(c)}</td>"
                        for c in row)
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def _is_separator(line: str) -> bool:
    return bool(re.fullmatch(r"\|?(\s*:?-{3,}:?\s*\|)*\s*:?-{3,}:?\s*\|?", line.strip()))


def markdown_to_html(text: str) -> str:
    """HTML of the Markdown doe-sr writes: ``#`` headings, paragraphs, ``-`` lists, pipe
    tables (header, ``---`` separator, rows), inline code and bold. All text is escaped."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not stripped:
            flush()
            i += 1
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and _is_separator(lines[i + 1]):
            flush()
            block = [line, lines[i + 1]]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
        elif re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]))
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                    items[-1] += " " + lines[i].strip()  # a wrapped item
                    i += 1
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in items) + "</ul>")
        else:
            para.append(stripped)
            i += 1
    flush()
    return "\n".join(out)


# -- figures ------------------------------------------------------------------------------
def inline_svg(text: str, prefix: str) -> str:
    """An SVG file's markup ready to sit inside HTML.

    The XML prolog, DOCTYPE and ``<metadata>`` (RDF with namespace URLs) are dropped, and so
    are the ``xmlns`` declarations: the HTML parser puts ``<svg>`` in the SVG namespace
    itself. Every ``id`` gets ``prefix``, and so do the ``#`` references to it, because
    matplotlib names markers and clip paths by a hash of their content, so two figures on
    one page could otherwise share an id and borrow each other's clip path.
    """
    start = text.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document: no <svg> element")
    svg = text[start:]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", svg)
    svg = re.sub(r'(href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', svg)
    return svg.strip()


def _order(stems: Iterable[str]) -> list[str]:
    known = list(FIGURE_CAPTIONS)
    return sorted(stems, key=lambda s: (known.index(s) if s in known else len(known), s))


def render_index(folder: Path, title: str | None = None) -> str:
    """The page for report ``folder``: summary.md, every ``*.svg`` inline, then the tables
    of the folder that summary.md does not show."""
    folder = Path(folder)
    summary = folder / "summary.md"
    body = [markdown_to_html(summary.read_text(encoding="utf-8"))] if summary.is_file() else []
    title = title or f"Study {folder.name}"
    if not body:
        body.append(f"<h1>{html.escape(title)}</h1>")
    svgs = {p.stem: p for p in folder.glob("*.svg")}
    if svgs:
        body.append('<section id="figures"><h2>Figures</h2>')
        for n, stem in enumerate(_order(svgs)):
            caption = FIGURE_CAPTIONS.get(stem, stem.replace("_", " "))
            svg = inline_svg(svgs[stem].read_text(encoding="utf-8"), f"f{n}")
            body.append(f'<figure id="{html.escape(stem)}">\n{svg}\n<figcaption>{html.escape(caption)} '
                        f"(<code>{html.escape(stem)}.pdf</code>, <code>.svg</code>, <code>.png</code>)"
                        "</figcaption></figure>")
        body.append("</section>")
    refined = sorted(folder.glob("refine*/refine_*.svg"))
    if refined:  # what doe-sr refine drew (its section of summary.md names them)
        body.append('<section id="refinement-figures"><h2>Refinement figures</h2>')
        for n, path in enumerate(refined):
            svg = inline_svg(path.read_text(encoding="utf-8"), f"r{n}")
            name = f"{path.parent.name}/{path.stem}"
            caption = html.escape(path.stem.replace("_", " "))
            body.append(f'<figure id="{html.escape(name)}">\n{svg}\n<figcaption>{caption} (<code>{html.escape(name)}'
                        '.pdf</code>, <code>.svg</code>, <code>.png</code>)</figcaption></figure>')
        body.append("</section>")
    others = sorted(p for p in folder.glob("*.md")
                    if p.stem not in SUMMARY_TABLES and p.name not in ("summary.md", "README.md")
                    and (p.with_suffix(".csv")).is_file())
    if others:
        body.append('<section id="tables"><h2>More tables</h2>')
        for path in others:
            body.append(f"<h3>{html.escape(TABLE_TITLES.get(path.stem, path.stem.replace('_', ' ')))}</h3>")
            body.append(markdown_to_html(path.read_text(encoding="utf-8")))
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def write_index(folder: Path, title: str | None = None) -> Path:
    """Write ``folder``/index.html (see :func:`render_index`) and return its path."""
    path = Path(folder) / "index.html"
    path.write_text(render_index(folder, title), encoding="utf-8")
    return path
