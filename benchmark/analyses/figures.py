"""Figures 1 and 2 of Kim (CVPR 2022): uncertainty vs how non-Gaussian the true posterior is.

`python -m benchmark.analyses.figures --data-root ../shared/data` trains a GPVAE with a 2-D latent on MNIST
(or loads it from RESULTS/figures/model/, keyed by its training settings, so reruns are instant),
then writes under RESULTS/figures/:

- figure1.png: six test inputs in increasing order of the uncertainty score
  Tr V(f(x)|D) + Tr V(h(x)|D) (evenly spaced ranks of the evaluated subset, lowest to highest).
  Top: the true posterior p(z|x) on a grid (filled contours of log p(z|x)), the base encoder
  N(b(x), c(x)^2) (red) and the marginalised q(z|x) of eq. 12 (blue) as 1- and 2-sigma ellipses.
  Bottom: the input and its reconstruction (the decoder's mean at the mean of q(z|x)).
- figure2.png: the lowest- and highest-uncertainty of those inputs, zoomed on the posterior.
- figure1_spearman.json: beyond the paper, the Spearman correlation over the first `--subset`
  test images between the uncertainty score and KL(p(z|x) || its moment-matched Gaussian), both
  computed on a grid (benchmark/analyses/grid_posterior.py), with its p-value and n.

The training split and seed follow benchmark.run (split 0, restart 0); the settings are this
command's options, not a profile's.
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

import torch
from scipy import stats

from .. import datasets, factory
from ..index_page import write_index
from ..keys import RunKey
from ..run import split_indices
from ..specs import load_dataset_settings
from ..store import ResultsStore, write_json_atomic
from ..train import save_atomic, train
from .grid_posterior import (
    grid_log_joint,
    kl_to_moment_matched,
    make_grid,
    normalise,
    refined_posterior,
)

log = logging.getLogger("gpvae_bench")
METHOD, DATASET, LATENT_DIM = "gpvae", "mnist", 2
N_SHOWN = 6


@dataclass(frozen=True)
class FigureSettings:
    epochs: int = 6
    train_size: int | None = 10000
    val_size: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    subset: int = 300  # test images for the Spearman correlation (and to pick the six from)
    grid: int = 81  # points per axis of the shared coarse grid that locates each posterior
    zoom_grid: int = 25  # points per axis of each image's zoomed grids (2 zoom levels)
    fine_grid: int = 121  # per-image grid points per axis for the plotted posteriors

    def training_dict(self) -> dict:
        keep = ("epochs", "train_size", "val_size", "batch_size", "lr")
        return {"method": METHOD, "dataset": DATASET, "dim": LATENT_DIM,
                **{k: v for k, v in asdict(self).items() if k in keep}}


def _key() -> RunKey:
    return RunKey("figures", "figure1", DATASET, LATENT_DIM, METHOD, "default", 0, 0)


def build_model(data: datasets.ImageData, num_train: int, seed: int):
    """The figure's model, untrained, by the one model factory (benchmark.factory)."""
    model, _ = factory.build_model(METHOD, {}, settings=load_dataset_settings(DATASET),
                                   image_shape=data.image_shape, likelihood=data.likelihood,
                                   latent_dim=LATENT_DIM, num_train=num_train, seed=seed)
    return model


def train_or_load(data: datasets.ImageData, fs: FigureSettings, results_dir: Path, device):
    """The trained model, from the cache when one with the same training settings exists."""
    config = fs.training_dict()
    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    path = ResultsStore(results_dir).figures_dir() / "model" / f"{METHOD}-{DATASET}-d{LATENT_DIM}-{tag}.pt"
    key = _key()
    train_idx, val_idx = split_indices(len(data.train), data.val_fraction, key.split_seed)
    train_idx = train_idx if fs.train_size is None else train_idx[: fs.train_size]
    model = build_model(data, len(train_idx), key.init_seed).to(device)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location=device)["model"])
        log.info("loaded cached model %s", path)
        return model.eval(), path, False
    start = time.perf_counter()
    fit = train(model, data.train[train_idx], data.train[val_idx[: fs.val_size]],
                to_input=lambda im: data.to_float(im).to(device), epochs=fs.epochs,
                batch_size=fs.batch_size, lr=fs.lr, eval_batch_size=256, patience=None,
                seed=key.init_seed)
    save_atomic(path, {"model": model.state_dict(), "config": config, "fit": fit,
                       "train_seconds": time.perf_counter() - start})
    log.info("trained in %.0fs, cached as %s", time.perf_counter() - start, path)
    return model.eval(), path, True


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


