"""The LaTeX table: escaped text, booktabs layout in the paper's grouping, and (where pdflatex is
installed; required under $CI) a compile of Table 1's 22 rows x 6 columns that must fit the page,
of its comparison with the paper (tableN_vs_paper.tex) and of a timing table (table3.tex)."""

import os
import random
import re
import shutil
import subprocess

import pytest

from benchmark import timing
from benchmark.aggregate import floors, low_power_note, records_frame, summarize
from benchmark.analyses import compare
from benchmark.likelihood_text import likelihood_caption
from benchmark.paper_tables import load_paper_table
from benchmark.render import TableData, latex_escape, to_latex
from benchmark.specs import load_table_spec

CAPTION = ("Profile 'quick': 3 splits x 1 restarts (best validation IWAE kept), 5 epochs. "
           "Mean ± sample std over splits (nats).")
LEGEND = ("Red bold: best mean. Blue bold: Welch t-test against the best gives p > 0.01. "
          "Plain: p <= 0.01. 'below floor': fewer than 100 nats above the mean-image model.")


def table1(missing=None) -> TableData:
    """Table 1's rows and columns from made-up records: 3 splits, every colour, a failed run, a
    cell below the floor, OMNIGLOT's first rows not run (or the whole dataset `missing`)."""
    spec = load_table_spec("1")
    rnd, records = random.Random(0), []
    for ds in spec.datasets:
        for dim in spec.dims:
            for i, row in enumerate(spec.rows):
                if ds == "omniglot" and i < 3:
                    continue
                for split in range(3):
                    value = (-1350.0 if row.label == "HF(8)" else 600.0 + 10 * dim + i) + rnd.gauss(0, 8)
                    records.append({
                        "status": "ok", "wall_seconds": 1.0, "config_hash": "x",
                        "key": {"profile": "quick", "table": "table1", "dataset": ds, "dim": dim,
                                "method": row.method, "variant": row.variant, "split": split,
                                "restart": 0},
                        "metrics": {"test_iwae": value, "val_iwae": 1.0, "mean_image_floor": -1400.0}})
    frame = records_frame(records)
    cells = summarize(frame)
    return TableData(spec, cells, floors(frame), {"omniglot": missing} if missing else {},
                     {("mnist", 10, "vae", "default"): 2}, CAPTION,
                     LEGEND + " " + low_power_note(cells))


def test_latex_escape():
    assert latex_escape("A & B_1 50% $x {y} #2") == r"A \& B\_1 50\% \$x \{y\} \#2"
    assert latex_escape("p <= 0.01, p > 0.01, n<2, |t|") == (
        r"p \ensuremath{\leq} 0.01, p \textgreater{} 0.01, n\textless{}2, \textbar{}t\textbar{}")
    assert latex_escape("a ± b ~ c^2 \\") == (
        r"a \ensuremath{\pm} b \textasciitilde{} c\textasciicircum{}2 \textbackslash{}")
    assert latex_escape("profile 'quick', the paper's") == "profile `quick', the paper's"


def test_table_layout_is_the_papers():
    tex = to_latex(table1())
    lines = tex.splitlines()
    assert lines[2] == r"% \usepackage{booktabs,xcolor,graphicx}"  # what it needs, said first
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-4}\cmidrule(lr){5-7}"):
        assert rule in tex
    assert r"\multicolumn{3}{c}{MNIST} & \multicolumn{3}{c}{OMNIGLOT} \\" in tex
    assert tex.count(r"DIM($\mathbf{z}$) = 10") == 2
    caption = next(line for line in lines if line.startswith(r"\caption{"))
    assert caption.startswith(r"\caption{(MNIST \& OMNIGLOT) Test")  # no doubled "Table 1."
    assert r"Mean \ensuremath{\pm} sample std" in caption
    # mean with the std as a superscript, coloured bold for the best and the ties
    assert re.search(r"\\textbf\{\\textcolor\{red\}\{\d+\.\d\}\}\$\^\{\d+\.\d\}\$", tex)
    assert r"\textcolor{blue}" in tex
    vae = next(line for line in lines if line.startswith("VAE &"))
    assert vae.endswith(r"& -- & -- & -- \\")  # OMNIGLOT's VAE not run
    assert r"\,(\textit{a})" in vae  # its 2 failed runs: a note letter, explained in the legend
    assert "(a) 2 failed; (b) below floor." in tex
    assert r"\,(\textit{b})" in next(line for line in lines if line.startswith("HF(8) &"))
    body = tex[tex.index(r"\begin{tabular}"):]
    assert "<" not in body and ">" not in body.replace(r"\ifdim\width>", "")
    missing = to_latex(table1("data missing"))
    assert r"--\,(\textit{" in missing and "not run (data missing)" in missing


