"""Verdicts on the paper's claims (benchmark/analyses/claims.py) on hand-made records, and --claims."""

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmark.aggregate import ALPHA, best_restarts, records_frame
from benchmark.analyses import claims
from benchmark.cli import main
from benchmark.plan import make_plan
from benchmark.profiles import load_profile
from benchmark.specs import load_table_spec
from benchmark.store import write_json_atomic
from benchmark.yamlio import ConfigError

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "paper" / "gpvae-paper.md"
TABLE1 = load_table_spec("1")
TABLE3 = load_table_spec("3")
TOL = 3.0


def record(row_id: str, value: float, split: int, dataset="mnist", dim=10, restart=0) -> dict:
    method, _, variant = row_id.partition("-")
    return {"status": "ok", "config_hash": "x",
            "key": {"profile": "smoke", "table": "table1", "dataset": dataset, "dim": dim,
                    "method": method, "variant": variant, "split": split, "restart": restart},
            "metrics": {"test_iwae": value, "val_iwae": value, "mean_image_floor": -2000.0}}


def records_for(values: dict, dataset="mnist", dim=10) -> list[dict]:
    """{row id: [value per split]} -> records."""
    return [record(row, v, s, dataset, dim) for row, vs in values.items() for s, v in enumerate(vs)]


def claim(kind, a=(), b=(), **kw) -> claims.Claim:
    return claims.Claim(f"test-{kind}", "a test claim", "q", "w", kind, tuple(a), tuple(b), **kw)


def judge(kind, a, b, recs, tolerance=TOL):
    best = best_restarts(records_frame(recs))
    return claims.evaluate_loglik(claim(kind, a, b), TABLE1, best, tolerance)


rng = np.random.default_rng(0)
VAE5 = 700 + rng.normal(0, 5, 5)  # split-to-split spread, shared by the rows (paired)
NOISE5 = rng.normal(0, 1, 5)


def test_gpvae_beats_vae_by_10_nats_is_reproduced_with_scipys_p():
    gpvae = VAE5 + 10 + NOISE5
    res = judge("better_than", ["gpvae-default"], ["vae-default"],
                records_for({"vae-default": VAE5, "gpvae-default": gpvae}))
    assert res.verdict == "reproduced"
    assert res.n == 5 and res.effect == pytest.approx(np.mean(gpvae - VAE5))
    assert res.p == pytest.approx(stats.ttest_rel(gpvae, VAE5).pvalue)
    assert res.p < ALPHA and "paired t over shared splits" in res.test and "1 of 6 columns" in res.test


def test_reversed_is_contradicted():
    gpvae = VAE5 - 10 + NOISE5
    res = judge("better_than", ["gpvae-default"], ["vae-default"],
                records_for({"vae-default": VAE5, "gpvae-default": gpvae}))
    assert res.verdict == "contradicted"
    assert res.effect == pytest.approx(np.mean(gpvae - VAE5)) and res.effect < 0
    assert res.p == pytest.approx(stats.ttest_rel(gpvae, VAE5).pvalue)


def test_noisy_small_n_is_underpowered_with_the_min_detectable_effect():
    vae = np.array([700.0, 720.0, 690.0])
    gpvae = vae + np.array([2.0, 15.0, -8.0])
    res = judge("better_than", ["gpvae-default"], ["vae-default"],
                records_for({"vae-default": vae, "gpvae-default": gpvae}))
    d = gpvae - vae
    mde = (stats.t.ppf(1 - ALPHA / 2, 2) + stats.t.ppf(0.8, 2)) * d.std(ddof=1) / math.sqrt(3)
    assert res.verdict == "underpowered" and res.mde == pytest.approx(mde)
    assert res.p == pytest.approx(stats.ttest_rel(gpvae, vae).pvalue) and res.p > ALPHA
    assert f"could detect >= {mde:.1f} nats" in res.verdict_text


def test_one_split_is_no_test():
    res = judge("better_than", ["gpvae-default"], ["vae-default"],
                records_for({"vae-default": [700.0], "gpvae-default": [710.0]}))
    assert res.verdict == "underpowered" and res.p is None and res.mde is None
    assert "no test: n < 2" in res.verdict_text


