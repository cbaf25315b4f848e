"""Grid posterior math and Figure 1's metrics against closed forms, its statistics against direct
computations, and the figure command end to end on tiny settings (two models)."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import MultivariateNormal

from benchmark import cli
from benchmark.analyses import figures
from benchmark.analyses.claims import n_for_power
from benchmark.analyses.grid_posterior import (
    count_modes,
    gauss_hermite_2d,
    grid_log_joint,
    grid_moments,
    kl_gaussian_to_posterior,
    kl_to_moment_matched,
    make_grid,
    make_grids,
    normalise,
    refined_posterior,
)
from benchmark.index_page import write_index
from methods import diagonal_gaussian
from methods.likelihoods import GaussianLikelihood


class LinearGaussianModel:
    """p(z) = N(0, I_2), p(x|z) = N(W z + c, s^2 I) on 2x2 images: the posterior is Gaussian,
    precision I + W^T W / s^2, mean Sigma W^T (x - c) / s^2, and p(x) = N(c, W W^T + s^2 I)."""

    def __init__(self, seed=0, s=0.7):
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(4, 2, generator=g)
        self.c = torch.randn(4, generator=g)
        self.s = s
        self.likelihood = GaussianLikelihood(s)

    def decoder(self, z):
        return (z @ self.W.T + self.c).reshape(*z.shape[:-1], 1, 2, 2)

    def prior(self):
        return diagonal_gaussian(torch.zeros(2), torch.ones(2))

    def log_joint(self, x, z):
        return self.likelihood.log_prob(x, self.decoder(z)) + self.prior().log_prob(z)

    def exact_posterior(self, x):
        prec = torch.eye(2) + self.W.T @ self.W / self.s**2
        cov = torch.linalg.inv(prec)
        mean = (x.reshape(len(x), 4) - self.c) @ self.W @ cov / self.s**2
        return mean, cov

    def log_evidence(self, x):
        """In float64: with a small s the covariance is near singular and float32 is off by 0.02."""
        cov = self.W.double() @ self.W.double().T + self.s**2 * torch.eye(4, dtype=torch.float64)
        return MultivariateNormal(self.c.double(), cov).log_prob(x.reshape(len(x), 4).double())


def images(n=3, seed=1):
    return torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))


def test_grid_posterior_of_linear_gaussian_model_is_the_closed_form():
    model, x = LinearGaussianModel(), images()
    mean, cov = model.exact_posterior(x)
    sd = cov.diagonal().sqrt().max().item()
    points, _, _, area = make_grid([-4.0, -4.0], [4.0, 4.0], 401)
    assert (mean.abs() + 8 * sd < 4.0).all()  # the box holds every posterior to 8 sd
    log_mass, log_evidence = normalise(grid_log_joint(model, x, points), area)
    grid_mean, grid_cov = grid_moments(log_mass, points, area)
    # the midpoint rule on a smooth density well inside the box is accurate far beyond these
    # tolerances; the only designed bias is the step^2 / 12 cell variance (~3.3e-5 here)
    assert grid_mean == pytest.approx(mean.double(), abs=1e-4)
    assert grid_cov == pytest.approx(cov.double().expand(3, 2, 2), abs=1e-4)
    assert log_evidence == pytest.approx(model.log_evidence(x), abs=1e-3)
    kl = kl_to_moment_matched(log_mass, points, area)
    assert (kl.abs() < 1e-3).all()


def test_zoomed_grids_find_and_resolve_a_narrow_posterior():
    """s = 0.05 makes the posterior sd ~0.02: a coarse grid of step 0.2 cannot resolve it, the
    two zoom levels must (moments to 1% of an sd, KL ~0)."""
    model, x = LinearGaussianModel(s=0.05), images()
    mean, cov = model.exact_posterior(x)
    points, _, _, area = make_grid([-6.0, -6.0], [6.0, 6.0], 61)
    coarse_kl = kl_to_moment_matched(normalise(grid_log_joint(model, x, points), area)[0],
                                     points, area)
    log_mass, pts, areas, log_evidence = refined_posterior(model, x, points, area, n=25)
    grid_mean, grid_cov = grid_moments(log_mass, pts, areas)
    assert log_evidence == pytest.approx(model.log_evidence(x), abs=1e-3)
    sd = cov.diagonal().sqrt().min().item()
    assert sd < 0.05
    assert grid_mean == pytest.approx(mean.double(), abs=0.01 * sd)
    assert grid_cov == pytest.approx(cov.double().expand(3, 2, 2), rel=0.05, abs=1e-5)
    assert (kl_to_moment_matched(log_mass, pts, areas).abs() < 0.01).all()
    assert (coarse_kl.abs() > 0.05).any()  # what an unresolved grid reports instead


def test_kl_of_two_separated_modes_is_the_closed_form():
    """Equal mixture of N(+-a, s^2) in z1 (N(0, 1) in z2), modes 20 sd apart: KL to the moment-
    matched Gaussian N(0, a^2 + s^2) is 1/2 log((a^2 + s^2) / s^2) - log 2 (overlap ~e^-50)."""
    a, s = 2.0, 0.2
    points, _, _, area = make_grid([-6.0, -6.0], [6.0, 6.0], 601)
    z1, z2 = points[:, 0].double(), points[:, 1].double()
    log_density = (torch.logaddexp(-0.5 * ((z1 - a) / s) ** 2, -0.5 * ((z1 + a) / s) ** 2)
                   - 0.5 * z2**2)
    log_mass, _ = normalise(log_density.unsqueeze(0).float(), area)
    expected = 0.5 * math.log((a**2 + s**2) / s**2) - math.log(2)
    assert kl_to_moment_matched(log_mass, points, area).item() == pytest.approx(expected, rel=1e-3)


def gaussian_kl(m0, s0, m1, s1):
    """KL(N(m0, S0) || N(m1, S1)) in closed form (float64)."""
    m0, s0, m1, s1 = (t.double() for t in (m0, s0, m1, s1))
    inv = torch.linalg.inv(s1)
    diff = (m1 - m0).unsqueeze(-1)
    return 0.5 * (torch.einsum("...ii->...", inv @ s0) + (diff.transpose(-1, -2) @ inv @ diff)[..., 0, 0]
                  - 2 + torch.logdet(s1) - torch.logdet(s0))


def test_gauss_hermite_rule_integrates_gaussian_moments():
    nodes, weights = gauss_hermite_2d(8)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert (weights[:, None] * nodes).sum(0).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    second = torch.einsum("g,gi,gj->ij", weights, nodes, nodes)
    assert second == pytest.approx(torch.eye(2, dtype=torch.float64), abs=1e-12)
    assert (weights * nodes[:, 0] ** 4).sum().item() == pytest.approx(3.0, abs=1e-10)


def test_kl_from_a_gaussian_to_the_posterior_is_the_closed_form():
    """Linear Gaussian model: p(z|x) = N(mean, cov) exactly and log p(x, z) is quadratic in z, so
    Gauss-Hermite is exact; the base-encoder-like diagonal Gaussian and the posterior itself (KL 0)."""
    model, x = LinearGaussianModel(), images()
    mean, cov = model.exact_posterior(x)
    log_evidence = model.log_evidence(x)
    other_mean = mean + torch.tensor([0.3, -0.2])
    other_sd = torch.tensor([[0.5, 0.2], [0.3, 0.4], [0.25, 0.25]])
    got = kl_gaussian_to_posterior(model, x, other_mean, torch.diag_embed(other_sd), log_evidence,
                                   n=6)
    expected = gaussian_kl(other_mean, torch.diag_embed(other_sd.square()), mean, cov.expand(3, 2, 2))
    assert got.double() == pytest.approx(expected, abs=1e-3)
    same = kl_gaussian_to_posterior(model, x, mean, torch.linalg.cholesky(cov).expand(3, 2, 2),
                                    log_evidence, n=6)
    assert same.abs().max().item() < 1e-3


def _two_mode_grid(a, second_height, n=61):
    points, _, _, area = make_grid([-4.0, -4.0], [4.0, 4.0], n)
    z1, z2 = points[:, 0].double(), points[:, 1].double()
    log_density = torch.logaddexp(-0.5 * ((z1 - a) / 0.3) ** 2,
                                  math.log(second_height) - 0.5 * ((z1 + a) / 0.3) ** 2) - 0.5 * z2**2
    return normalise(log_density.unsqueeze(0).float(), area)[0]


def test_modes_are_counted_on_the_log_scale_within_12_nats_of_the_peak():
    assert count_modes(_two_mode_grid(2.0, 1.0), 61).tolist() == [2]
    assert count_modes(_two_mode_grid(2.0, math.exp(-8)), 61).tolist() == [2]  # 8 nats lower
    assert count_modes(_two_mode_grid(2.0, math.exp(-15)), 61).tolist() == [1]  # 15 nats lower
    assert count_modes(_two_mode_grid(0.0, 1.0), 61).tolist() == [1]  # one Gaussian
    # a slope that rises out of the grid is not a mode; the peak on the edge still counts once
    lo, hi = torch.tensor([[0.0, -1.0]]), torch.tensor([[2.0, 1.0]])
    pts, area = make_grids(lo, hi, 21)
    slope = -0.5 * ((pts[0, :, 0] - 3.0) ** 2 + pts[0, :, 1] ** 2)
    assert count_modes(normalise(slope[None], area)[0], 21).tolist() == [1]


def test_partial_spearman_removes_what_the_covariate_explains():
    rng = np.random.default_rng(0)
    v = rng.normal(size=400)
    u, y = v + 0.3 * rng.normal(size=400), v + 0.3 * rng.normal(size=400)
    raw = figures.spearman_with_ci(u, y)
    part = figures.partial_spearman(u, y, v)
    assert raw["rho"] > 0.8 and raw["ci"][0] < raw["rho"] < raw["ci"][1]
    assert abs(part["rho"]) < 0.15 and part["p"] > 0.01
    # the formula is the correlation of the ranks' residuals after regressing out the covariate
    ranks = [stats.rankdata(a) for a in (u, y, v)]
    design = np.stack([np.ones(400), ranks[2]], 1)
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    assert part["rho"] == pytest.approx(np.corrcoef(res)[0, 1], abs=1e-12)
    w = u + 0.5 * rng.normal(size=400)  # a real association beyond the covariate
    assert figures.partial_spearman(u + w, y + w, v)["rho"] > 0.3


def test_combined_test_is_a_t_test_of_the_models_fisher_z():
    rhos = [0.15, 0.22, 0.18, 0.12, 0.25]
    got = figures.combine(rhos + [None])  # a model without a finite rho is left out
    z = np.arctanh(rhos)
    assert got["n"] == 5 and got["df"] == 4 and got["positive"] == 5
    assert got["mean_rho"] == pytest.approx(np.mean(rhos))
    assert got["p_two_sided"] == pytest.approx(stats.ttest_1samp(z, 0).pvalue)
    assert got["p_two_sided"] < 0.01 and got["wilcoxon_p"] == pytest.approx(0.0625)
    assert 0 < got["mde_rho"] < 1
    neg = figures.combine([-r for r in rhos])
    assert neg["mean_rho"] < 0 and neg["p_two_sided"] == pytest.approx(got["p_two_sided"])
    assert figures.combine([0.2])["p_two_sided"] is None  # one model: no test


def test_n_for_power_gives_the_combined_test_its_power_by_monte_carlo():
    """claims.n_for_power(mean, sd): at that many models the t-test of normal per-model z rejects at
    alpha 0.01 in about 80% of 4,000 simulated studies, and at one model fewer in less."""
    rng = np.random.default_rng(0)
    mean, sd = 0.052, 0.086  # the five Figure 1 models of December 2026 (docs/figure1.md)
    n = n_for_power(mean, sd)
    assert n == 36

    def power(k):
        z = rng.normal(mean, sd, size=(4000, k))
        return float(np.mean(stats.ttest_1samp(z, 0, axis=1).pvalue <= 0.01))

    at, below = power(n), power(n - 4)
    assert abs(at - 0.8) < 3 * math.sqrt(0.8 * 0.2 / 4000) + 0.01, at
    assert below < 0.8, below
    assert n_for_power(-mean, sd) == n  # two-sided
    assert n_for_power(0.0, sd) is None and n_for_power(mean, 0.0) is None
    assert n_for_power(1e-4, 1.0) is None  # beyond MOST_SAMPLES
    assert figures.combine([0.08, 0.09, -0.02, -0.05, 0.16])["models_needed"] == n_for_power(
        *(lambda z: (z.mean(), z.std(ddof=1)))(np.arctanh([0.08, 0.09, -0.02, -0.05, 0.16])))


def test_trunk_health_counts_dead_inputs_and_input_dependence():
    live = torch.rand(10, 4) + 0.1
    dead_on_three = live.clone()
    dead_on_three[:3] = 0.0
    constant = torch.ones(10, 4)
    got = figures.trunk_health({"psi_m": dead_on_three, "psi_s": constant})
    assert got["psi_m"]["dead_share"] == pytest.approx(0.3)
    assert got["psi_s"]["dead_share"] == 0.0 and got["psi_s"]["input_dependence"] == 0.0
    assert got["psi_m"]["input_dependence"] > 0 and got["either_dead_share"] == pytest.approx(0.3)
    assert figures.trunk_health({"psi_m": torch.zeros(5, 3), "psi_s": live[:5]})[
        "either_dead_share"] == 1.0


def test_pick_six_is_ordered_from_lowest_to_highest():
    u = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    picked = figures.pick_six(u)
    assert u[picked].tolist() == sorted(u[picked].tolist())
    assert picked[0] == 9 and picked[-1] == 2 and len(set(picked)) == 6


def test_convergence_is_the_best_validation_elbos_rise_over_the_last_epochs():
    fs = figures.FigureSettings(plateau_epochs=3, plateau_nats=1.0)
    hist = [{"val_elbo": v} for v in (100.0, 150.0, 160.0, 160.5, 160.2, 160.9)]
    c = figures.convergence({"history": hist}, fs)  # best 160.9 against 160.0 three epochs back
    assert c["last_epochs_gain"] == pytest.approx(0.9) and c["converged"] is True
    hist[-1]["val_elbo"] = 161.5
    assert figures.convergence({"history": hist}, fs)["converged"] is False
    # a fall after the best (as before an early stop) is no gain
    falling = [{"val_elbo": v} for v in (100.0, 120.0, 119.0, 118.0, 117.0)]
    assert figures.convergence({"history": falling}, fs)["last_epochs_gain"] == 0.0
    assert figures.convergence({"history": hist[:3]}, fs)["converged"] is None  # too short


def test_the_lr_schedule_is_part_of_the_cache_key_only_when_it_is_not_constant():
    cosine = figures.FigureSettings(lr_schedule="cosine").training_dict(0)
    constant = figures.FigureSettings(lr_schedule="constant").training_dict(0)
    assert cosine["lr_schedule"] == "cosine" and "lr_schedule" not in constant
    assert {k: v for k, v in cosine.items() if k != "lr_schedule"} == constant


TINY = ["--seeds", "2", "--epochs", "2", "--patience", "1", "--train-size", "256",
        "--val-size", "64", "--batch-size", "64", "--subset", "12", "--grid", "21",
        "--zoom-grid", "9", "--fine-grid", "21", "--quadrature", "4"]


def test_figure_command_on_tiny_settings(mnist_root, tmp_path, capsys):
    args = ["--data-root", str(mnist_root), "--results-dir", str(tmp_path), *TINY]
    assert figures.main(args) == 0
    out = capsys.readouterr().out
    fig_dir = tmp_path / "figures"
    for name in ("figure1.png", "figure2.png"):
        assert (fig_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((fig_dir / "figure1_spearman.json").read_text())
    # top level: the combined result across models, as claims.py reads it
    assert res["n"] == 2 and len(res["per_seed"]) == 2 and res["trained_now"]
    rhos = [s["metrics"]["kl_to_moment_matched"]["rho"] for s in res["per_seed"]]
    assert res["spearman_rho"] == pytest.approx(sum(rhos) / 2)
    assert res["p_value"] == res["combined"]["kl_to_moment_matched"]["p_two_sided"]
    assert 0 <= res["p_value"] <= 1 and "TWO-SIDED" in res["what"] and res["sided"] == "two-sided"
    assert f"n = {res['n']} models" in out
    assert set(res["combined"]) == set(figures.METRICS) == set(res["per_seed"][0]["metrics"])
    for seed in res["per_seed"]:
        assert 0 <= seed["dead_trunk_share"] <= 1 and seed["sigma_x"] > 0
        primary = seed["metrics"]["kl_to_moment_matched"]
        assert primary["ci"][0] <= primary["rho"] <= primary["ci"][1] and primary["n"] == 12
        assert "partial" in primary and seed["training"]["epochs_run"] <= 2
        assert len(seed["training"]["val_elbo_by_epoch"]) == seed["training"]["epochs_run"]
    assert [s["split"] for s in res["per_seed"]] == [0, 1]  # model s is split s
    us = [s["uncertainty"] for s in res["six_shown"]]
    assert us == sorted(us) and len(us) == 6
    index = (tmp_path / "tables" / "index.html").read_text()
    assert index.count("data:image/png;base64,") == 2

    # claims.py reads the combined result: n is the number of models
    from benchmark.analyses import claims

    claim = claims.load_claims("figure1").claims[0]
    result = claims.evaluate_correlation(claim, res)
    assert result.n == 2 and result.effect == pytest.approx(res["spearman_rho"])

    # a rerun loads the cached models instead of training; --train-only finds them too
    caches = sorted((fig_dir / "model").glob("*.pt"))
    assert len(caches) == 2 and not list((fig_dir / "model").glob("*.ckpt"))
    stamps = [c.stat().st_mtime_ns for c in caches]
    assert figures.main(args) == 0
    res = json.loads((fig_dir / "figure1_spearman.json").read_text())
    assert not res["trained_now"] and [c.stat().st_mtime_ns for c in caches] == stamps
    capsys.readouterr()
    assert figures.main([*args, "--train-only", "1"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["seed"] == 1 and not row["trained_now"]


def test_figure_command_bad_input(tmp_path, capsys):
    assert figures.main(["--data-root", str(tmp_path), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST not found") and err.count("\n") == 1
    assert figures.main(["--subset", "3", "--data-root", str(tmp_path)]) == 2
    assert "error: --subset must be at least 6" in capsys.readouterr().err
    assert figures.main(["--seeds", "0", "--data-root", str(tmp_path)]) == 2
    assert "error: --seeds must be at least 1" in capsys.readouterr().err
    assert figures.main(["--train-only", "a,b", "--data-root", str(tmp_path)]) == 2
    assert "error: --train-only takes model seeds" in capsys.readouterr().err


def test_index_page_holds_every_table_and_figure_and_nothing_remote(tmp_path):
    tables, figs = tmp_path / "tables", tmp_path / "figures"
    tables.mkdir()
    figs.mkdir()
    for name, body in (("table10", "<b>ten</b>"), ("table2", "<span style='color:red'>two</span>"),
                       ("table2_vs_paper", "<i>cmp</i>")):
        (tables / f"{name}.html").write_text(f"<html><head><style>x</style></head><body>{body}"
                                             "</body></html>")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    plt.figure(figsize=(1, 1))
    plt.savefig(figs / "figure1.png")
    plt.close()
    (figs / "figure1_spearman.json").write_text('{"spearman_rho": 0.5}')
    path = write_index(tmp_path)
    page = path.read_text()
    assert path == tables / "index.html"
    # numeric order of tables, each body once, colours kept, the figure inline
    assert page.index("two") < page.index("cmp") < page.index("ten")
    assert "<span style='color:red'>two</span>" in page and "<style>x</style>" not in page
    assert "data:image/png;base64," in page and "spearman_rho" in page
    assert "http://" not in page and "https://" not in page and "src='figure" not in page
    write_index(tmp_path)  # rebuilding never includes the index in itself
    assert path.read_text().count("gpvae-bench results</h1>") == 1


def test_reproduce_figures_is_the_figure_command(tmp_path, monkeypatch, capsys):
    assert cli.main(["--figures", "--data-root", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST not found") and err.count("\n") == 1
    seen = []
    monkeypatch.setattr(figures, "main", lambda argv: seen.append(argv) or 0)
    assert cli.main(["--figures", "--data-root", "D", "--results-dir", "R", "--download",
                     "--device", "cpu"]) == 0
    assert seen == [["--data-root", "D", "--results-dir", "R", "--device", "cpu", "--download"]]
    assert cli.main(["--figures", "--table", "1"]) == 2
    assert "run --table separately" in capsys.readouterr().err
