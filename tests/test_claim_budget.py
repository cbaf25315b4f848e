"""--claims --budget (benchmark/analyses/claim_budget.py): the duration, the plan on made-up
records, and by simulation the error rate and power of the design it uses."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from benchmark.aggregate import ALPHA
from benchmark.analyses import claims
from benchmark.analyses.claim_budget import parse_budget, plan_budget, splits_needed
from benchmark.cli import main
from benchmark.errors import UsageError
from benchmark.plan import make_plan
from benchmark.profiles import load_profile
from benchmark.specs import load_table_spec
from benchmark.store import write_json_atomic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLE1 = load_table_spec("1")
CLAIMS = claims.load_claims("table1")
SWEEPS = 2000
SD_MEASURED = 4.7  # GPVAE - VAE at d=10, claims profile, 3 splits: +8.9 / +10.7 / +1.9
PAPER_GAP = 11.4  # the paper's GPVAE - VAE on MNIST d=10 (696.5 - 685.1)


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("3h", 10800), ("1h30m", 5400),
                                           ("90s", 90), (" 2h ", 7200)])
def test_budget_is_a_duration(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["abc", "-5m", "0s", "", "3 parsecs"])
def test_a_bad_budget_is_one_usage_error(text):
    with pytest.raises(UsageError, match="--budget"):
        parse_budget(text)


def _tasks(tmp_path, methods=("vae", "gpvae"), dims=(10,)):
    # the claims profile as it was at 6 epochs (18 since 2026-12-06): the budgets below are sized
    # for its runs' cost; what is tested is the planner's arithmetic, not the profile
    profile = dataclasses.replace(load_profile("claims"), splits=10, epochs=6)
    return make_plan(TABLE1, profile, data_root="unused", results_dir=str(tmp_path),
                     methods=set(methods), dataset_filter={"mnist"}, dims=set(dims)).tasks


def _plan(tmp_path, budget, records=(), **kw):
    from benchmark.paper_tables import load_paper_table

    return plan_budget(TABLE1, CLAIMS, _tasks(tmp_path, **kw), list(records), budget=budget,
                       results_dir=tmp_path, jobs=2, paper=load_paper_table("table1"))


def by_id(plan):
    return {cp.claim.id: cp for cp in plan.claims}


def test_45_minutes_plan_vae_and_gpvae_at_d10_to_the_papers_ten_splits(tmp_path):
    plan = _plan(tmp_path, 2700)
    cps = by_id(plan)
    assert cps["gpvae-beats-vae"].status == "planned" and cps["gpvae-beats-vae"].n == 10
    assert cps["gpvae-best"].status == "planned"
    assert len(plan.tasks) == 20 and plan.seconds <= 2700
    assert cps["sa-mixed"].status == "not in this sweep"
    assert cps["uncertainty-tracks-non-gaussianity"].status == "not in this sweep"
    text = plan.text()
    assert "gpvae-beats-vae: planned: MNIST d10; n = 10 splits" in text
    assert "needs n = 6" in text  # sd 5 (the prior), the paper's +11.4


def _figure_result(tmp_path, rhos, train_seconds=2000.0, analysis_seconds=500.0):
    """A figure result file as benchmark.analyses.figures writes it, from per-model rhos."""
    from benchmark.analyses import figures

    per_seed = [{"training": {"train_seconds": train_seconds}} for _ in rhos]
    write_json_atomic(Path(tmp_path) / "figures" / "figure1_spearman.json",
                      {"primary": figures.PRIMARY, "seconds": analysis_seconds * len(rhos),
                       "combined": {figures.PRIMARY: figures.combine(rhos)}, "per_seed": per_seed})


def test_figure_1s_claim_says_how_many_models_would_decide_it_and_what_they_cost(tmp_path):
    fig = "uncertainty-tracks-non-gaussianity"
    text = _plan(tmp_path, 2700).text()  # no figure result yet
    assert f"{fig}: not in this sweep: decided by the figure's own runs" in text
    assert "no result of them yet" in text
    # the five models of December 2026: mean z 0.052, sd 0.086 -> 36 models (n_for_power)
    _figure_result(tmp_path, [0.0807, 0.0854, -0.0193, -0.0495, 0.1616])
    cp = by_id(_plan(tmp_path, 2700))[fig]
    assert "5 models so far, mean rho +0.052" in cp.why and "about 36 models would decide" in cp.why
    assert "--seeds 36" in cp.why
    # 31 more models trained 2 at once (jobs=2): 16 rounds of 2000 s; then all 36 analysed, 500 s each
    assert cp.budget_needed == pytest.approx(16 * 2000 + 36 * 500)
    _figure_result(tmp_path, [0.15, 0.22, 0.18, 0.12, 0.25])  # significant already
    assert by_id(_plan(tmp_path, 2700))[fig].why.endswith(": decided")
    _figure_result(tmp_path, [0.1, -0.1, 0.2, -0.2])  # mean z 0: no number of models decides
    assert "no number of models would decide it" in by_id(_plan(tmp_path, 2700))[fig].why


def test_a_small_budget_plans_fewer_splits_or_says_what_budget_would(tmp_path):
    plan = _plan(tmp_path, 1500)  # 25 min: six pairs of runs fit, not ten
    cp = by_id(plan)["gpvae-beats-vae"]
    assert cp.status == "planned" and 6 <= cp.n < 10 and plan.seconds <= 1500
    plan = _plan(tmp_path, 600)  # 10 min: not even the six pairs the test needs
    cp = by_id(plan)["gpvae-beats-vae"]
    assert cp.status == "not planned" and cp.budget_needed > 600
    assert "a budget of about" in plan.text() and not plan.tasks


def test_from_an_empty_folder_the_plan_is_priced_at_this_cpus_timed_speed(tmp_path, monkeypatch):
    """No record yet: the planner scales the fallback table by the speed probe, so on a CPU 1.5x
    as slow as the reference VM the 45 minutes buy fewer splits, and the plan says how it knows."""
    from benchmark import estimate, speed_probe

    monkeypatch.setattr(speed_probe, "vae_ms_per_image",
                        lambda: 1.5 * estimate.FALLBACK_TRAIN_MS["vae"])
    plan = _plan(tmp_path, 2700)
    cp = by_id(plan)["gpvae-beats-vae"]
    assert cp.status == "planned" and 6 <= cp.n < 10 and plan.seconds <= 2700
    assert "scaled x1.50 to this machine by 24 timed VAE steps" in plan.text()


def _records(tmp_path, diffs):
    """Records of VAE and GPVAE at MNIST d10 whose paired differences are `diffs`."""
    out = []
    for task in _tasks(tmp_path):
        k = task.key
        if k.split >= len(diffs):
            continue
        value = 600.0 + 20 * k.split + (diffs[k.split] if k.method == "gpvae" else 0.0)
        rec = {"status": "ok", "config_hash": task.config_hash(), "key": dataclasses.asdict(k),
               "metrics": {"test_iwae": value, "val_iwae": value, "mean_image_floor": -2000.0},
               "wall_seconds": 1.0}
        write_json_atomic(task.record_path, rec)
        out.append(rec)
    return out


def test_the_records_spread_replaces_the_prior_and_records_are_not_trained_again(tmp_path):
    recs = _records(tmp_path, [11.0, 12.0, 10.5])  # sd 0.76: n = 2 would do
    plan = _plan(tmp_path, 2700, recs)
    need = by_id(plan)["gpvae-beats-vae"].needs[0]
    assert need.have == 3 and need.sd_from == "records, n=3" and need.needed == 3
    assert not {t.key.split for t in plan.tasks} & {0, 1, 2}


def test_a_comparison_without_records_is_planned_with_its_columns_measured_spread(tmp_path):
    """GPVAE vs VAE spread by 12.6 nats over 3 splits at MNIST d10 (as d=50 spread by 24.5 on
    2026-12-05): GPVAE vs ME(2), with no records of its own there, is planned with that spread, not
    the prior 5, which would promise a decision from far too few splits."""
    diffs = [20.0, -5.0, 10.0]
    recs = _records(tmp_path, diffs)
    plan = _plan(tmp_path, 10800, recs, methods=("vae", "gpvae", "me"))
    needs = {nd.label(): nd for nd in by_id(plan)["gpvae-beats-me"].needs}
    nd = needs["MNIST d10 GPVAE vs ME(2)"]
    assert nd.sd == pytest.approx(np.std(diffs, ddof=1))
    assert nd.sd_from == "measured in this column: gpvae-default vs vae-default, n=3"
    assert nd.needed == splits_needed(np.std(diffs, ddof=1), nd.target)
    assert nd.needed > splits_needed(5.0, nd.target)
    # a column whose measured spread is below the prior keeps the prior
    recs = _records(tmp_path, [11.0, 12.0, 10.5])
    plan = _plan(tmp_path, 10800, recs, methods=("vae", "gpvae", "me"))
    nd = next(nd for nd in by_id(plan)["gpvae-beats-me"].needs if nd.b.label == "ME(2)")
    assert nd.sd == 5.0 and nd.sd_from == "prior"


def test_a_claim_that_cannot_be_decided_within_max_splits_says_what_it_needs(tmp_path):
    """RME against GPVAE: the paper's gaps are under the tie tolerance (3 nats), so a tie must be
    shown with power: at the prior sd of 5 that takes 36 splits, more than max_splits = 10."""
    plan = _plan(tmp_path, 10800, methods=("gpvae", "rme"))
    cp = by_id(plan)["rme-tied-or-behind"]
    assert cp.status == "cannot decide" and "needs n = 36 splits" in cp.why
    assert cp.budget_needed and cp.budget_needed > 10800


@pytest.mark.skipif(not (DATA / "MNIST").exists(), reason="needs ../shared/data (MNIST)")
def test_budget_dry_run_prints_the_plan_and_trains_nothing(tmp_path, capsys):
    rc = main(["--table", "1", "--profile", "claims", "--claims", "--budget", "24h", "--datasets",
               "mnist", "--methods", "vae,gpvae", "--dims", "10", "--jobs", "2", "--dry-run",
               "--results-dir", str(tmp_path), "--data-root", str(DATA)])
    out = capsys.readouterr().out
    assert rc == 0 and "claims plan: budget 24.0 h" in out and "gpvae-beats-vae: planned" in out
    assert not list(tmp_path.glob("runs/**/*.json"))


@pytest.mark.parametrize("args, needle", [
    (["--budget", "45m"], "use it with --claims"),
    (["--claims", "--budget", "soon"], "expected a positive duration"),
    (["--claims", "--budget", "45m", "--splits", "2"], "leave out --splits"),
])
def test_budget_misuse_is_one_error_line(tmp_path, capsys, args, needle):
    rc = main(["--table", "1", "--profile", "claims", "--results-dir", str(tmp_path), "--dry-run"]
              + args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- the design, simulated


def _sweep(rng, delta, sd, pilot, cap, grow):
    """One budgeted sweep of a GPVAE - VAE comparison as the planner runs it: `pilot` splits are
    recorded already; the n it needs is fixed from their sd (the prior sd 5 below MIN_PILOT = 3)
    and the paper's gap; if that is within the `cap` the budget affords, the sweep trains up to
    the cap (`grow`: spare budget goes to more splits, as pass 2 of the planner does) or exactly
    the n needed (not `grow`: the smallest design); then one paired t-test at alpha on all n, by
    the claims report's own function. Returns the comparison's status."""
    first = rng.normal(delta, sd, pilot)
    sd_plan = first.std(ddof=1) if pilot >= 3 else 5.0
    needed = splits_needed(sd_plan, PAPER_GAP)
    if needed is None or needed > cap:
        return "not planned"
    n = cap if grow else max(needed, pilot, 2)
    d = np.concatenate([first, rng.normal(delta, sd, n - pilot)])
    return claims.paired(d, np.zeros(n), "sim", tolerance=3.0, alpha=ALPHA).status


@pytest.mark.parametrize("pilot, cap, grow", [(0, 10, True), (3, 10, True), (3, 100, False)])
def test_with_no_true_difference_the_design_declares_one_at_most_at_alpha(pilot, cap, grow):
    """2,000 sweeps with no true difference (sd as measured). (0, 10, grow): an empty results
    folder and a budget for the paper's 10 splits, as in the 45-minute sweep; (3, 10, grow): 3
    splits recorded, whose sd decides whether the comparison is planned; (3, 100, not grow): n
    follows the pilot's sd alone (the internal pilot at its most data-dependent). The count of
    declared differences must not be significantly above alpha (one-sided binomial test at 5%)."""
    rng = np.random.default_rng(20261205)
    statuses = [_sweep(rng, 0.0, SD_MEASURED, pilot, cap, grow) for _ in range(SWEEPS)]
    declared = sum(s in ("above", "below") for s in statuses)
    rate = declared / SWEEPS
    print(f"pilot {pilot}, cap {cap}, grow {grow}: false positives {declared}/{SWEEPS} = {rate:.4f}")
    assert stats.binomtest(declared, SWEEPS, ALPHA, alternative="greater").pvalue > 0.05
    assert rate <= 2 * ALPHA


@pytest.mark.parametrize("pilot, cap, grow, at_least", [(0, 10, True, 0.80), (3, 10, True, 0.80),
                                                        (3, 100, False, 0.25)])
def test_power_at_a_true_7_nats(pilot, cap, grow, at_least):
    """How often a true +7 nats at sd 4.7 (the spread measured at the claims profile) is found:
    with the paper's 10 splits about 0.9; with the smallest design sized for the paper's +11.4
    (about 6 splits) far less: the reason a budget's spare time goes to more splits of the
    planned comparisons before more columns."""
    rng = np.random.default_rng(7)
    statuses = [_sweep(rng, 7.0, SD_MEASURED, pilot, cap, grow) for _ in range(SWEEPS)]
    power = sum(s == "above" for s in statuses) / SWEEPS
    print(f"pilot {pilot}, cap {cap}, grow {grow}: power at +7 nats {power:.3f}")
    assert power >= at_least


def test_the_fallback_table_is_scaled_to_this_machine_by_its_own_records(tmp_path):
    """On a CPU twice as slow as the one the fallback table was measured on, records of VAE runs
    make every row's fallback estimate twice as long (GPVAE's too), and the estimate says so."""
    from benchmark.estimate import MeasuredCost, estimate_run, fallback_train_ms, machine_scale

    assert machine_scale([]) == (1.0, 0)
    slow = [MeasuredCost("vae", "default", "mnist", 10, "cpu",
                         2.0 * fallback_train_ms("vae", "default", 10) / 1000, None)]
    assert machine_scale(slow) == (pytest.approx(2.0), 1)
    gpvae = next(t for t in _tasks(tmp_path) if t.key.method == "gpvae")
    plain, scaled = estimate_run(gpvae, False, []), estimate_run(gpvae, False, slow)
    assert scaled.seconds == pytest.approx(2.0 * plain.seconds)
    assert "scaled x2.00 to this machine by 1 record" in scaled.source
