"""How close GPVAE's test-time inference is to its compute floor, and what a training step costs.

    python -m benchmark.analyses.speed [--data-root DIR] [--dims 10,20,50,100] [--device cuda] [--threads N]
    python -m benchmark.analyses.speed --train [--dims 50] [--dataset binarized_mnist_fc] [--batch-size 32]

What it needs of a method goes through the plugin protocol (methods/base.py): `infer`,
`prepare_inference`, and the optional `reference_moments` and `inference_floor` (GPVAE has them;
`--method` names another method that does, `--baseline` the row the ratios are to). Models are
built by the one model factory (benchmark.factory).

Inference (one run, one batch of 128 test images, MNIST unless `--dataset` names another column of
specs/datasets.yaml, with its networks and likelihood, each dim(z)); every column is a median
over torch.utils.benchmark's blocked_autorange (which synchronises CUDA), after warm-up calls:

1. VAE:   `infer(x)`, q(z|x)'s parameters and one sample;
2. GPVAE: `infer(x)` as implemented, after `prepare_inference()` (covariances formed once);
3. loop:  `reference_moments`: eq. 12 transcribed term by term with a Python loop over latent
          dimensions j, forming Sigma_j = L_j L_j^T and eta_j eta_j^T + Gamma_j from the parameters
          on each call, as a training-time implementation does (the paper's way, footnote 9); tests
          check it gives GPVAE's numbers;
4. floor: `inference_floor()`: the forward passes of GPVAE's three networks (base encoder, psi_m,
          psi_s) plus one (B, p) x (p, d (p + 1)) matmul, whose B d p (p + 1) multiply-adds are
          those of the two quadratic forms with symmetry used. Nothing of (2) can be cheaper.

It prints the times and the ratios loop / GPVAE and GPVAE / floor. `--train` instead times one
Adam step (the trainer's: benchmark.train.make_step) of the first variant of every registered
method (or `--all-variants`) on the same batch, one method after the other, and prints each
relative to the VAE's. benchmark.analyses.training_cost times the same step with the
families' steps interleaved so that a shared machine's drift hits all alike, at several dims, in
fp32 and bf16, against GPVAE's training floor, and projects what a sweep costs from them.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.utils.benchmark import Timer

from methods import get_method
from methods.registry import display_name, registered_methods

from ..datasets import DatasetMissing, load_dataset
from ..factory import build_model
from ..specs import load_dataset_settings
from ..timing import device_name
from ..train import make_optimizer, make_step

DEFAULT_DATA_ROOT = os.environ.get("GPVAE_BENCH_DATA", "../shared/data")
TARGETS = {"dim": 50, "loop_over_gpvae": 3.0, "gpvae_over_floor": 1.5}


def looped_moments(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) of q(z|x) the straightforward way (the plugin's `reference_moments`)."""
    return model.reference_moments(x)


def looped_infer(model, x: torch.Tensor) -> torch.Tensor:
    mean, var = looped_moments(model, x)
    return mean + var.sqrt() * torch.randn_like(mean)


def median_seconds(fn, device: torch.device, min_run_time: float, warmup: int = 3) -> float:
    """Median seconds per call of fn() (blocked_autorange), after warm-up calls."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def build(name: str, params: dict, settings, data, dim: int, device: torch.device):
    model, _ = build_model(name, params, settings=settings, image_shape=data.image_shape,
                           likelihood=data.likelihood, latent_dim=dim, num_train=54000, seed=0)
    return model.to(device)


def inference_rows(x, settings, data, dims, device, min_run_time, method="gpvae", baseline="vae"):
    """Per dim: (dim, baseline s, method s, loop s, floor s)."""
    rows = []
    for dim in dims:
        base = build(baseline, {}, settings, data, dim, device).eval()
        model = build(method, {}, settings, data, dim, device).eval()
        model.prepare_inference()
        floor = model.inference_floor()
        calls = (lambda: base.infer(x), lambda: model.infer(x),  # noqa: B023 (timed right here)
                 lambda: looped_infer(model, x), lambda: floor(x))  # noqa: B023
        with torch.no_grad():
            times = [median_seconds(fn, device, min_run_time) for fn in calls]
        rows.append((dim, *times))
        print(f"{dim:>4} " + " ".join(f"{t * 1e3:>9.2f}" for t in times)
              + f" {times[2] / times[1]:>11.2f} {times[1] / times[3]:>12.2f}", flush=True)
    return rows


def training_rows(x, settings, data, dim, device, min_run_time, all_variants: bool,
                  baseline: str = "vae"):
    """(label, seconds per Adam step) for each method variant, the baseline first."""
    rows = []
    methods = registered_methods()
    for name, info in sorted(methods.items(), key=lambda item: item[0] != baseline):
        for params in (info.variants if all_variants else info.variants[:1]):
            model = build(name, dict(params), settings, data, dim, device).train()
            model.on_epoch_start(0, 1)
            step = make_step(model, make_optimizer(model, lr=1e-3), None)
            rows.append((display_name(info.label, params),
                         median_seconds(lambda step=step: step(x), device, min_run_time)))
            print(f"{rows[-1][0]:>10} {rows[-1][1] * 1e3:>10.1f}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.analyses.speed",
                                description=__doc__.splitlines()[0])
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
    p.add_argument("--method", default="gpvae",
                   help="the method whose inference is timed against its reference and floor "
                        "(it must implement reference_moments and inference_floor; default: gpvae)")
    p.add_argument("--baseline", default="vae", help="the row ratios are to (default: vae)")
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
        labels = {name: get_method(name).label for name in (args.method, args.baseline)}
        data = load_dataset(settings.loader(args.dataset), args.data_root)
    except (ValueError, RuntimeError, KeyError, DatasetMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    x = data.to_float(data.test[: args.batch_size]).to(device)
    print(f"device {device.type}: {device_name(device)}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; batch of {len(x)} {args.dataset} test images; "
          f"median of blocked_autorange(min_run_time={args.min_time})")
    if args.train:
        print(f"training step (Adam), dim(z) = {dims[0]}\n{'method':>10} {'ms':>10}")
        rows = training_rows(x, settings, data, dims[0], device, args.min_time, args.all_variants,
                             args.baseline)
        ref = rows[0][1]  # the baseline's first variant comes first
        print(f"ratio to {labels[args.baseline]}: "
              + ", ".join(f"{label} {t / ref:.2f}" for label, t in rows))
        return 0
    base, name = labels[args.baseline], labels[args.method]
    print(f"{'dim':>4} {base + ' ms':>9} {name + ' ms':>9} {'loop ms':>9} {'floor ms':>9} "
          f"{'loop/' + name:>11} {name + '/floor':>12}")
    try:
        rows = inference_rows(x, settings, data, dims, device, args.min_time, args.method,
                              args.baseline)
    except NotImplementedError as err:  # the plugin lacks reference_moments or inference_floor
        print(f"error: --method {args.method}: {err}", file=sys.stderr)
        return 2
    for dim, _, gp, loop, floor in rows:
        if dim == TARGETS["dim"]:
            met = loop / gp >= TARGETS["loop_over_gpvae"] and gp / floor <= TARGETS["gpvae_over_floor"]
            print(f"targets at dim {dim}: loop/{name} >= {TARGETS['loop_over_gpvae']} and {name}/floor "
                  f"<= {TARGETS['gpvae_over_floor']}: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
