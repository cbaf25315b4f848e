"""Aggregation and colouring on hand-made records with known answers."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmark.aggregate import best_restarts, floors, low_power_note, records_frame, summarize
from benchmark.render import TableData, to_html, to_latex, to_markdown
from benchmark.specs import Row, TableSpec
from methods import registry


def rec(method, split, restart, test, val, dim=10, status="ok"):
    return {"status": status, "config_hash": "x",
            "key": {"profile": "smoke", "table": "table1", "dataset": "mnist", "dim": dim,
                    "method": method, "variant": "default", "split": split, "restart": restart},
            "metrics": {"test_iwae": test, "val_iwae": val, "mean_image_floor": -1400.0},
            "wall_seconds": 1.0}


# best: 'gpvae'; 'vae' is far below (significant); 'sa' is close (not significant)
VALUES = {"gpvae": [700.0, 702.0, 698.0, 701.0], "vae": [680.0, 681.0, 679.0, 680.5],
          "close": [699.0, 703.0, 696.0, 700.0]}


def make_records():
    out = []
    for method, vals in VALUES.items():
        for split, v in enumerate(vals):
            out.append(rec(method, split, 0, v, val=10.0))
            out.append(rec(method, split, 1, v + 50, val=5.0))  # worse validation: never chosen
    out.append(rec("vae", 9, 0, float("nan"), 0.0, status="failed"))
    return out


def welch_p(a, b):
    """Welch's t-test written out, independently of scipy.stats.ttest_ind."""
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * stats.t.sf(abs(t), dof)


def test_best_restart_is_chosen_by_validation():
    frame = best_restarts(records_frame(make_records()))
    assert len(frame) == 12 and (frame["restart"] == 0).all()


def test_best_p_values_and_ties():
    cells = summarize(records_frame(make_records()))[("mnist", 10)]
    best = cells[("gpvae", "default")]
    assert best.best and best.mean == pytest.approx(np.mean(VALUES["gpvae"]))
    assert best.std == pytest.approx(np.std(VALUES["gpvae"], ddof=1))
    vae, sa = cells[("vae", "default")], cells[("close", "default")]
    assert vae.p_value == pytest.approx(welch_p(VALUES["vae"], VALUES["gpvae"]))
    assert sa.p_value == pytest.approx(welch_p(VALUES["close"], VALUES["gpvae"]))
    assert vae.p_value <= 0.01 and not vae.tie
    assert sa.p_value > 0.01 and sa.tie


def test_paired_test_uses_shared_splits():
    cells = summarize(records_frame(make_records()), paired=True)[("mnist", 10)]
    expected = stats.ttest_rel(VALUES["close"], VALUES["gpvae"]).pvalue
    assert cells[("close", "default")].p_value == pytest.approx(expected)


def test_single_split_has_no_test():
    recs = [rec("vae", 0, 0, 1.0, 1.0), rec("gpvae", 0, 0, 2.0, 1.0)]
    cells = summarize(records_frame(recs))[("mnist", 10)]
    assert cells[("vae", "default")].p_value is None and "no test" in cells[("vae", "default")].note


def test_low_power_note_names_the_t_a_few_splits_need():
    # two-sided 0.01 critical values of Student's t from a printed table: df 1: 63.657,
    # df 2: 9.925, df 6: 3.707
    two = [rec(m, split, 0, v, 1.0) for m, vals in {"gpvae": [2.0, 3.0], "vae": [0.0, 1.5]}.items()
           for split, v in enumerate(vals)]
    assert "n = 2 needs |t| > 9.9 for" in low_power_note(summarize(records_frame(two)))
    paired = summarize(records_frame(two), paired=True)
    assert "|t| > 63.7 for" in low_power_note(paired, paired=True)
    four = summarize(records_frame(make_records()))  # n = 4 against n = 4: Welch df <= 6
    assert "n = 4 needs |t| > 3.7 for" in low_power_note(four)
    assert low_power_note(four, few_splits=4) == ""
    # the best has 2 splits, the other row 6: Welch df <= 6, and the small side is the best's
    small_best = [rec(m, split, 0, v, 1.0)
                  for m, vals in {"gpvae": [9.0, 10.0], "vae": [0.0, 1.0, 2.0, 0.5, 1.5, 1.0]}.items()
                  for split, v in enumerate(vals)]
    assert "n = 2 needs |t| > 3.7 for" in low_power_note(summarize(records_frame(small_best)))
    single = [rec("vae", 0, 0, 1.0, 1.0), rec("gpvae", 0, 0, 2.0, 1.0)]
    assert low_power_note(summarize(records_frame(single))) == ""  # no test at all


def render_all():
    spec = TableSpec("table1", "T", "test_iwae", ("mnist",), (10,),
                     (Row("vae"), Row("close"), Row("gpvae"), Row("notyet")))
    frame = records_frame(make_records())
    return TableData(spec, summarize(frame), floors(frame), failed={("mnist", 10, "vae",
                                                                      "default"): 1})


def test_markdown_latex_html_colours(monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "close", registry.MethodInfo("close", object, "CLOSE"))
    data = render_all()
    md = to_markdown(data).splitlines()
    line = {name: next(s for s in md if s.startswith(f"| {name} ")) for name in ("VAE", "GPVAE")}
    assert 'color:red' in line["GPVAE"] and "**700.2**" in line["GPVAE"]
    assert "color" not in line["VAE"] and "1 failed" in line["VAE"]
    assert 'color:blue' in next(s for s in md if s.startswith("| CLOSE "))
    assert any(s.startswith("| NOTYET ") and "no plugin" in s for s in md)
    tex = to_latex(data)
    assert r"\textbf{\textcolor{red}{700.2}}" in tex and r"\textcolor{blue}" in tex
    html = to_html(data)
    assert "color:red" in html and "color:blue" in html


def test_single_split_cells_show_no_spread():
    spec = TableSpec("table1", "T", "test_iwae", ("mnist",), (10,), (Row("vae"), Row("gpvae")))
    frame = records_frame([rec("vae", 0, 0, 455.14, 1.0), rec("gpvae", 0, 0, 460.0, 1.0)])
    data = TableData(spec, summarize(frame), floors(frame), failed={})
    md = next(s for s in to_markdown(data).splitlines() if s.startswith("| VAE "))
    assert "455.1 (n<2: no test)" in md
    assert "nan" not in to_latex(data) and "nan" not in to_html(data)