def test_a_tie_at_full_power_is_a_tie_but_not_at_low_power():
    gpvae = VAE5 + 0.2 * NOISE5  # within 3 nats, tight
    recs = records_for({"vae-default": VAE5, "gpvae-default": gpvae})
    (comp,) = judge("better_than", ["gpvae-default"], ["vae-default"], recs).comparisons
    assert comp.status == "tie" and comp.mde <= TOL
    # a tie established at power contradicts "better in every column"
    assert judge("better_than", ["gpvae-default"], ["vae-default"], recs).verdict == "contradicted"
    # ... and is what "no better on average" asks for
    assert judge("no_better_on_average", ["gpvae"], ["vae-default"], recs).verdict == "reproduced"
    # the same data without a tolerance: nothing is a tie, so no verdict
    assert judge("better_than", ["gpvae-default"], ["vae-default"], recs,
                 tolerance=None).verdict == "underpowered"


def test_mixed_sign():
    sa = {"sa-k1": VAE5 + 5 + NOISE5, "sa-k2": VAE5 - 5 + NOISE5, "sa-k4": VAE5 + 4 + NOISE5,
          "sa-k8": VAE5 + 6 + NOISE5}
    res = judge("mixed_sign", ["sa"], ["vae-default"], records_for({"vae-default": VAE5, **sa}))
    assert res.verdict == "reproduced" and len(res.comparisons) == 4
    assert [c.status for c in res.comparisons] == ["above", "below", "above", "above"]
    assert "-" in res.effect_text and " to +" in res.effect_text
    sa["sa-k2"] = VAE5 + 5 + NOISE5[::-1]  # a consistent gain
    res = judge("mixed_sign", ["sa"], ["vae-default"], records_for({"vae-default": VAE5, **sa}))
    assert res.verdict == "contradicted"
    sa["sa-k2"] = VAE5 + 5 + 20 * NOISE5  # one unclear, no established non-gain
    res = judge("mixed_sign", ["sa"], ["vae-default"], records_for({"vae-default": VAE5, **sa}))
    assert res.verdict == "underpowered"


def test_no_better_on_average_pools_column_split_pairs():
    recs = []
    for dim in (10, 20):
        vae = VAE5 + dim
        recs += records_for({"vae-default": vae, "iaf-k1": vae + 8 + NOISE5,
                             "iaf-k2": vae + 6 + NOISE5[::-1]}, dim=dim)
    res = judge("no_better_on_average", ["iaf"], ["vae-default"], recs)
    assert res.verdict == "contradicted" and res.n == 10 and "10 (column, split) pairs" in res.test
    diffs = np.concatenate([(8 + NOISE5 + 6 + NOISE5[::-1]) / 2] * 2)
    assert res.effect == pytest.approx(diffs.mean())
    assert res.p == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)


def test_rme_tied_in_some_behind_in_others():
    recs = records_for({"gpvae-default": VAE5, "rme-m2": VAE5 - 0.1 * NOISE5}, dim=10)
    recs += records_for({"gpvae-default": VAE5, "rme-m2": VAE5 - 6 + NOISE5}, dim=20)
    res = judge("tied_in_some_behind_in_others", ["rme"], ["gpvae-default"], recs)
    assert [c.status for c in res.comparisons] == ["tie", "below"]
    assert res.verdict == "reproduced" and "not" not in res.detail.split(".")[1]
    recs = records_for({"gpvae-default": VAE5, "rme-m2": VAE5 + 6 + NOISE5})
    assert judge("tied_in_some_behind_in_others", ["rme"], ["gpvae-default"],
                 recs).verdict == "contradicted"


def test_best_or_tied():
    col10 = {"gpvae-default": VAE5 + 3, "rme-m2": VAE5 + 2 + 0.1 * NOISE5, "vae-default": VAE5}
    col20 = {"gpvae-default": VAE5, "rme-m2": VAE5 + 8 + NOISE5, "vae-default": VAE5}
    recs = records_for(col10, dim=10) + records_for(col20, dim=20)
    res = judge("best_or_tied", ["gpvae-default"], [], recs)
    assert [c.status for c in res.comparisons] == ["best", "below"]
    assert res.verdict == "contradicted" and res.comparisons[1].label == "MNIST d20 vs RME(2)"
    col20["rme-m2"] = VAE5 + 0.5 + NOISE5  # RME ahead by half a nat +- 1: a tie at this power
    res = judge("best_or_tied", ["gpvae-default"], [],
                records_for(col10, dim=10) + records_for(col20, dim=20))
    assert [c.status for c in res.comparisons] == ["best", "tie"] and res.verdict == "reproduced"


