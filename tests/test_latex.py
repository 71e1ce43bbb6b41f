"""Paper exports compile: every generated ``.tex`` ``\\input`` as it is into a plain
``article`` (booktabs + graphicx, the packages each file names in its first line) and every
PDF figure ``\\includegraphics``-ed, compiled by the real pdflatex.

Two reports: the finished tiny study (its runs table is wider than a text column, and its
caption names the ``L9(3^4)`` array) and a results CSV whose factor and level names are
LaTeX's special characters. Skipped, with the reason, only when pdflatex is not installed
(``.ci/run`` installs Debian's texlive-latex-base and texlive-latex-recommended).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import doe_sr

from doe_sr.report.writer import LATEX_PACKAGES, latex_escape, to_latex, write_table
from doe_sr.workflow.analyze import analyze_csv

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(PDFLATEX is None, reason="pdflatex is not installed (Debian: texlive-latex-base, "
                                                             "texlive-latex-recommended)")

#: Factor and level names with every LaTeX special character.
NASTY = {"learn_rate": ["a_b", "50%", "x^2"], "opt#": ["$5", "{}", "a&b"], "act": ["~t", "back\\slash", "<x>|y"]}
L9 = [(1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 2), (2, 2, 3), (2, 3, 1), (3, 1, 3), (3, 2, 1), (3, 3, 2)]
PSNR = [21.0, 22.5, 21.7, 23.1, 24.0, 22.2, 25.3, 24.8, 25.9]


def nasty_report(folder: Path, tmp: Path) -> Path:
    """Tables and figures of a results CSV with nasty names, the way the report writes them."""
    import csv

    path = tmp / "nasty.csv"
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["run", *NASTY, "psnr"])
        for i, row in enumerate(L9):
            out.writerow([i + 1, *(NASTY[f][c - 1] for f, c in zip(NASTY, row)), PSNR[i]])
    done = analyze_csv(path, list(NASTY), "psnr", "larger", pool="auto", plots=folder)
    for name, table in done.analysis.tables().items():
        write_table(table, folder, name, caption=f"{name}: levels a_b, 50%, x^2, $5, {{}} of L9(3^4) & more")
    write_table(done.results, folder, "runs", caption="Runs of the L9(3^4) array", index=False)
    return folder


def compile_all(tex: list[Path], pdfs: list[Path], tmp: Path) -> str:
    """Compile one article that inputs every table and includes every figure; returns the log."""
    lines = ["\\documentclass{article}", *(f"\\usepackage{{{p}}}" for p in LATEX_PACKAGES), "\\begin{document}"]
    for i, path in enumerate(tex):
        local = tmp / f"t{i}.tex"  # plain names: the test checks the tables, not TeX's file-name rules
        shutil.copy(path, local)
        lines += [f"\\input{{{local.stem}}}", "\\clearpage"]
    for i, path in enumerate(pdfs):
        local = tmp / f"f{i}.pdf"
        shutil.copy(path, local)
        lines += ["\\begin{figure}[t]\\centering", f"\\includegraphics[width=\\linewidth]{{{local.stem}}}",
                  f"\\caption{{{latex_escape(path.stem)}}}", "\\end{figure}", "\\clearpage"]
    lines.append("\\end{document}")
    (tmp / "paper.tex").write_text("\n".join(lines) + "\n")
    out = subprocess.run([PDFLATEX, "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp,
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    log = (tmp / "paper.log").read_text(errors="replace") if (tmp / "paper.log").is_file() else out.stdout
    assert out.returncode == 0, log[-4000:]
    assert (tmp / "paper.pdf").stat().st_size > 1000
    return log


def overfull(log: str) -> list[float]:
    return [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]


@needs_pdflatex
def test_every_generated_table_and_figure_compiles(finished_tiny: Path, tmp_path: Path):
    out = doe_sr("report", str(finished_tiny), "--out", str(tmp_path / "reports"), cwd=finished_tiny.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    tiny = tmp_path / "reports" / "tiny"
    nasty = nasty_report(tmp_path / "nasty", tmp_path)

    tex = sorted(tiny.glob("*.tex")) + sorted(nasty.glob("*.tex"))
    pdfs = sorted(tiny.glob("*.pdf")) + sorted(nasty.glob("*.pdf"))
    assert {p.stem for p in tiny.glob("*.tex")} >= {"runs", "anova", "sn_response", "mean_response", "optimum",
                                                    "best_vs_bicubic"}
    assert len(pdfs) >= 6
    for path in tex:
        first = path.read_text().splitlines()[0]
        assert first.startswith("%") and all(f"\\usepackage{{{p}}}" in first for p in LATEX_PACKAGES), path
    runs = (tiny / "runs.tex").read_text()
    assert "L9(3\\textasciicircum{}4)" in runs  # the caption that stopped pdflatex

    build = tmp_path / "build"
    build.mkdir()
    log = compile_all(tex, pdfs, build)
    assert max(overfull(log), default=0.0) <= 3.0, [line for line in log.splitlines() if "Overfull" in line]


@needs_pdflatex
def test_a_wide_table_shrinks_to_the_column(tmp_path: Path):
    """Measured by TeX: the wide table would overflow by hundreds of points without the shrink."""
    import pandas as pd

    wide = pd.DataFrame({f"metric number {i}": [1.23456] * 3 for i in range(14)})
    narrow = pd.DataFrame({"a": ["x"], "b": [1.0]})
    (tmp_path / "w.tex").write_text(to_latex(wide, caption="wide", label="tab:w", index=False))
    (tmp_path / "n.tex").write_text(to_latex(narrow, caption="narrow", label="tab:n", index=False))
    (tmp_path / "build").mkdir()
    log = compile_all([tmp_path / "w.tex", tmp_path / "n.tex"], [], tmp_path / "build")
    assert overfull(log) == []
    # Without the box-and-shrink lines the same tabular overflows: the test measures something.
    raw = "\n".join(line for line in to_latex(wide, caption="wide", label="tab:w", index=False).splitlines()
                    if not line.startswith("\\ifdim")).replace("\\setbox0=\\hbox{%", "").replace(
                        "\\end{tabular}}%", "\\end{tabular}")
    (tmp_path / "raw.tex").write_text(raw)
    build = tmp_path / "raw_build"
    build.mkdir()
    assert max(overfull(compile_all([tmp_path / "raw.tex"], [], build))) > 100
