"""How close GPVAE's test-time inference is to its compute floor, and what a training step costs.

    python -m benchmark.speed [--data-root DIR] [--dims 10,20,50,100] [--device cuda] [--threads N]
    python -m benchmark.speed --train [--dims 50] [--dataset binarized_mnist_fc] [--batch-size 32]

Inference (one run, one batch of 128 test images, MNIST unless `--dataset` names another column of
specs/datasets.yaml, with its networks and likelihood, each dim(z)); every column is a median
over torch.utils.benchmark's blocked_autorange (which synchronises CUDA), after warm-up calls:

1. VAE:   `infer(x)`, q(z|x)'s parameters and one sample;
2. GPVAE: `infer(x)` as implemented, after `prepare_inference()` (covariances formed once);
3. loop:  eq. 12 transcribed term by term with a Python loop over latent dimensions j, forming
          Sigma_j = L_j L_j^T and eta_j eta_j^T + Gamma_j from the parameters on each call, as a
          training-time implementation does (the paper's way, footnote 9). Kept only here, as the
          reference for the ratio; tests check it gives GPVAE's numbers;
4. floor: the forward passes of GPVAE's three networks (base encoder, psi_m, psi_s) plus one
          (B, p) x (p, d (p + 1)) matmul, whose B d p (p + 1) multiply-adds are those of the two
          quadratic forms psi^T Sigma_j psi and psi^T Gamma_j psi with symmetry used (p (p + 1) / 2
          products each per example and dimension). Nothing of (2) can be cheaper than this.

It prints the times and the ratios loop / GPVAE and GPVAE / floor. `--train` instead times one
Adam step (zero_grad, loss(x).backward(), step) of the first variant of every registered method
(or `--all-variants`) on the same batch and prints each relative to the VAE's.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch
from torch.distributions.transforms import LowerCholeskyTransform
from torch.utils.benchmark import Timer

from methods import NetConfig, get_method
from methods.gpvae import VAR_EPS
from methods.likelihoods import make_likelihood
from methods.registry import display_name, registered_methods

from .datasets import DatasetMissing, load_dataset
from .specs import load_dataset_settings
from .train import make_optimizer

DEFAULT_DATA_ROOT = os.environ.get("GPVAE_BENCH_DATA", "../shared/data")
TARGETS = {"dim": 50, "loop_over_gpvae": 3.0, "gpvae_over_floor": 1.5}


def looped_moments(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) of q(z|x) by eq. 12, one latent dimension at a time."""
    b, c = model.base(x)
    pm, ps = model.psi_m(x), model.psi_s(x)
    to_chol = LowerCholeskyTransform()
    means, variances = [], []
    for j in range(model.latent_dim):
        sigma_chol, gamma_chol = to_chol(model.sigma_raw[j]), to_chol(model.gamma_raw[j])
        sigma = sigma_chol @ sigma_chol.T
        eta = model.eta[j]
        scale_cov = torch.outer(eta, eta) + gamma_chol @ gamma_chol.T
        means.append(b[:, j] + pm @ model.mu[j])
        variances.append(c[:, j] ** 2 + 2 * (ps @ eta) * c[:, j] + ((pm @ sigma) * pm).sum(-1)
                         + ((ps @ scale_cov) * ps).sum(-1))
    return torch.stack(means, -1), torch.stack(variances, -1) + VAR_EPS


def looped_infer(model, x: torch.Tensor) -> torch.Tensor:
    mean, var = looped_moments(model, x)
    return mean + var.sqrt() * torch.randn_like(mean)


