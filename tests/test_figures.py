"""Grid posterior math against closed forms; the figure command end to end on tiny settings."""

import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from benchmark import cli
from benchmark.analyses import figures
from benchmark.analyses.grid_posterior import (
    grid_log_joint,
    grid_moments,
    kl_to_moment_matched,
    make_grid,
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
        cov = self.W @ self.W.T + self.s**2 * torch.eye(4)
        return MultivariateNormal(self.c, cov).log_prob(x.reshape(len(x), 4))


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
    log_mass, pts, areas = refined_posterior(model, x, points, area, n=25)
    grid_mean, grid_cov = grid_moments(log_mass, pts, areas)
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


def test_pick_six_is_ordered_from_lowest_to_highest():
    u = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    picked = figures.pick_six(u)
    assert u[picked].tolist() == sorted(u[picked].tolist())
    assert picked[0] == 9 and picked[-1] == 2 and len(set(picked)) == 6


TINY = ["--epochs", "1", "--train-size", "256", "--val-size", "64", "--batch-size", "64",
        "--subset", "12", "--grid", "21", "--zoom-grid", "9", "--fine-grid", "21"]


def test_figure_command_on_tiny_settings(mnist_root, tmp_path, capsys):
    args = ["--data-root", str(mnist_root), "--results-dir", str(tmp_path), *TINY]
    assert figures.main(args) == 0
    out = capsys.readouterr().out
    fig_dir = tmp_path / "figures"
    for name in ("figure1.png", "figure2.png"):
        assert (fig_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = json.loads((fig_dir / "figure1_spearman.json").read_text())
    assert res["n"] == 12 and -1 <= res["spearman_rho"] <= 1 and 0 <= res["p_value"] <= 1
    assert f"n = {res['n']}" in out and res["trained_now"]
    us = [s["uncertainty"] for s in res["six_shown"]]
    assert us == sorted(us) and len(us) == 6
    index = (tmp_path / "tables" / "index.html").read_text()
    assert index.count("data:image/png;base64,") == 2

    # a rerun loads the cached model instead of training
    cache = next((fig_dir / "model").glob("*.pt"))
    stamp = cache.stat().st_mtime_ns
    assert figures.main(args) == 0
    res = json.loads((fig_dir / "figure1_spearman.json").read_text())
    assert not res["trained_now"] and cache.stat().st_mtime_ns == stamp


def test_figure_command_bad_input(tmp_path, capsys):
    assert figures.main(["--data-root", str(tmp_path), "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST not found") and err.count("\n") == 1
    assert figures.main(["--subset", "3", "--data-root", str(tmp_path)]) == 2
    assert "error: --subset must be at least 6" in capsys.readouterr().err


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