def test_a_lead_the_test_cannot_tell_from_noise_is_not_best():
    """The 2026-12-05 sweep: GPVAE ahead of the VAE by +1.1 nats (sd 6.4, n = 6, p = 0.70) was
    'best', so 'reproduced' in green; a non-significant lead is a tie only with power, else unclear,
    exactly as a non-significant deficit is."""
    lead = np.array([4.6, 1.9, 11.1, -0.4, -6.5, -4.3])
    vae = 610 + rng.normal(0, 8, 6)
    res = judge("best_or_tied", ["gpvae-default"], [],
                records_for({"vae-default": vae, "gpvae-default": vae + lead}))
    assert [c.status for c in res.comparisons] == ["unclear"]
    assert res.verdict == "underpowered" and not res.decided
    assert res.comparisons[0].p == pytest.approx(stats.ttest_rel(vae + lead, vae).pvalue)
    # the same lead with a small spread is best, and the claim reproduced
    res = judge("best_or_tied", ["gpvae-default"], [],
                records_for({"vae-default": vae, "gpvae-default": vae + 5 + 0.1 * lead}))
    assert [c.status for c in res.comparisons] == ["best"] and res.verdict == "reproduced"


def test_one_split_is_never_a_verdict_best_or_tied_included():
    """The README's first command trains VAE and GPVAE on one split: GPVAE has the higher mean,
    but n = 1 is no test, so 'best or tied' is not reproduced (it was, in green, before)."""
    recs = records_for({"vae-default": [700.0], "gpvae-default": [710.0]})
    res = judge("best_or_tied", ["gpvae-default"], [], recs)
    assert [c.status for c in res.comparisons] == ["unclear"]
    assert res.verdict == "underpowered" and res.verdict_text == "underpowered (no test: n < 2)"
    assert not res.decided
    res = judge("better_than", ["gpvae-default"], ["vae-default"], recs)
    assert res.verdict == "underpowered" and res.comparisons[0].p is None


def test_a_verdict_says_what_part_of_the_claim_it_covers():
    """Judged on what ran: 1 of Table 1's 6 columns, among 2 of its 22 rows."""
    recs = records_for({"vae-default": VAE5, "gpvae-default": VAE5 + 10 + NOISE5})
    res = judge("best_or_tied", ["gpvae-default"], [], recs)
    assert res.verdict == "reproduced" and not res.complete
    assert res.verdict_text == "reproduced on 1 of 6 columns (MNIST d10), among 2 of 22 rows"
    res = judge("better_than", ["gpvae-default"], ["vae-default"], recs)
    assert res.verdict_text == "reproduced on 1 of 6 columns (MNIST d10)" and not res.complete
    # a family claim with one of its rows run says so
    recs = records_for({"vae-default": VAE5, "sa-k1": VAE5 - 8 + NOISE5, "sa-k2": VAE5 + 8 + NOISE5})
    res = judge("mixed_sign", ["sa"], ["vae-default"], recs)
    assert res.verdict_text == "reproduced on 1 of 6 columns (MNIST d10), 3 of the claim's 5 rows"
    # every column and row of the claim: complete
    recs = [r for dim in TABLE1.dims for ds in TABLE1.datasets for r in records_for(
        {"vae-default": VAE5, "gpvae-default": VAE5 + 10 + NOISE5}, dataset=ds, dim=dim)]
    res = judge("better_than", ["gpvae-default"], ["vae-default"], recs)
    assert res.complete and res.verdict_text.startswith("reproduced on 6 of 6 columns")


def test_headline_counts_decided_claims_with_their_coverage():
    recs = records_for({"vae-default": VAE5, "gpvae-default": VAE5 + 10 + NOISE5})
    claim_set = claims.load_claims("table1")
    results = claims.evaluate(claim_set, TABLE1, records=recs, results_dir="/nonexistent")
    report = claims.Report("table1", TABLE1.title, "", [claims.Section("table1", "T", claim_set,
                                                                       results)])
    head = claims._counts(report)
    assert head.startswith("7 claims: 2 decided on the columns run (MNIST d10), 0 on all the "
                           "claim's columns and rows; 2 reproduced, 5 not run"), head