class GPVAEFloor:
    """The three networks' forward passes plus one matmul with the quadratic forms' flop count."""

    def __init__(self, model):
        p, d = model.psi_m.out_features, model.latent_dim
        ref = model.mu
        self.model = model
        self.weight = torch.randn(p, d * (p + 1), device=ref.device, dtype=ref.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.base(x)
        self.model.psi_s(x)
        return self.model.psi_m(x) @ self.weight


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_seconds(fn, device: torch.device, min_run_time: float, warmup: int = 3) -> float:
    """Median seconds per call of fn() (blocked_autorange), after warm-up calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def build(name: str, params: dict, net: NetConfig, likelihood, dim: int, device: torch.device):
    torch.manual_seed(0)
    return get_method(name).build(params, net=net, latent_dim=dim, likelihood=likelihood,
                                  num_train=54000).to(device)


def inference_rows(x, net, likelihood, dims, device, min_run_time):
    """Per dim: (dim, vae s, gpvae s, loop s, floor s)."""
    rows = []
    for dim in dims:
        vae = build("vae", {}, net, likelihood, dim, device).eval()
        gpvae = build("gpvae", {}, net, likelihood, dim, device).eval()
        gpvae.prepare_inference()
        floor = GPVAEFloor(gpvae)
        calls = (lambda: vae.infer(x), lambda: gpvae.infer(x),  # noqa: B023 (timed right here)
                 lambda: looped_infer(gpvae, x), lambda: floor(x))  # noqa: B023
        with torch.no_grad():
            times = [median_seconds(fn, device, min_run_time) for fn in calls]
        rows.append((dim, *times))
        print(f"{dim:>4} " + " ".join(f"{t * 1e3:>9.2f}" for t in times)
              + f" {times[2] / times[1]:>11.2f} {times[1] / times[3]:>12.2f}", flush=True)
    return rows


def training_rows(x, net, likelihood, dim, device, min_run_time, all_variants: bool):
    """(label, seconds per Adam step) for each method variant, VAE first."""
    rows = []
    methods = registered_methods()
    for name, info in sorted(methods.items(), key=lambda item: item[0] != "vae"):
        for params in (info.variants if all_variants else info.variants[:1]):
            model = build(name, dict(params), net, likelihood, dim, device).train()
            model.on_epoch_start(0, 1)
            opt = make_optimizer(model, lr=1e-3)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                model.loss(x).backward()
                opt.step()

            rows.append((display_name(info.label, params), median_seconds(step, device,
                                                                          min_run_time)))
            print(f"{rows[-1][0]:>10} {rows[-1][1] * 1e3:>10.1f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help=f"folder holding the data (default: $GPVAE_BENCH_DATA or {DEFAULT_DATA_ROOT})")
    p.add_argument("--dataset", default="mnist",
                   help="a table column of specs/datasets.yaml (e.g. binarized_mnist_fc): its test "
                        "images, networks and likelihood (default: mnist)")
    p.add_argument("--dims", default=None, help="latent sizes (default: 10,20,50,100; 50 with --train)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--min-time", type=float, default=1.0,
                   help="seconds of timed calls per measurement (blocked_autorange min_run_time)")
    p.add_argument("--train", action="store_true", help="time training steps instead of inference")
    p.add_argument("--all-variants", action="store_true", help="--train: every variant, not the first")
    args = p.parse_args(argv)
    try:
        dims = [int(d) for d in (args.dims or ("50" if args.train else "10,20,50,100")).split(",")]
        if (args.threads is not None and args.threads < 1) or args.batch_size < 1 or min(dims) < 1:
            raise ValueError("--threads, --batch-size and --dims must be positive")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
        settings = load_dataset_settings(args.dataset)
        data = load_dataset(settings.loader(args.dataset), args.data_root)
    except (ValueError, RuntimeError, DatasetMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    x = data.to_float(data.test[: args.batch_size]).to(device)
    net = settings.net_config(data.image_shape)
    likelihood = make_likelihood(data.likelihood, settings.sigma_x)
    print(f"device {device.type}: {device_name(device)}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; batch of {len(x)} {args.dataset} test images; "
          f"median of blocked_autorange(min_run_time={args.min_time})")
    if args.train:
        print(f"training step (Adam), dim(z) = {dims[0]}\n{'method':>10} {'ms':>10}")
        rows = training_rows(x, net, likelihood, dims[0], device, args.min_time, args.all_variants)
        vae = rows[[label for label, _ in rows].index("VAE")][1]
        print("ratio to VAE: " + ", ".join(f"{label} {t / vae:.2f}" for label, t in rows))
        return 0
    print(f"{'dim':>4} {'VAE ms':>9} {'GPVAE ms':>9} {'loop ms':>9} {'floor ms':>9} "
          f"{'loop/GPVAE':>11} {'GPVAE/floor':>12}")
    rows = inference_rows(x, net, likelihood, dims, device, args.min_time)
    for dim, _, gp, loop, floor in rows:
        if dim == TARGETS["dim"]:
            met = loop / gp >= TARGETS["loop_over_gpvae"] and gp / floor <= TARGETS["gpvae_over_floor"]
            print(f"targets at dim {dim}: loop/GPVAE >= {TARGETS['loop_over_gpvae']} and GPVAE/floor "
                  f"<= {TARGETS['gpvae_over_floor']}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
