"""Figures 1 and 2 of Kim (CVPR 2022): uncertainty vs how non-Gaussian the true posterior is, and
a check of the paper's claim that can be trusted (issue 23).

`python -m benchmark.analyses.figures --data-root ../shared/data` trains `--seeds` GPVAEs with a
2-D latent on MNIST, each on its split's full training part for `--epochs` epochs with Adam's lr
annealed to 0 (`--lr-schedule cosine`; or a constant lr with early stopping after `--patience`
epochs without a better validation ELBO), keeping the best validation epoch, or loads them from
RESULTS/figures/model/ (keyed by the training settings, the likelihood and the seed, so reruns only
analyse), and writes under RESULTS/figures/:

- figure1.png: the paper's qualitative picture, from the first model: six test inputs in increasing
  order of the uncertainty score Tr V(f(x)|D) + Tr V(h(x)|D) (evenly spaced ranks of the evaluated
  subset). Top: the true posterior p(z|x) on a grid (filled contours of log p(z|x), 20 nats), the
  base encoder N(b(x), c(x)^2) (red) and the marginalised q(z|x) of eq. 12 (blue) as 1- and 2-sigma
  ellipses. Bottom: the input and its reconstruction (the decoder's mean at the mean of q(z|x)).
- figure2.png: the lowest- and highest-uncertainty of those inputs, zoomed on the posterior.
- figure1_spearman.json: the check. Per model, over the first `--subset` test images, the Spearman
  correlation of the uncertainty score with metrics of the true posterior fixed before looking
  (METRICS; grid and quadrature: benchmark/analyses/grid_posterior.py): the primary, KL(p(z|x) ||
  its moment-matched Gaussian), and secondaries (the base encoder's gap KL(N(b, c^2) || p), the
  reverse KL(moment-matched Gaussian || p), the number of modes on the log scale), each with its
  95% CI and its partial correlation holding |psi_m(x)|^2 + |psi_s(x)|^2 fixed (the deep-kernel
  features' norm, which the score follows where a trunk is dead); the share of inputs on which each
  deep-kernel trunk is dead. Across models, the combined test whose n is the number of models: a
  two-sided one-sample t-test of the per-model Fisher z = atanh(rho) against 0. Its top-level
  spearman_rho (the mean per-model rho of the primary), p_value (that test's two-sided p) and n
  (models) are what benchmark/analyses/claims.py reads; per-model details under `per_seed`.

Model s is split s of the harness (its validation split; benchmark.run.split_indices) with
restart 0 (its init seed and batch order: benchmark.keys.RunKey), built by the one model factory
with the dataset's likelihood (datasets.yaml: a learned sigma_x where the column says so). The
settings are this command's options, not a profile's. docs/figure1.md says how to run it in full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from .. import datasets, factory
from ..aggregate import ALPHA
from ..index_page import write_index
from ..keys import RunKey
from ..profiles import LR_SCHEDULES
from ..run import split_indices
from ..specs import load_dataset_settings
from ..store import ResultsStore, write_json_atomic
from ..train import save_atomic, train
from .claims import n_for_power
from .grid_posterior import (
    count_modes,
    grid_log_joint,
    grid_moments,
    kl_gaussian_to_posterior,
    kl_to_moment_matched,
    make_grid,
    normalise,
    refined_posterior,
)

log = logging.getLogger("gpvae_bench")
METHOD, DATASET, LATENT_DIM = "gpvae", "mnist", 2
N_SHOWN = 6

# The metrics of the true posterior p(z|x), fixed before looking at any result (issue 23): the
# primary decides the verdict; the secondaries are reported beside it. Each is expected to grow
# with the uncertainty score if the paper's claim holds.
PRIMARY = "kl_to_moment_matched"
METRICS = {
    "kl_to_moment_matched": "KL(p(z|x) || N(its mean, its covariance)) on the zoomed grid (primary)",
    "base_encoder_gap": "KL(N(b(x), c(x)^2) || p(z|x)), the base encoder's misfit (16 x 16 "
                        "Gauss-Hermite, log p(x) from the grid)",
    "reverse_kl": "KL(N(moment-matched) || p(z|x)), the reverse KL (16 x 16 Gauss-Hermite)",
    "mode_count": "local maxima of log p(z|x) within 12 nats of its peak on the zoomed grid",
}
COVARIATE = "|psi_m(x)|^2 + |psi_s(x)|^2"
DEAD_RELATIVE = 1e-6  # a trunk is dead on x when |psi(x)|^2 <= this x its mean over the inputs
CI_LEVEL = 0.95
SPEARMAN_VARIANCE = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh rho_s) ~ 1.06 / (n - 3)
RHO_CLIP = 1 - 1e-9  # keeps atanh finite for |rho| = 1
POWER = 0.8  # for the combined test's minimum detectable rho (as benchmark/analyses/claims.py)


@dataclass(frozen=True)
class FigureSettings:
    seeds: int = 5  # models (splits 0 .. seeds - 1): the n of the combined test
    # Our choice (the paper gives no schedule): 20 epochs (16,880 Adam steps) with the lr annealed
    # to 0, so each model ends settled; a constant lr with patience 10 had 2-D models still gaining
    # 10-20 nats an epoch after 4 epochs at 92 s each on a 2-core CPU (docs/figure1.md).
    epochs: int = 20  # planned epochs (at most, with patience)
    lr_schedule: str = "cosine"  # benchmark.train.lr_at_step: "cosine" or "constant"
    patience: int | None = None  # early stop after this many epochs without a better val ELBO
    # A model counts as converged when its best validation ELBO rose by less than plateau_nats over
    # its last plateau_epochs epochs (true of every early stop by patience >= plateau_epochs).
    plateau_epochs: int = 3
    plateau_nats: float = 1.0
    train_size: int | None = None  # None: the split's full training part (54,000 images)
    val_size: int | None = None  # None: the split's full validation part (6,000 images)
    batch_size: int = 64
    lr: float = 1e-3
    subset: int = 300  # test images per model for the correlations (and to pick the six from)
    grid: int = 81  # points per axis of the shared coarse grid that locates each posterior
    zoom_grid: int = 25  # points per axis of each image's zoomed grids (2 zoom levels)
    fine_grid: int = 121  # per-image grid points per axis for the plotted posteriors
    quadrature: int = 16  # Gauss-Hermite points per axis for the KLs from a Gaussian

    def training_dict(self, seed: int) -> dict:
        """What determines model `seed`: its cache key."""
        keep = ("epochs", "patience", "train_size", "val_size", "batch_size", "lr")
        extra = {} if self.lr_schedule == "constant" else {"lr_schedule": self.lr_schedule}
        settings = load_dataset_settings(DATASET)
        return {"method": METHOD, "dataset": DATASET, "dim": LATENT_DIM, "seed": seed,
                "sigma_x": settings.sigma_x,
                "learn_sigma_x": bool(getattr(settings, "learn_sigma_x", False)),
                **{k: v for k, v in asdict(self).items() if k in keep}, **extra}


def _key(seed: int) -> RunKey:
    return RunKey("figures", "figure1", DATASET, LATENT_DIM, METHOD, "default", seed, 0)


def build_model(data: datasets.ImageData, num_train: int, seed: int):
    """The figure's model, untrained, by the one model factory (benchmark.factory)."""
    model, _ = factory.build_model(METHOD, {}, settings=load_dataset_settings(DATASET),
                                   image_shape=data.image_shape, likelihood=data.likelihood,
                                   latent_dim=LATENT_DIM, num_train=num_train, seed=seed)
    return model