def test_missing_rows_are_not_run():
    recs = records_for({"vae-default": VAE5})
    res = judge("better_than", ["gpvae-default"], ["vae-default"], recs)
    assert res.verdict == "not run" and "no records for GPVAE" in res.detail
    res = judge("better_than", ["gpvae-default"], ["vae-default"], [])
    assert res.verdict == "not run"
    # GPVAE and VAE in different columns: nothing to pair
    recs += records_for({"gpvae-default": VAE5}, dim=20)
    assert judge("better_than", ["gpvae-default"], ["vae-default"], recs).verdict == "not run"


def test_best_restart_per_split_is_what_is_compared():
    recs = records_for({"vae-default": VAE5, "gpvae-default": VAE5 + 10 + NOISE5})
    # a second restart of VAE with a better validation score and a much better test score
    recs += [dict(record("vae-default", v + 50, s, restart=1),
                  metrics={"test_iwae": v + 50, "val_iwae": v + 100, "mean_image_floor": 0})
             for s, v in enumerate(VAE5)]
    res = judge("better_than", ["gpvae-default"], ["vae-default"], recs)
    assert res.verdict == "contradicted" and res.effect == pytest.approx(np.mean(NOISE5) - 40)


# ---------------------------------------------------------------- Table 3, Figure 1

PAPER_MS = {"VAE": [3.6, 4.8, 3.7, 2.2, 2.7], "SA(2)": [18.1, 19.2, 16.8, 15.5, 13.8],
            "SA(4)": [32.2, 34.4, 27.9, 30.1, 27.1], "SA(8)": [60.8, 65.7, 60.5, 60.3, 53.8],
            "IAF(1)": [4.8, 5.7, 5.1, 3.4, 4.4], "IAF(2)": [5.9, 6.4, 5.6, 3.7, 5.1],
            "IAF(4)": [6.2, 7.0, 6.3, 4.7, 5.7], "IAF(8)": [7.7, 8.2, 7.6, 5.7, 7.7],
            "GPVAE": [9.9, 10.2, 9.3, 8.0, 9.2]}


def paper_timings(columns=TABLE3.datasets) -> dict:
    return {(ds, 50): {label: ms[i] for label, ms in PAPER_MS.items()}
            for i, ds in enumerate(TABLE3.datasets) if ds in columns}


def test_timing_claims_on_the_papers_times():
    faster = claim("faster_than", ["gpvae-default"], ["sa-k2", "sa-k4", "sa-k8"])
    res = claims.evaluate_timing(faster, TABLE3, paper_timings(), 1.1)
    assert res.verdict == "reproduced" and len(res.comparisons) == 3 and res.n == 5
    logs = {k: np.log(v) for k, v in PAPER_MS.items()}
    p_sa2 = stats.ttest_rel(logs["GPVAE"], logs["SA(2)"]).pvalue
    assert res.p == pytest.approx(p_sa2)  # the weakest of the three: SA(2)
    assert res.effect == pytest.approx(np.exp(np.mean(logs["GPVAE"] - logs["SA(2)"])))
    assert "paired t on log(ms) over the columns" in res.test and res.effect_text.startswith("x0.")
    slower = claim("not_faster_than", ["gpvae-default"], ["iaf"])
    assert claims.evaluate_timing(slower, TABLE3, paper_timings(), 1.1).verdict == "reproduced"
    # the other way round: GPVAE faster than every IAF
    assert claims.evaluate_timing(claim("faster_than", ["gpvae-default"], ["iaf"]), TABLE3,
                                  paper_timings(), 1.1).verdict == "contradicted"


def test_one_timed_column_is_no_test_and_no_timings_is_not_run():
    faster = claim("faster_than", ["gpvae-default"], ["sa-k2"])
    res = claims.evaluate_timing(faster, TABLE3, paper_timings({"mnist"}), 1.1)
    assert res.verdict == "underpowered" and res.p is None and res.n == 1
    assert res.effect == pytest.approx(9.9 / 18.1) and "no test" in res.verdict_text
    assert claims.evaluate_timing(faster, TABLE3, None, 1.1).verdict == "not run"


JITTER = np.exp(np.random.default_rng(3).normal(0, 0.01, (len(PAPER_MS), 5)))  # ~1% per pass


def per_pass_timings(ms=None, jitter=JITTER) -> dict:
    """MNIST only, 5 timed passes per row: the paper's MNIST time times ~1% pass-to-pass noise."""
    ms = ms or {label: v[0] for label, v in PAPER_MS.items()}
    return {("mnist", 50): {label: list(m * jitter[i]) for i, (label, m) in enumerate(ms.items())}}


