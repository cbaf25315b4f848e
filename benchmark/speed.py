"""Per-batch test-time inference time of each method, measured in one run on the same batch.

    python -m benchmark.speed --data-root ../shared/data [--dims 10,20,50,100] [--device cuda]

Inference is `model.infer(x)`: q(z|x)'s parameters and one sample, as in the paper's Table 3.
Times are medians over repeats after warm-up; CUDA is synchronised around each call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

from .datasets import load_dataset


def time_call(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn() over `repeats` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--dims", default="10,20,50,100")
    p.add_argument("--methods", default="vae,gpvae")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    data = load_dataset("mnist", args.data_root)
    x = data.to_float(data.test[: args.batch_size]).to(device)
    net = NetConfig(data.image_shape, 3, 256)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {where}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {len(x)} MNIST test images; median of {args.repeats} calls")
    methods = args.methods.split(",")
    print(f"{'dim':>4} " + " ".join(f"{m + ' ms':>10}" for m in methods) + "   ratios to "
          + methods[0])
    for dim in [int(d) for d in args.dims.split(",")]:
        times = []
        for name in methods:
            torch.manual_seed(0)
            model = get_method(name).build({}, net=net, latent_dim=dim,
                                           likelihood=GaussianLikelihood(0.1), num_train=54000)
            model.to(device).eval()
            with torch.no_grad():
                times.append(time_call(lambda m=model: m.infer(x), device, args.repeats))
        ratios = " ".join(f"{t / times[0]:.2f}" for t in times[1:])
        print(f"{dim:>4} " + " ".join(f"{t * 1e3:>10.2f}" for t in times) + f"   {ratios}")


if __name__ == "__main__":
    main()