def train_or_load(data: datasets.ImageData, fs: FigureSettings, results_dir: Path, device,
                  seed: int = 0):
    """(model, cache path, its training summary, trained now?): model `seed`, from the cache when
    one with the same settings exists; else trained (resumable: a checkpoint beside the cache)."""
    config = fs.training_dict(seed)
    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    model_dir = ResultsStore(results_dir).figures_dir() / "model"
    path = model_dir / f"{METHOD}-{DATASET}-d{LATENT_DIM}-s{seed}-{tag}.pt"
    key = _key(seed)
    train_idx, val_idx = split_indices(len(data.train), data.val_fraction, key.split_seed)
    train_idx = train_idx if fs.train_size is None else train_idx[: fs.train_size]
    val_idx = val_idx if fs.val_size is None else val_idx[: fs.val_size]
    model = build_model(data, len(train_idx), key.init_seed).to(device)
    if path.exists():
        saved = torch.load(path, map_location=device)
        model.load_state_dict(saved["model"])
        log.info("model %d: loaded cached %s", seed, path)
        return model.eval(), path, saved.get("fit", {}), False
    start = time.perf_counter()
    checkpoint = path.with_suffix(".ckpt")
    fit = train(model, data.train[train_idx], data.train[val_idx],
                to_input=lambda im: data.to_float(im).to(device), epochs=fs.epochs,
                batch_size=fs.batch_size, lr=fs.lr, eval_batch_size=256, patience=fs.patience,
                seed=key.init_seed, checkpoint=checkpoint, checkpoint_tag=tag,
                lr_schedule=fs.lr_schedule)
    fit = {**fit, "train_seconds": time.perf_counter() - start,
           "stopped_early": fit["epochs_run"] < fs.epochs}
    save_atomic(path, {"model": model.state_dict(), "config": config, "fit": fit})
    checkpoint.unlink(missing_ok=True)
    log.info("model %d: trained %d epochs (best %d) in %.0fs, cached as %s", seed,
             fit["epochs_run"], fit["best_epoch"], fit["train_seconds"], path)
    return model.eval(), path, fit, True