def welch_by_hand(a, b, tol=1.1):
    """Welch's p and minimum detectable effect (log scale) for per-pass times a, b."""
    x, y = np.log(a), np.log(b)
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    mde = (stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(0.8, df)) * math.sqrt(vx + vy)
    return stats.ttest_ind(x, y, equal_var=False).pvalue, mde


def test_per_pass_timings_give_a_welch_test_per_column_on_one_dataset(tmp_path):
    passes = per_pass_timings()
    path = claims.timings_path(tmp_path, "smoke", "table3")
    write_json_atomic(path, {  # the format benchmark.timing writes
        "ms_per_batch": {"mnist/d50": {k: float(np.mean(v)) for k, v in passes["mnist", 50].items()}},
        "ms_per_pass": {"mnist/d50": passes["mnist", 50]}})
    timings = claims.read_timings(path)
    assert timings == passes
    cell = timings["mnist", 50]
    faster = claim("faster_than", ["gpvae-default"], ["sa-k2", "sa-k4", "sa-k8"])
    res = claims.evaluate_timing(faster, TABLE3, timings, 1.1)
    assert res.verdict == "reproduced" and res.n == 5 and len(res.comparisons) == 3
    assert [c.status for c in res.comparisons] == ["below"] * 3
    assert [c.label for c in res.comparisons] == ["MNIST d50 vs SA(2)", "MNIST d50 vs SA(4)",
                                                   "MNIST d50 vs SA(8)"]
    ps = {b: welch_by_hand(cell["GPVAE"], cell[b])[0] for b in ("SA(2)", "SA(4)", "SA(8)")}
    weakest = max(ps, key=ps.get)  # the deciding comparison (an intersection-union test)
    assert res.p == pytest.approx(ps[weakest]) and res.p < ALPHA
    assert res.effect == pytest.approx(np.mean(cell["GPVAE"]) / np.mean(cell[weakest]))
    assert "Welch t (scipy ttest_ind, equal_var=False) on log(ms)" in res.test
    assert "n = passes per row (5)" in res.test and "1 of 5 columns timed" in res.test
    slower = claim("not_faster_than", ["gpvae-default"], ["iaf"])
    res = claims.evaluate_timing(slower, TABLE3, timings, 1.1)
    assert res.verdict == "reproduced" and [c.status for c in res.comparisons] == ["above"] * 4


def test_per_pass_timings_on_par_are_a_tie_at_power_and_underpowered_when_noisy():
    ms = {label: v[0] for label, v in PAPER_MS.items()}
    timings = per_pass_timings(ms)
    gpvae = timings["mnist", 50]["GPVAE"]
    timings["mnist", 50]["IAF(8)"] = [1.005 * t for t in gpvae[::-1]]  # on par within the noise
    slower = claim("not_faster_than", ["gpvae-default"], ["iaf-k8"])
    res = claims.evaluate_timing(slower, TABLE3, timings, 1.1)
    (comp,) = res.comparisons
    p, mde = welch_by_hand(gpvae, timings["mnist", 50]["IAF(8)"])
    assert comp.status == "tie" and comp.p == pytest.approx(p) and p > ALPHA
    assert comp.mde == pytest.approx(mde) and mde <= math.log(1.1)
    assert res.verdict == "reproduced" and res.effect == pytest.approx(1 / 1.005)
    # "faster than" is contradicted by a tie shown at power
    faster = claim("faster_than", ["gpvae-default"], ["iaf-k8"])
    assert claims.evaluate_timing(faster, TABLE3, timings, 1.1).verdict == "contradicted"
    # 20% pass-to-pass noise: no significant gap, but too little power to call it a tie
    noisy = per_pass_timings(ms, jitter=JITTER ** 20)
    noisy["mnist", 50]["IAF(8)"] = [1.005 * t for t in noisy["mnist", 50]["GPVAE"][::-1]]
    res = claims.evaluate_timing(slower, TABLE3, noisy, 1.1)
    p, mde = welch_by_hand(noisy["mnist", 50]["GPVAE"], noisy["mnist", 50]["IAF(8)"])
    assert res.verdict == "underpowered" and res.p == pytest.approx(p) and p > ALPHA
    assert res.mde == pytest.approx(mde) and mde > math.log(1.1)
    assert f"could detect a ratio of x{math.exp(-mde):.2f} or x{math.exp(mde):.2f}" in res.verdict_text