def make_figures(data: datasets.ImageData, fs: FigureSettings, results_dir: Path,
                 device: str = "cpu") -> dict:
    out_dir = ResultsStore(results_dir).figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, cache, trained = train_or_load(data, fs, Path(results_dir), device)
    images = data.test[: fs.subset]
    x = data.to_float(images).to(device)
    summ = encoder_summaries(model, x)

    lo, hi = shared_box(summ)
    points, _, _, area = make_grid(lo, hi, fs.grid)
    log_mass, zoomed, zoomed_area = refined_posterior(model, x, points, area, fs.zoom_grid)
    kl = kl_to_moment_matched(log_mass, zoomed, zoomed_area)
    rho = stats.spearmanr(summ["uncertainty"].numpy(), kl.numpy())

    panels = []
    for i in pick_six(summ["uncertainty"]):
        row = {k: v[i] for k, v in summ.items()}
        flo, fhi = posterior_box(log_mass[i], zoomed[i], row)
        fpts, xs, ys, farea = make_grid(flo, fhi, fs.fine_grid)
        flog_mass, _ = normalise(grid_log_joint(model, x[i : i + 1], fpts), farea)
        with torch.no_grad():
            recon = model.likelihood.mean(model.decoder(row["q_mean"].to(device)[None]))[0]
        panels.append({**row, "xs": xs, "ys": ys, "log_mass": flog_mass[0], "cell_area": farea,
                       "uncertainty": row["uncertainty"].item(),
                       "kl": kl_to_moment_matched(flog_mass, fpts, farea)[0].item(),
                       "image": x[i, 0].cpu(), "recon": recon[0].cpu(), "index": i})
    pngs = plot_figures(panels, out_dir)

    result = {
        "spearman_rho": float(rho.statistic), "p_value": float(rho.pvalue), "n": len(images),
        "what": "Spearman correlation between the GPVAE uncertainty score Tr V(f(x)|D) + "
                "Tr V(h(x)|D) and KL(grid posterior p(z|x) || its moment-matched Gaussian) over "
                f"the first {len(images)} MNIST test images",
        "grid": {"coarse_points_per_axis": fs.grid, "coarse_box": [lo, hi],
                 "zoom_points_per_axis": fs.zoom_grid, "zoom_levels": 2,
                 "median_zoomed_cell_side": zoomed_area.sqrt().median().item()},
        "six_shown": [{"test_index": p["index"], "uncertainty": p["uncertainty"],
                       "kl_to_gaussian": p["kl"]} for p in panels],
        "settings": asdict(fs), "model_cache": str(cache), "trained_now": trained,
        "seconds": time.perf_counter() - start,
    }
    json_path = out_dir / "figure1_spearman.json"
    write_json_atomic(json_path, result)
    write_index(results_dir)
    return {**result, "files": [str(p) for p in [*pngs, json_path]]}


def build_parser() -> argparse.ArgumentParser:
    d = FigureSettings()
    p = argparse.ArgumentParser(prog="python -m benchmark.analyses.figures",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default="data", help="folder holding MNIST/raw (default: data)")
    p.add_argument("--download", action="store_true", help="download MNIST when missing")
    p.add_argument("--results-dir", default="results", help="(default: results)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    for name, help_ in (("epochs", "training epochs"), ("train_size", "training images"),
                        ("val_size", "validation images"), ("batch_size", "batch size"),
                        ("subset", "test images for the Spearman correlation"),
                        ("grid", "points per axis of the shared coarse grid"),
                        ("zoom_grid", "points per axis of each image's zoomed grids"),
                        ("fine_grid", "grid points per axis of each plotted posterior")):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                       help=f"{help_} (default: {getattr(d, name)})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default: {d.lr})")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    fs = FigureSettings(**{k: getattr(args, k) for k in asdict(FigureSettings())})
    for name in ("epochs", "subset", "grid", "zoom_grid", "fine_grid", "batch_size"):
        if getattr(fs, name) < 1 or (name == "subset" and fs.subset < N_SHOWN):
            print(f"error: --{name.replace('_', '-')} must be at least "
                  f"{N_SHOWN if name == 'subset' else 1}", file=sys.stderr)
            return 2
    try:
        data = datasets.load_dataset(DATASET, args.data_root, args.download)
    except datasets.DatasetMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    res = make_figures(data, fs, Path(args.results_dir), args.device)
    print(f"Spearman rho = {res['spearman_rho']:.3f} (p = {res['p_value']:.2g}, n = {res['n']}) "
          "between the uncertainty score and KL(grid posterior || moment-matched Gaussian)")
    print("wrote " + ", ".join(res["files"]) + f" in {res['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
