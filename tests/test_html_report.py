"""``reports/<study>/index.html``: one self-contained page with the summary, the tables and
every figure inline as SVG, written by the real ``doe-sr report``."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from conftest import doe_sr

from doe_sr.report.html import inline_svg, markdown_to_html
from doe_sr.report.writer import to_markdown


class Page(HTMLParser):
    """What the test reads of the page: elements by tag, every src/href, the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.links: list[str] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "data", "action")]
        if tag not in ("meta", "link", "br", "img", "input", "hr"):
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "data", "action")]

    def handle_endtag(self, tag):
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    return page


def test_report_writes_a_self_contained_page(finished_tiny: Path, tmp_path: Path):
    out = doe_sr("report", str(finished_tiny), "--out", str(tmp_path), cwd=finished_tiny.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    folder = tmp_path / "tiny"
    index = folder / "index.html"
    text = index.read_text(encoding="utf-8")
    page = parse(text)

    figures = sorted(folder.glob("*.svg"))
    # main effects, interactions, contributions, Pareto (no residual plot: an unreplicated L9 leaves no dof)
    assert sorted(f.stem for f in figures) == ["anova_contribution", "interactions", "main_effects", "pareto"]
    assert page.tags.get("svg") == len(figures)
    assert page.tags.get("figure") == len(figures)
    assert text.startswith("<!DOCTYPE html>") and "<?xml" not in text and "<!DOCTYPE svg" not in text
    # Nothing outside the page: only '#' references inside the SVGs (markers, clip paths).
    assert page.links and all(link.startswith("#") for link in page.links), \
        sorted({link for link in page.links if not link.startswith("#")})
    assert "http" not in text and "file:" not in text and "<script" not in text.lower()
    # ...and every '#' reference points at an id of the page.
    ids = set(__import__("re").findall(r'\bid="([^"]+)"', text))
    assert {link[1:] for link in page.links} <= ids

    visible = " ".join(page.text)
    assert "Study tiny" in visible and "Response table: S/N ratios (dB)" in visible and "ANOVA (S/N)" in visible
    assert page.tags.get("table", 0) >= 6  # best vs bicubic, S/N, means, ANOVA, optimum, runs
    # The tables' numbers as the CSVs hold them (3 decimals, the way summary.md writes them).
    sn = pd.read_csv(folder / "sn_response.csv", index_col=0)
    for value in sn.loc["Delta"]:
        assert f"{float(value):.3f}" in visible
    runs = pd.read_csv(folder / "runs.csv")
    for value in runs["val_psnr"]:
        assert f"{value:.3f}" in visible
    for level in ("adadelta", "adagrad", "0.0001"):
        assert level in visible


def test_markdown_and_svg_are_escaped_and_made_local():
    nasty = pd.DataFrame({"level": ["<b>x</b>", "a|b", "50% & $5"], "value": [1.0, 2.5, 3.0]})
    html = markdown_to_html("# Study `a<b`\n\nSome **bold** & text.\n\n- item <i>\n\n" + to_markdown(nasty,
                                                                                                   index=False))
    assert "<h1>Study <code>a&lt;b</code></h1>" in html
    assert "<strong>bold</strong> &amp; text" in html and "<li>item &lt;i&gt;</li>" in html
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in html and "<td>a|b</td>" in html and "50% &amp; $5" in html
    assert html.count("<tr>") == 4 and '<td class="num">2.500</td>' in html

    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://x/svg11.dtd">\n'
           '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10pt">'
           '<metadata><rdf:RDF about="http://purl.org/dc"/></metadata>'
           '<defs><path id="m1"/><clipPath id="p1"/></defs><g clip-path="url(#p1)"><use xlink:href="#m1"/></g></svg>')
    out = inline_svg(svg, "f3")
    assert out.startswith("<svg") and "http" not in out and "metadata" not in out
    assert 'id="f3-m1"' in out and 'url(#f3-p1)' in out and 'xlink:href="#f3-m1"' in out