def test_old_timings_files_fall_back_to_pairing_the_columns(tmp_path):
    path = claims.timings_path(tmp_path, "smoke", "table3")
    write_json_atomic(path, {"ms_per_batch": {f"{ds}/d50": cells
                                              for (ds, _), cells in paper_timings().items()}})
    timings = claims.read_timings(path)
    assert timings == paper_timings()
    faster = claim("faster_than", ["gpvae-default"], ["sa-k2", "sa-k4", "sa-k8"])
    res = claims.evaluate_timing(faster, TABLE3, timings, 1.1)
    assert res.verdict == "reproduced" and res.n == 5
    assert "paired t on log(ms) over the columns (timings.json holds no per-pass times" in res.test
    assert "n = columns (5)" in res.test
    logs = {k: np.log(v) for k, v in PAPER_MS.items()}
    assert res.p == pytest.approx(stats.ttest_rel(logs["GPVAE"], logs["SA(2)"]).pvalue)
    # a single timed pass per cell is no sample: the same fallback, said so
    one = {col: {k: [v] for k, v in cells.items()} for col, cells in paper_timings().items()}
    res = claims.evaluate_timing(faster, TABLE3, one, 1.1)
    assert res.verdict == "reproduced" and "fewer than 2 timed passes" in res.test
    assert res.p == pytest.approx(stats.ttest_rel(logs["GPVAE"], logs["SA(2)"]).pvalue)


def test_time_inference_returns_one_time_per_pass_after_warm_up():
    from benchmark import timing

    class Model:
        calls = 0

        def eval(self):
            pass

        def prepare_inference(self):
            pass

        def infer(self, x):
            Model.calls += 1

    batches = [np.zeros(1)] * 3
    ms = timing.time_inference(Model(), batches, repeats=4)
    assert len(ms) == 4 and all(t > 0 for t in ms)
    assert Model.calls == 4 * (timing.WARMUP_PASSES + 1) * len(batches)


def test_spearman_claim():
    c = claim("correlation_positive", source="figures/figure1_spearman.json")
    res = claims.evaluate_correlation(c, {"spearman_rho": 0.42, "p_value": 1e-6, "n": 200})
    assert (res.verdict, res.effect, res.p, res.n) == ("reproduced", 0.42, 1e-6, 200)
    res = claims.evaluate_correlation(c, {"spearman_rho": -0.42, "p_value": 1e-6, "n": 200})
    assert res.verdict == "contradicted"
    res = claims.evaluate_correlation(c, {"spearman_rho": 0.2, "p_value": 0.4, "n": 20})
    z = (stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(0.8)) * math.sqrt(1.06 / 17)
    assert res.verdict == "underpowered" and res.mde == pytest.approx(math.tanh(z))
    # the verdict is a Markdown table cell: no "|" in it (it once read "|rho| >= 0.21")
    assert f"could detect rho beyond ±{res.mde:.2f}" in res.verdict_text
    assert "|" not in res.verdict_text
    assert claims.evaluate_correlation(c, None).verdict == "not run"


# ---------------------------------------------------------------- the claims file


def test_claims_file_rows_resolve_against_the_specs():
    for name, spec in (("table1", TABLE1), ("table3", TABLE3)):
        claim_set = claims.load_claims(name)
        assert claim_set.claims and claim_set.tie_tolerance
        for c in claim_set.claims:
            assert claims.resolve_rows(c.a, spec.rows, c.id)
            assert not c.b or claims.resolve_rows(c.b, spec.rows, c.id)
    kinds = {c.kind for n in claims.claim_names() for c in claims.load_claims(n).claims}
    assert kinds == set(claims.KINDS)


def test_quotes_are_the_papers_words():
    if not PAPER_MD.exists():
        pytest.skip(f"paper text not found at {PAPER_MD}")
    text = re.sub(r"\s+", " ", PAPER_MD.read_text())
    for name in claims.claim_names():
        for c in claims.load_claims(name).claims:
            pos = 0
            for fragment in c.quote.split(" ... "):
                pos = text.find(fragment, pos)
                assert pos >= 0, (c.id, fragment)