def training_summary(fit: dict, fs: FigureSettings) -> dict:
    """What the JSON and --train-only report of a model's training: its fit and convergence()."""
    return {**{k: fit.get(k) for k in ("epochs_run", "best_epoch", "best_val_elbo", "stopped_early",
                                       "train_seconds")}, **convergence(fit, fs)}


def convergence(fit: dict, fs: FigureSettings) -> dict:
    """How settled a model's training ended: the rise of its best validation ELBO over its last
    `plateau_epochs` epochs, and whether that is below `plateau_nats` (None without a history)."""
    vals = [h["val_elbo"] for h in fit.get("history") or []]
    if len(vals) <= fs.plateau_epochs:
        return {"last_epochs_gain": None, "converged": None, "val_elbo_by_epoch": vals}
    gain = max(vals) - max(vals[: -fs.plateau_epochs])
    return {"last_epochs_gain": gain, "converged": gain < fs.plateau_nats,
            "val_elbo_by_epoch": vals}


@torch.no_grad()
def encoder_summaries(model, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """Uncertainty score, base encoder (b, c) and marginalised q (mean, var) per image, through
    the plugin protocol (EncoderModel.uncertainty and .gaussian_views)."""
    parts: dict[str, list] = {k: [] for k in ("uncertainty", "b", "c", "q_mean", "q_var")}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        views = model.gaussian_views(xb)
        (b, base_var), (q_mean, q_var) = views["base"], views["q"]
        for k, v in (("uncertainty", model.uncertainty(xb)), ("b", b), ("c", base_var.sqrt()),
                     ("q_mean", q_mean), ("q_var", q_var)):
            parts[k].append(v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


@torch.no_grad()
def trunk_features(model, x: torch.Tensor, batch: int = 256) -> dict[str, torch.Tensor]:
    """GPVAE's deep-kernel features psi_m(x), psi_s(x) (the trunks whose outputs the random
    weights W, U multiply), each (B, p)."""
    out: dict[str, list] = {"psi_m": [], "psi_s": []}
    for i in range(0, len(x), batch):
        for name in out:
            out[name].append(getattr(model, name)(x[i : i + batch]).cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def trunk_health(features: dict[str, torch.Tensor]) -> dict:
    """Per trunk: the share of inputs on which it is dead (|psi(x)|^2 at most DEAD_RELATIVE x its
    mean over the inputs: a ReLU trunk gives exact zeros), and how much its features depend on the
    input (summed variance across inputs / mean |psi|^2: 0 for an input-independent trunk); and the
    share of inputs with either trunk dead."""
    dead = {}
    out: dict = {}
    for name, psi in features.items():
        psi = psi.double()
        sq = psi.square().sum(-1)
        dead[name] = sq <= DEAD_RELATIVE * sq.mean()
        mean_sq = sq.mean().item()
        out[name] = {"dead_share": dead[name].double().mean().item(),
                     "input_dependence": (psi.var(0, unbiased=False).sum().item() / mean_sq
                                          if mean_sq > 0 else 0.0)}
    out["either_dead_share"] = torch.stack(list(dead.values())).any(0).double().mean().item()
    return out


def posterior_metrics(model, x: torch.Tensor, summ: dict, fs: FigureSettings):
    """METRICS per image (each (B,)), from the zoomed grid posterior and Gauss-Hermite quadrature;
    also the grid itself (for the six panels) and the coarse box."""
    lo, hi = shared_box(summ)
    points, _, _, area = make_grid(lo, hi, fs.grid)
    post = refined_posterior(model, x, points, area, fs.zoom_grid)
    mean, cov = grid_moments(post.log_mass, post.points, post.area)
    base_tril = torch.diag_embed(summ["c"].double())
    metrics = {
        "kl_to_moment_matched": kl_to_moment_matched(post.log_mass, post.points, post.area),
        "base_encoder_gap": kl_gaussian_to_posterior(
            model, x, summ["b"], base_tril, post.log_evidence, fs.quadrature),
        "reverse_kl": kl_gaussian_to_posterior(
            model, x, mean, torch.linalg.cholesky(cov), post.log_evidence, fs.quadrature),
        "mode_count": count_modes(post.log_mass, fs.zoom_grid).float(),
    }
    return metrics, post, (lo, hi)


def _fisher_z(rho: float) -> float:
    return math.atanh(max(-RHO_CLIP, min(RHO_CLIP, rho)))


def _finite(v: float) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def spearman_with_ci(score: np.ndarray, metric: np.ndarray) -> dict:
    """Spearman rho, its two-sided p and a CI_LEVEL interval (Fisher z with Fieller's variance)."""
    n = len(score)
    if n < 3 or np.ptp(score) == 0 or np.ptp(metric) == 0:  # no correlation to speak of
        return {"rho": None, "p": None, "ci": [None, None], "n": n}
    res = stats.spearmanr(score, metric)
    rho, p = float(res.statistic), float(res.pvalue)
    ci = [None, None]
    if math.isfinite(rho) and n > 3:
        half = stats.norm.ppf(0.5 + CI_LEVEL / 2) * math.sqrt(SPEARMAN_VARIANCE / (n - 3))
        z = _fisher_z(rho)
        ci = [math.tanh(z - half), math.tanh(z + half)]
    return {"rho": _finite(rho), "p": _finite(p), "ci": ci, "n": n}


def partial_spearman(score: np.ndarray, metric: np.ndarray, covariate: np.ndarray) -> dict:
    """Spearman correlation of score and metric holding the covariate fixed: the partial Pearson
    correlation of their ranks, r = (r_sm - r_sc r_mc) / sqrt((1 - r_sc^2)(1 - r_mc^2)), with its
    two-sided p from t = r sqrt((n - 3) / (1 - r^2)) on n - 3 degrees of freedom."""
    ranks = [stats.rankdata(a) for a in (score, metric, covariate)]
    if any(np.ptp(r) == 0 for r in ranks):
        return {"rho": None, "p": None}
    c = np.corrcoef(np.stack(ranks))
    r_sm, r_sc, r_mc = c[0, 1], c[0, 2], c[1, 2]
    denom = math.sqrt(max((1 - r_sc**2) * (1 - r_mc**2), 0.0))
    if denom == 0:
        return {"rho": None, "p": None}
    r = float(np.clip((r_sm - r_sc * r_mc) / denom, -1.0, 1.0))
    df = len(score) - 3
    t = r * math.sqrt(df / max(1 - r * r, 1e-300))
    return {"rho": r, "p": float(2 * stats.t.sf(abs(t), df))}


def combine(rhos: list[float | None]) -> dict:
    """The across-model test: a two-sided one-sample t-test of the per-model Fisher z = atanh(rho)
    against 0 (n = models with a finite rho; df = n - 1); also the mean rho, tanh of the mean z, how
    many are positive, the exact two-sided Wilcoxon signed-rank p (robustness; with 5 models its
    smallest possible p is 0.0625), the smallest mean rho (as tanh of a mean z) the t-test
    detects at ALPHA with probability POWER given the models' spread, and the models that test
    would need for POWER if the mean and spread measured held (claims.n_for_power)."""
    rs = [r for r in rhos if r is not None]
    out = {"n": len(rs), "mean_rho": None, "rho_of_mean_z": None, "mean_z": None, "sd_z": None,
           "t": None, "df": max(len(rs) - 1, 0), "p_two_sided": None, "wilcoxon_p": None,
           "positive": sum(r > 0 for r in rs), "negative": sum(r < 0 for r in rs),
           "mde_rho": None, "models_needed": None, "alpha": ALPHA, "power": POWER}
    if not rs:
        return out
    z = np.array([_fisher_z(r) for r in rs])
    out.update(mean_rho=float(np.mean(rs)), mean_z=float(z.mean()),
               rho_of_mean_z=math.tanh(float(z.mean())))
    if len(rs) >= 2:
        sd = float(z.std(ddof=1))
        out["sd_z"] = sd
        if sd > 0:
            res = stats.ttest_1samp(z, 0.0)
            df = len(rs) - 1
            mde_z = (stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df)) * sd / math.sqrt(len(rs))
            out.update(t=float(res.statistic), p_two_sided=float(res.pvalue),
                       mde_rho=math.tanh(float(mde_z)),
                       models_needed=n_for_power(float(z.mean()), sd, ALPHA, POWER))
        if np.any(z != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(z, alternative="two-sided").pvalue)
    return out


def analyse_model(model, x: torch.Tensor, fs: FigureSettings) -> dict:
    """Everything one model contributes: the per-image arrays and its correlations."""
    summ = encoder_summaries(model, x)
    features = trunk_features(model, x)
    metrics, post, box = posterior_metrics(model, x, summ, fs)
    score = summ["uncertainty"].double().numpy()
    psi_sq = sum(f.double().square().sum(-1) for f in features.values()).numpy()
    correlations = {}
    for name, values in metrics.items():
        v = values.double().numpy()
        correlations[name] = {**spearman_with_ci(score, v),
                              "partial": partial_spearman(score, v, psi_sq),
                              "median": float(np.median(v))}
    score_vs_psi = spearman_with_ci(score, psi_sq)
    return {"summ": summ, "metrics": metrics, "post": post, "box": box,
            "correlations": correlations, "trunks": trunk_health(features),
            "score_vs_psi_norm_rho": score_vs_psi["rho"],
            "mode_share_above_one": float((metrics["mode_count"] > 1).double().mean())}


def shared_box(summ: dict, sds: float = 6.0) -> tuple[list[float], list[float]]:
    """A square box holding every image's q(z|x) and base encoder out to `sds` standard deviations,
    and the prior's bulk [-3, 3]^2: where the posteriors of these images live."""
    lo = torch.minimum(summ["q_mean"] - sds * summ["q_var"].sqrt(), summ["b"] - sds * summ["c"])
    hi = torch.maximum(summ["q_mean"] + sds * summ["q_var"].sqrt(), summ["b"] + sds * summ["c"])
    low = min(lo.min().item(), -3.0)
    high = max(hi.max().item(), 3.0)
    return [low, low], [high, high]


def posterior_box(log_mass: torch.Tensor, points: torch.Tensor, summ_row: dict,
                  sds: float = 4.0) -> tuple[list[float], list[float]]:
    """A square box around where one image's coarse grid posterior has mass (cells within
    e^-12 of its peak) and its two Gaussians (`sds` standard deviations): the plotted window."""
    keep = points[log_mass > log_mass.max() - 12.0]
    lo = torch.minimum(keep.min(0).values, torch.minimum(
        summ_row["q_mean"] - sds * summ_row["q_var"].sqrt(), summ_row["b"] - sds * summ_row["c"]))
    hi = torch.maximum(keep.max(0).values, torch.maximum(
        summ_row["q_mean"] + sds * summ_row["q_var"].sqrt(), summ_row["b"] + sds * summ_row["c"]))
    centre, half = (lo + hi) / 2, ((hi - lo).max() / 2) * 1.1
    return (centre - half).tolist(), (centre + half).tolist()


def pick_six(uncertainty: torch.Tensor) -> list[int]:
    """Indices at evenly spaced ranks of the uncertainty, lowest to highest."""
    order = torch.argsort(uncertainty)
    ranks = torch.linspace(0, len(order) - 1, N_SHOWN).round().long()
    return order[ranks].tolist()


def _ellipse(ax, mean, var, colour, label):
    """1- and 2-sigma contours of a diagonal Gaussian."""
    t = torch.linspace(0, 2 * math.pi, 100)
    mean, sd = mean.tolist(), var.sqrt().tolist()
    for k, style in ((1, "-"), (2, "--")):
        ax.plot((mean[0] + k * sd[0] * torch.cos(t)).numpy(),
                (mean[1] + k * sd[1] * torch.sin(t)).numpy(), style, color=colour, lw=1.2,
                label=label if k == 1 else None)
    ax.plot(mean[0], mean[1], "o", color=colour, ms=3)


def _posterior_panel(ax, panel: dict, title: str):
    n = len(panel["xs"])
    log_density = (panel["log_mass"] - math.log(panel["cell_area"])).reshape(n, n)
    top = log_density.max().item()
    levels = torch.linspace(top - 20.0, top, 21).tolist()  # log scale: 20 nats below the peak
    ax.contourf(panel["xs"].numpy(), panel["ys"].numpy(),
                log_density.clamp(min=top - 20.0).numpy(), levels=levels, cmap="Greys")
    _ellipse(ax, panel["b"], panel["c"].square(), "red", "base N(b, c²)")
    _ellipse(ax, panel["q_mean"], panel["q_var"], "blue", "q(z|x), eq. 12")
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=6)


def _save(fig, legend_ax, legend_size: int, path: Path, title: str) -> Path:
    legend_ax.legend(fontsize=legend_size, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt  # pyplot only after plot_figures chose the Agg backend

    plt.close(fig)
    return path


def plot_figures(panels: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(2, len(panels), figsize=(2.6 * len(panels), 5.0),
                             gridspec_kw={"height_ratios": [2.2, 1]})
    for i, p in enumerate(panels):
        _posterior_panel(axes[0, i], p, f"({'abcdef'[i]}) uncertainty {p['uncertainty']:.3g}\n"
                         f"KL to Gaussian {p['kl']:.3g}")
        pair = torch.cat([p["image"], torch.ones(p["image"].shape[0], 2), p["recon"]], dim=1)
        axes[1, i].imshow(pair.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_axis_off()
        axes[1, i].set_title("input | reconstruction", fontsize=7)
    fig1 = _save(fig, axes[0, 0], 6, out_dir / "figure1.png",
                 "True posterior p(z|x) (log-density contours, 20 nats), base encoder (red) and "
                 "marginalised q(z|x) (blue); uncertainty increases left to right")

    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, p, name in zip(axes, (panels[0], panels[-1]), ("lowest", "highest"), strict=True):
        _posterior_panel(ax, p, f"{name} uncertainty of the six ({p['uncertainty']:.3g})")
    fig2 = _save(fig, axes[0], 7, out_dir / "figure2.png",
                 "True p(z|x) (contours) and two approximations: base encoder (red), "
                 "marginalised q(z|x) (blue)")
    return [fig1, fig2]


def six_panels(model, x: torch.Tensor, analysis: dict, fs: FigureSettings) -> list[dict]:
    """The paper's qualitative picture from one model: six inputs at evenly spaced ranks of the
    uncertainty, each with its posterior on a fine grid around its mass."""
    summ, post = analysis["summ"], analysis["post"]
    panels = []
    for i in pick_six(summ["uncertainty"]):
        row = {k: v[i] for k, v in summ.items()}
        flo, fhi = posterior_box(post.log_mass[i], post.points[i], row)
        fpts, xs, ys, farea = make_grid(flo, fhi, fs.fine_grid)
        flog_mass, _ = normalise(grid_log_joint(model, x[i : i + 1], fpts), farea)
        with torch.no_grad():
            recon = model.likelihood.mean(model.decoder(row["q_mean"].to(x.device)[None]))[0]
        panels.append({**row, "xs": xs, "ys": ys, "log_mass": flog_mass[0], "cell_area": farea,
                       "uncertainty": row["uncertainty"].item(),
                       "kl": kl_to_moment_matched(flog_mass, fpts, farea)[0].item(),
                       "image": x[i, 0].cpu(), "recon": recon[0].cpu(), "index": i})
    return panels


def seed_record(seed: int, analysis: dict, cache: Path, fit: dict, trained: bool, sigma,
                fs: FigureSettings) -> dict:
    """What figure1_spearman.json keeps of one model."""
    return {
        "seed": seed, "split": seed, "restart": 0, "model_cache": str(cache),
        "trained_now": trained, "sigma_x": sigma,
        "training": training_summary(fit, fs),
        "trunks": analysis["trunks"],
        "dead_trunk_share": analysis["trunks"]["either_dead_share"],
        "score_vs_psi_norm_rho": analysis["score_vs_psi_norm_rho"],
        "share_with_two_or_more_modes": analysis["mode_share_above_one"],
        "metrics": analysis["correlations"],
    }


def combined_result(per_seed: list[dict]) -> dict:
    """Across models, per metric: combine() of the per-model rhos and of the partial rhos."""
    out = {}
    for name in METRICS:
        rhos = [s["metrics"][name]["rho"] for s in per_seed]
        partial = [s["metrics"][name]["partial"]["rho"] for s in per_seed]
        out[name] = {**combine(rhos), "partial": combine(partial)}
    return out


def training_text(fs: FigureSettings) -> str:
    if fs.lr_schedule == "constant":
        stop = "" if fs.patience is None else f", early stop after {fs.patience} without a better one"
        return f"Adam at a constant lr {fs.lr:g} for at most {fs.epochs} epochs{stop}"
    return f"{fs.epochs} epochs of Adam, lr {fs.lr:g} annealed to 0 ({fs.lr_schedule})"


def what_text(fs: FigureSettings, n_images: int, n_models: int, converged: int) -> str:
    return (f"Across {n_models} GPVAE models (MNIST, 2-D latent, each trained on its split's "
            f"{'full training part' if fs.train_size is None else f'first {fs.train_size} training images'}"
            f", {training_text(fs)}; {converged} of {n_models} converged: best validation ELBO "
            f"up by less than {fs.plateau_nats:g} nats over the last {fs.plateau_epochs} epochs)"
            ": spearman_rho is the mean over models of the Spearman correlation, "
            f"over the first {n_images} test images, between the uncertainty score Tr V(f(x)|D) + "
            "Tr V(h(x)|D) and the primary metric KL(grid posterior p(z|x) || its moment-matched "
            "Gaussian); p_value is the TWO-SIDED p of a one-sample t-test of the per-model Fisher "
            f"z = atanh(rho) against 0 (n = {n_models} models, df = {n_models - 1}). Secondary "
            "metrics, partial correlations holding the feature norm fixed, dead-trunk shares and "
            "per-model rhos with CIs: `combined`, `per_seed`.")


def make_figures(data: datasets.ImageData, fs: FigureSettings, results_dir: Path,
                 device: str = "cpu") -> dict:
    out_dir = ResultsStore(results_dir).figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    images = data.test[: fs.subset]
    x = data.to_float(images).to(device)
    per_seed, pngs, panels, grid_info = [], [], [], {}
    for seed in range(fs.seeds):
        model, cache, fit, trained = train_or_load(data, fs, Path(results_dir), device, seed)
        analysis = analyse_model(model, x, fs)
        per_seed.append(seed_record(seed, analysis, cache, fit, trained,
                                    float(getattr(model.likelihood, "sigma", float("nan"))), fs))
        primary = analysis["correlations"][PRIMARY]
        log.info("model %d: rho = %.3f [%.3f, %.3f] (p = %.2g), partial %.3f; dead trunk on "
                 "%.0f%% of inputs", seed, primary["rho"] or math.nan,
                 *(c if c is not None else math.nan for c in primary["ci"]),
                 primary["p"] or math.nan, primary["partial"]["rho"] or math.nan,
                 100 * analysis["trunks"]["either_dead_share"])
        if seed == 0:  # the paper's qualitative picture, from the first model
            panels = six_panels(model, x, analysis, fs)
            pngs = plot_figures(panels, out_dir)
            lo, hi = analysis["box"]
            grid_info = {"coarse_points_per_axis": fs.grid, "coarse_box_model_0": [lo, hi],
                         "zoom_points_per_axis": fs.zoom_grid, "zoom_levels": 2,
                         "gauss_hermite_points_per_axis": fs.quadrature,
                         "median_zoomed_cell_side_model_0":
                             analysis["post"].area.sqrt().median().item()}
    combined = combined_result(per_seed)
    primary = combined[PRIMARY]
    converged = sum(bool(s["training"]["converged"]) for s in per_seed)
    result = {
        "spearman_rho": primary["mean_rho"],
        "p_value": primary["p_two_sided"],
        "n": fs.seeds,
        "what": what_text(fs, len(images), fs.seeds, converged),
        "test": "two-sided one-sample t-test of the per-model Fisher z of Spearman's rho against 0; "
                "n = models",
        "sided": "two-sided",
        "mde_rho": primary["mde_rho"],
        "verdict_rule": "contradicted only if the primary is significantly negative across models "
                        "(two-sided p <= alpha and mean rho < 0); reproduced if significantly "
                        "positive; otherwise not decided",
        "primary": PRIMARY,
        "metrics": METRICS,
        "partial_covariate": COVARIATE,
        "combined": combined,
        "per_seed": per_seed,
        "dead_trunk_share": [s["dead_trunk_share"] for s in per_seed],
        "all_converged": converged == fs.seeds,
        "six_shown": [{"test_index": p["index"], "uncertainty": p["uncertainty"],
                       "kl_to_gaussian": p["kl"]} for p in panels],
        "six_from_seed": 0,
        "grid": grid_info,
        "settings": asdict(fs),
        "trained_now": any(s["trained_now"] for s in per_seed),
        "seconds": time.perf_counter() - start,
    }
    json_path = out_dir / "figure1_spearman.json"
    write_json_atomic(json_path, _json_safe(result))
    write_index(results_dir)
    return {**result, "files": [str(p) for p in [*pngs, json_path]]}


def _json_safe(obj):
    """NaN and infinities as null (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def train_only(data: datasets.ImageData, fs: FigureSettings, results_dir: Path, device: str,
               seeds: list[int]) -> list[dict]:
    """Train (or find cached) the given models and stop: several processes can train the models
    of one check at the same time; the full command then finds them all in the cache."""
    out = []
    for seed in seeds:
        _, cache, fit, trained = train_or_load(data, fs, Path(results_dir), device, seed)
        summary = training_summary(fit, fs)
        del summary["val_elbo_by_epoch"]  # one JSON line per model
        out.append({"seed": seed, "cache": str(cache), "trained_now": trained, **summary})
    return out


def build_parser() -> argparse.ArgumentParser:
    d = FigureSettings()
    p = argparse.ArgumentParser(prog="python -m benchmark.analyses.figures",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="data", help="folder holding MNIST/raw (default: data)")
    p.add_argument("--download", action="store_true", help="download MNIST when missing")
    p.add_argument("--results-dir", default="results", help="(default: results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--train-only", metavar="SEEDS", default=None,
                   help="comma-separated model seeds (e.g. 0,2,4): train or find them in the "
                   "cache, then stop (to train the models in parallel processes)")
    for name, help_ in (("seeds", "models (splits 0..seeds-1): the n of the combined test"),
                        ("epochs", "training epochs (at most, with --patience)"),
                        ("plateau_epochs", "epochs over which a converged model's best "
                         "validation ELBO rose by less than --plateau-nats"),
                        ("batch_size", "batch size"),
                        ("subset", "test images for the correlations"),
                        ("grid", "points per axis of the shared coarse grid"),
                        ("zoom_grid", "points per axis of each image's zoomed grids"),
                        ("fine_grid", "grid points per axis of each plotted posterior"),
                        ("quadrature", "Gauss-Hermite points per axis for the KLs from a Gaussian")):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                       help=f"{help_} (default: {getattr(d, name)})")
    for name, help_ in (("train_size", "training images"), ("val_size", "validation images")):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"{help_} (default: all of the split's)")
    p.add_argument("--patience", type=int, default=d.patience,
                   help="early stop after this many epochs without a better validation ELBO "
                   "(default: none)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help=f"Adam's lr over the run (benchmark.train.lr_at_step; default: "
                   f"{d.lr_schedule})")
    p.add_argument("--plateau-nats", type=float, default=d.plateau_nats,
                   help=f"see --plateau-epochs (default: {d.plateau_nats:g})")
    return p


MINIMUM = {"seeds": 1, "epochs": 1, "patience": 1, "plateau_epochs": 1, "plateau_nats": 0,
           "batch_size": 1, "subset": N_SHOWN, "grid": 3,
           "zoom_grid": 3, "fine_grid": 3, "quadrature": 1, "train_size": 1, "val_size": 1}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    fs = FigureSettings(**{k: getattr(args, k) for k in asdict(FigureSettings())})
    for name, least in MINIMUM.items():
        value = getattr(fs, name)
        if value is not None and value < least:
            print(f"error: --{name.replace('_', '-')} must be at least {least}", file=sys.stderr)
            return 2
    seeds = None
    if args.train_only is not None:
        try:
            seeds = [int(s) for s in args.train_only.split(",") if s.strip()]
        except ValueError:
            seeds = []
        if not seeds or min(seeds) < 0:
            print("error: --train-only takes model seeds such as 0,2,4", file=sys.stderr)
            return 2
    try:
        data = datasets.load_dataset(DATASET, args.data_root, args.download)
    except datasets.DatasetMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # subnormal floats slow GPVAE's CPU steps (benchmark.run)
    if seeds is not None:
        for row in train_only(data, fs, Path(args.results_dir), args.device, seeds):
            print(json.dumps(row))
        return 0
    res = make_figures(data, fs, Path(args.results_dir), args.device)
    print(f"Figure 1 check over n = {res['n']} models: mean Spearman rho = "
          f"{_fmt(res['spearman_rho'])} (two-sided p = {_fmt(res['p_value'], '.2g')}, t-test of "
          "the per-model Fisher z) between the uncertainty score and KL(grid posterior || "
          "moment-matched Gaussian)")
    for s in res["per_seed"]:
        m = s["metrics"][PRIMARY]
        print(f"  model {s['seed']}: rho = {_fmt(m['rho'])} [{_fmt(m['ci'][0])}, {_fmt(m['ci'][1])}]"
              f", partial {_fmt(m['partial']['rho'])}; dead trunk on "
              f"{100 * s['dead_trunk_share']:.0f}% of inputs; "
              f"{'converged' if s['training']['converged'] else 'NOT converged'} (best validation "
              f"ELBO +{_fmt(s['training']['last_epochs_gain'], '.2f')} over the last "
              f"{fs.plateau_epochs} epochs, {s['training']['epochs_run']} run)")
    print("wrote " + ", ".join(res["files"]) + f" in {res['seconds']:.0f}s")
    return 0


def _fmt(v, spec: str = ".3f") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec)


if __name__ == "__main__":
    sys.exit(main())