def _pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set, so the LaTeX compile test may not be skipped: pdflatex is not "
                        "on PATH (.ci/run installs texlive-latex-base and -recommended)",
                        pytrace=False)
        pytest.skip("pdflatex is not installed")
    return exe


def _compile(tmp_path, tex: str) -> str:
    r"""pdflatex of `tex` \input into a minimal article with the packages its first lines name;
    fails on an error, a table past the margin or a missing glyph. The PDF's text, or ''."""
    exe = _pdflatex()
    (tmp_path / "table.tex").write_text(tex)
    preamble = tex.splitlines()[2].removeprefix("% ")  # the packages the file says it needs
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n" + preamble + "\n"
                                      "\\begin{document}\n\\input{table.tex}\n\\end{document}\n")
    out = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert out.returncode == 0, out.stdout[-3000:]
    assert "Overfull \\hbox" not in log, "the table runs past the margin"
    assert "Missing character" not in log
    if not shutil.which("pdftotext"):
        return ""
    return subprocess.run(["pdftotext", "doc.pdf", "-"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.mark.parametrize("missing", [None, "data missing"])
def test_table_compiles_and_fits_the_page(tmp_path, missing):
    text = _compile(tmp_path, to_latex(table1(missing)))
    if text:  # what a reader sees: the comparison signs, not other glyphs
        assert "p > 0.01" in text and "MNIST & OMNIGLOT" in text
        assert "¡" not in text and "¿" not in text


def test_caption_states_the_likelihood_escaped():
    """build_table's caption ends with likelihood_caption; in LaTeX its sigma_x and <= are text."""
    data = table1()
    data.caption = " ".join([CAPTION, likelihood_caption(data.spec.datasets),
                             likelihood_caption(["binarized_mnist"])])
    caption = next(line for line in to_latex(data).splitlines() if line.startswith(r"\caption{"))
    assert (r"Likelihood: MNIST and OMNIGLOT: Gaussian, sigma\_x learned (one global value, from "
            r"0.1; no fixed ceiling).") in caption
    assert r"Bernoulli (log p(x) \ensuremath{\leq} 0)." in caption


def test_comparison_with_the_paper_compiles(tmp_path):
    """tableN_vs_paper.tex goes through the same LaTeX path: booktabs, escaped, fits the page;
    what transfers (rankings, differences from the VAE) comes first, the cells last."""
    tex = compare.to_latex(table1(), load_paper_table("table1"))
    assert r"\toprule" in tex and r"\multicolumn{3}{c}{MNIST}" in tex and "Kendall tau" in tex
    assert tex.splitlines()[2] == r"% \usepackage{booktabs,xcolor,graphicx}"
    assert tex.count(r"\begin{tabular}") == 3
    assert tex.index("Kendall tau") < tex.index(r"$-$ VAE") < tex.index("our ceiling (nats)")
    assert r"Our likelihood: MNIST and OMNIGLOT: Gaussian, sigma\_x learned" in tex
    text = _compile(tmp_path, tex)
    if text:
        assert "¡" not in text and "¿" not in text and "Kendall tau" in text


def test_timing_table_compiles(tmp_path):
    """table3.tex (benchmark.timing) too: every column, and a dataset whose data is missing."""
    spec = load_table_spec("3")
    rows = [r for r in spec.rows if r.has_plugin]
    columns = [(ds, dim) for ds in spec.datasets for dim in spec.dims]
    times = {(ds, dim): {r.label: 1.0 + i for i, r in enumerate(rows)} for ds, dim in columns
             if ds != "celeba"}
    caption = "Profile 'quick': per-batch time in ms; ratios to VAE (x 1.00), p < 1 & 50% _ok_."
    tex = timing.render(spec, rows, columns, times, {"celeba": "not found under <root>"}, caption)["tex"]
    assert r"\toprule" in tex and r"\cmidrule(lr){2-3}" in tex and "data missing" in tex
    text = _compile(tmp_path, tex)
    if text:
        assert "<root>" in text and "¡" not in text and "¿" not in text