@pytest.mark.parametrize("text,match", [
    ("table1: {claims: [{id: x, claim: y, quote: q, where: w, kind: nope, a: vae}]}",
     "unknown kind 'nope'"),
    ("table1: {claims: [{id: x, claim: y, quote: q, where: w, kind: better_than, a: vae}]}",
     "needs rows `b`"),
    ("table1: {claims: [{id: x, claim: y, where: w, kind: better_than, a: vae, b: vae}]}",
     "missing key 'quote'"),
])
def test_bad_claims_file_is_a_config_error(tmp_path, text, match):
    path = tmp_path / "claims.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        claims.load_claims("table1", path)


def test_unknown_row_is_a_config_error():
    with pytest.raises(ConfigError, match="'bogus' is neither a row id nor a method family"):
        claims.resolve_rows(("bogus",), TABLE1.rows, "here")


def test_module_imports_no_torch():
    code = "import sys, benchmark.analyses.claims; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0


# ---------------------------------------------------------------- the command

BASE = {"gpvae-default": 20.0, "rme-m2": 19.8, "rme-m3": 19.95, "rme-m4": 12.0, "rme-m5": 13.0,
        "vae-default": 10.0, "sa-k1": 14.0, "sa-k2": 6.0, "sa-k4": 11.0, "sa-k8": 9.0,
        "iaf-k1": 9.0, "iaf-k2": 10.0, "iaf-k4": 8.0, "iaf-k8": 7.0,
        "hf-k1": 9.5, "hf-k2": 8.0, "hf-k4": 9.0, "hf-k8": 7.0,
        "me-m2": 5.0, "me-m3": 4.0, "me-m4": 3.0, "me-m5": 2.0}


def write_synthetic_records(results: Path) -> None:
    """Smoke-profile records of Table 1 on MNIST (2 splits): a base per row, a per-split offset
    that every row shares, and thousandths of a nat of row noise; RME(3) gets a few hundredths,
    which at 2 splits makes its 0.05-nat gap to GPVAE a tie (detectable effect under 3 nats)."""
    spec, profile = load_table_spec("1"), load_profile("smoke")
    plan = make_plan(spec, profile, data_root="unused", results_dir=str(results),
                     dataset_filter={"mnist"})
    for task in plan.tasks:
        k = task.key
        row = f"{k.method}-{k.variant}"
        scale = 0.03 if row == "rme-m3" else 0.002 * ((list(BASE).index(row) % 5) - 2)
        value = 600.0 + k.dim + BASE[row] + 25.0 * k.split + scale * (1 if k.split else -1)
        write_json_atomic(task.record_path, {
            "status": "ok", "config_hash": task.config_hash(),
            "key": dataclasses.asdict(k),
            "metrics": {"test_iwae": value, "val_iwae": value, "mean_image_floor": -2000.0},
            "wall_seconds": 1.0})


def verdicts(md: str) -> dict:
    out = {}
    for line in md.splitlines():
        m = re.match(r"\| .*\(([a-z-]+)\) *\|.*\| \*\*(not run|[a-z]+)", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def test_claims_command_on_synthetic_records(tmp_path, capsys):
    write_synthetic_records(tmp_path)
    rc = main(["--table", "1", "--profile", "smoke", "--collect", "--claims", "--datasets", "mnist",
               "--results-dir", str(tmp_path), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    tables = tmp_path / "tables"
    md = (tables / "table1_claims.md").read_text()
    assert md in out and (tables / "table1_claims.html").exists()
    got = verdicts(md)
    assert got == {"gpvae-best": "reproduced", "gpvae-beats-vae": "reproduced",
                   "sa-mixed": "reproduced", "iaf-no-better": "reproduced",
                   "hf-no-better": "reproduced", "gpvae-beats-me": "reproduced",
                   "rme-tied-or-behind": "reproduced",
                   "uncertainty-tracks-non-gaussianity": "not run"}
    assert "MNIST d10 RME(3) vs GPVAE: -0.0 (p=0.380, n=2, tie)" in md
    # each decided verdict says what it covers; the headline counts none as a whole-table verdict
    assert "reproduced on 3 of 6 columns (MNIST d10, MNIST d20, MNIST d50), among 22 of 22 rows" in md
    assert "reproduced on 3 of 6 columns (MNIST d10, MNIST d20, MNIST d50)**" in md
    assert ("8 claims: 7 decided on the columns run (MNIST d10, MNIST d20, MNIST d50), 0 on all "
            "the claim's columns and rows; 7 reproduced, 1 not run") in md
    assert "paired t over shared splits, per column (3 of 6 columns run" in md
    assert '"The performance of the semi-amortized approach (SA) is mixed' in md
    index = (tables / "index.html").read_text()
    # the claims come first on the results page
    assert index.index("<section id='table1_claims'>") < index.index("<section id='table1'>")


def test_table3_claims_from_stored_timings(tmp_path, capsys):
    path = claims.timings_path(tmp_path, "smoke", "table3")
    labels = {r.label for r in TABLE3.rows}
    write_json_atomic(path, {"ms_per_batch": {
        f"{ds}/d50": {k: v for k, v in cells.items() if k in labels}
        for (ds, _), cells in paper_timings().items()}})
    rc = main(["--table", "3", "--profile", "smoke", "--collect", "--claims",
               "--results-dir", str(tmp_path), "--data-root", str(tmp_path / "none")])
    assert rc == 0
    md = (tmp_path / "tables" / "table3_claims.md").read_text()
    assert md in capsys.readouterr().out
    assert verdicts(md) == {"gpvae-faster-than-sa": "reproduced",
                            "gpvae-not-faster-than-iaf": "reproduced"}
    assert not (tmp_path / "tables" / "table3.md").exists()  # --collect --claims times nothing


def test_table3_claims_from_per_pass_timings_of_mnist_alone(tmp_path, capsys):
    path = claims.timings_path(tmp_path, "smoke", "table3")
    labels = {r.label for r in TABLE3.rows}
    cells = {k: v for k, v in per_pass_timings()["mnist", 50].items() if k in labels}
    write_json_atomic(path, {"ms_per_batch": {"mnist/d50": {k: float(np.mean(v))
                                                            for k, v in cells.items()}},
                             "ms_per_pass": {"mnist/d50": cells}})
    rc = main(["--table", "3", "--profile", "smoke", "--collect", "--claims",
               "--results-dir", str(tmp_path), "--data-root", str(tmp_path / "none")])
    assert rc == 0
    md = (tmp_path / "tables" / "table3_claims.md").read_text()
    assert md in capsys.readouterr().out
    assert verdicts(md) == {"gpvae-faster-than-sa": "reproduced",
                            "gpvae-not-faster-than-iaf": "reproduced"}
    assert "Welch t (scipy ttest_ind, equal_var=False)" in md and "MNIST d50 vs SA(8)" in md


@pytest.mark.parametrize("args,needle", [
    (["--table", "2", "--claims", "--collect"], "no claims recorded for table2"),
    (["--figures", "--claims"], "--claims goes with --table"),
])
def test_claims_bad_combinations_are_one_error_line(tmp_path, capsys, args, needle):
    rc = main([*args, "--results-dir", str(tmp_path), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_figure_section_reads_the_figures_json(tmp_path):
    write_json_atomic(tmp_path / "figures" / "figure1_spearman.json",
                      {"spearman_rho": 0.5, "p_value": 1e-9, "n": 300, "what": "w"})
    report = claims.build_report(TABLE1, claims.load_claims("table1"), results_dir=tmp_path,
                                 records=[])
    assert [s.title for s in report.sections] == [TABLE1.title, "Figure 1"]
    (fig,) = report.sections[1].results
    assert fig.verdict == "reproduced" and fig.n == 300
    assert all(r.verdict == "not run" for r in report.sections[0].results)
    assert "**Figure 1**" in claims.to_markdown(report) and "<h4>Figure 1</h4>" in claims.to_html(report)
    json.dumps([r.verdict for r in report.sections[0].results])


def test_claims_report_is_rewritten_with_its_table(tmp_path, capsys):
    # a claims report written earlier is recomputed whenever its table is, even without --claims,
    # so the results page never shows verdicts older than the table beside them
    write_synthetic_records(tmp_path)
    args = ["--table", "1", "--profile", "smoke", "--collect", "--datasets", "mnist",
            "--results-dir", str(tmp_path), "-q"]
    assert main(args + ["--claims"]) == 0
    report = tmp_path / "tables" / "table1_claims.md"
    before = report.read_text()
    for path in sorted((tmp_path / "runs").rglob("rme-m3/*.json")):  # RME(3) falls far behind
        rec = json.loads(path.read_text())
        rec["metrics"]["test_iwae"] -= 500.0
        path.write_text(json.dumps(rec))
    assert main(args) == 0
    capsys.readouterr()
    after = report.read_text()
    assert after != before and "MNIST d10 RME(3) vs GPVAE: -0.0" not in after
