"""What a training step of every Table 1 and Table 4 family costs, against the VAE's, and what that
makes a sweep cost on this machine.

    python -m benchmark.analyses.training_cost [--dims 10,20,50] [--batch-size 64] [--steps 20]
        [--threads 1] [--precision fp32,bf16] [--families vae,gpvae,...] [--dataset mnist]
        [--data-root DIR] [--device cpu|cuda] [--json PATH]

One process, one batch of `--batch-size` training images of `--dataset` (its networks and
likelihood; MNIST by default). For every dim(z), family and precision, a model is built by the
one model factory (seed 0) with its fused Adam (benchmark.train.make_optimizer), and one training
step is the trainer's own (benchmark.train.make_step). Families: the first variant of each
method in Table 1 and Table 4 (VAE, SA(1), IAF(1), HF(1), ME(2), RME(2) in its first stage,
GPVAE, VLAE(2)), and "GPVAE floor": `GPVAE.training_floor()`, a model whose step is the least a
GPVAE step must do (its three networks and the decoder, forward and backward, the quadratic forms'
matmuls at their fewest multiply-adds and Adam over as many covariance entries; methods/gpvae.py).

Timing: after `--warmup` steps of each, the steps are interleaved round by round (one step of
every model per round, the order rotated each round), so that drift of a shared machine (other
processes, clock, memory) hits every family alike; each family's figure is the median of its
`--steps` timed steps (CUDA synchronised around each). A family whose warm-up step takes longer than
`--slow-ms` (VLAE on a CPU: seconds) is warmed up once and timed in the first `--slow-steps` rounds
only. Ratios are to the VAE's median in the same precision. Subnormal floats are flushed to zero
in this process (torch.set_flush_denormal(True)), as in training runs (benchmark.run).

`--precision fp32,bf16` times each model both ways: bf16 is the trainer's autocast to bfloat16
around the forward pass and loss, with a method's `fp32_modules` kept out of it (backward and Adam
outside it, parameters in fp32; benchmark.train.autocast_step). On a CPU without fast bf16
(benchmark.train.FAST_BF16_CPU_FLAGS) it is emulated, and the output says so; training refuses it
there, this benchmark times it.

Projected wall time: the cost model of benchmark/estimate.py (per-image costs, a local sweep's
runs longest first on min(jobs, cores) slots, one thread each) fed with these steps in place of
its records: a run's seconds per training image and epoch = the family's step / batch size (its
other variants scaled as estimate.py scales them: vae + (family - vae) (n / first)^0.5); the
dims measured stand for themselves (others: the median over those measured); evaluation (IWAE,
K per profile) from estimate.py's fallback per image and sample, scaled by this machine's VAE
step against the fallback's VAE figure. Not counted: the validation ELBO after each epoch, RME's
later stages (more components), a batch size other than the one measured. The sweeps: the
`claims` profile's VAE and GPVAE on MNIST at 3 dims x 3 splits (docs/claims-profile.md:
measured 93 CPU-minutes, 47 minutes packed on 2 cores), the `claims` profile's whole Table 1 on
MNIST, and the `paper` profile's Table 1 (3,960 runs), on `--jobs` (default: every core) slots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

from methods import get_method
from methods.registry import display_name

from .. import estimate
from ..datasets import DatasetMissing, load_dataset
from ..keys import RunKey
from ..profiles import load_profile
from ..specs import Row, load_dataset_settings, load_table_spec
from ..tasks import RunTask
from ..timing import device_name
from ..train import FAST_BF16_CPU_FLAGS, cpu_bf16_features, make_optimizer, make_step
from .speed import DEFAULT_DATA_ROOT, build

# a precision's autocast dtype (benchmark.train.make_step); bf16 is timed even where the CPU has no
# bf16 instructions (emulated; the output says so), where training (benchmark.train) refuses it
STEP_DTYPE = {"fp32": None, "bf16": torch.bfloat16}
PRECISIONS = tuple(STEP_DTYPE)
FLOOR = "gpvae-floor"  # the key of GPVAE's training floor among the families
BASELINE = "vae"
# (label, profile, table, datasets or None for the table's, methods or None for every row)
SWEEPS = (
    ("claims, Table 1, MNIST, VAE + GPVAE", "claims", "1", ("mnist",), ("vae", "gpvae")),
    ("claims, Table 1, MNIST, every row", "claims", "1", ("mnist",), None),
    ("paper, Table 1 (MNIST + OMNIGLOT)", "paper", "1", None, None),
)


def table_families(tables=("1", "4")) -> list[Row]:
    """The first row of each method in Tables 1 and 4, in the order they first appear."""
    rows: dict[str, Row] = {}
    for table in tables:
        for row in load_table_spec(table).rows:
            rows.setdefault(row.method, row)
    return list(rows.values())


def family_label(row: Row) -> str:
    return display_name(get_method(row.method).label, row.param_dict)


def bf16_note(device: torch.device) -> str:
    """One line on whether this device has bf16 arithmetic."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return f"bf16: {device_name(device)} {'supports' if ok else 'does not support'} bf16"
    if have := sorted(cpu_bf16_features()):
        return f"bf16: this CPU reports {' and '.join(have)}"
    return (f"bf16: this CPU reports none of {', '.join(sorted(FAST_BF16_CPU_FLAGS))}: autocast to "
            "bf16 runs without bf16 hardware (emulated; slower than fp32 is expected)")


@dataclasses.dataclass
class Timed:
    dim: int
    family: str  # a method name, or FLOOR
    label: str
    precision: str
    step: object
    times: list = dataclasses.field(default_factory=list)
    budget: int = 0  # timed steps it gets

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times)


def build_timed(rows, dims, precisions, settings, data, device, lr=1e-3) -> list[Timed]:
    """A model, optimiser and step for every (dim, family, precision), GPVAE's floor after GPVAE."""
    out = []
    for dim in dims:
        for row in rows:
            for precision in precisions:
                model = build(row.method, row.param_dict, settings, data, dim, device).train()
                model.on_epoch_start(0, 1)  # RME: its first stage
                label = family_label(row)
                out.append(Timed(dim, row.method, label, precision,
                                 make_step(model, make_optimizer(model, lr), STEP_DTYPE[precision])))
                if row.method == "gpvae" and hasattr(model, "training_floor"):
                    floor = model.training_floor().to(device).train()
                    out.append(Timed(dim, FLOOR, "GPVAE floor", precision,
                                     make_step(floor, make_optimizer(floor, lr), STEP_DTYPE[precision])))
    return out


def run_steps(timed: list[Timed], x, device, steps: int, warmup: int, slow_ms: float,
              slow_steps: int, progress=None) -> None:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for t in timed:
        last = 0.0
        for _ in range(warmup):
            sync()
            start = time.perf_counter()
            t.step(x)
            sync()
            last = time.perf_counter() - start
            if last * 1e3 > slow_ms:  # one warm-up step is enough for a slow family
                break
        t.budget = min(steps, slow_steps) if last * 1e3 > slow_ms else steps
        if progress:
            progress(f"warm-up: {t.label} d={t.dim} {t.precision}: {last * 1e3:.0f} ms a step")
    for r in range(steps):
        order = timed[r % len(timed):] + timed[: r % len(timed)]
        for t in order:
            if len(t.times) >= t.budget:
                continue
            sync()
            start = time.perf_counter()
            t.step(x)
            sync()
            t.times.append(time.perf_counter() - start)
        if progress:
            progress(f"round {r + 1}/{steps} done")


# ------------------------------------------------------------------ the cost model


def variant_ms(method: str, variant: str, measured: dict, vae_ms: float) -> float | None:
    """ms per step of `method`'s `variant` from its measured first variant (estimate.py's rule)."""
    if method not in measured:
        return None
    ms, first_variant = measured[method]
    n, first = estimate._number(variant), estimate._number(first_variant)
    if n and first and n != first:
        return vae_ms + (ms - vae_ms) * (n / first) ** 0.5
    return ms


def synthetic_costs(per_dim: dict, families: dict, batch: int, datasets) -> list:
    """estimate.MeasuredCost for every row of Tables 1 and 4 at every measured dim, as if records
    had measured these steps. per_dim: {dim: {method: ms}}; families: {method: first variant}."""
    costs = []
    rows = {(r.method, r.variant) for t in ("1", "4") for r in load_table_spec(t).rows}
    for dim, ms_of in per_dim.items():
        vae_ms = ms_of[BASELINE]
        eval_scale = (vae_ms / batch) / estimate.FALLBACK_TRAIN_MS["vae"]
        measured = {m: (ms, families[m]) for m, ms in ms_of.items() if m in families}
        for method, variant in sorted(rows):
            ms = variant_ms(method, variant, measured, vae_ms)
            if ms is None:
                continue
            eval_ms = estimate.FALLBACK_EVAL_MS * eval_scale * (
                estimate.VLAE_EVAL_RATIO if method == "vlae" else 1.0)
            for ds in datasets:
                costs.append(estimate.MeasuredCost(method, variant, ds, dim, "cpu",
                                                   ms / batch / 1e3, eval_ms / 1e3))
    return costs


def sweep_tasks(profile_name: str, table: str, datasets, methods) -> list[RunTask]:
    profile, spec = load_profile(profile_name), load_table_spec(table)
    tasks = []
    for ds in datasets or spec.datasets:
        settings = load_dataset_settings(ds)
        for dim in spec.dims:
            for row in spec.rows:
                if methods is not None and row.method not in methods:
                    continue
                for split in range(profile.splits):
                    for restart in range(profile.restarts):
                        key = RunKey(profile.name, spec.name, ds, dim, row.method, row.variant,
                                     split, restart)
                        tasks.append(RunTask(key, row.params, profile, settings, "", ""))
    return tasks


def projections(per_dim: dict, families: dict, batch: int, jobs: int) -> list[dict]:
    """Per sweep of SWEEPS: runs, CPU-hours, wall hours on `jobs` slots, runs without a figure."""
    out = []
    for label, profile, table, datasets, methods in SWEEPS:
        tasks = sweep_tasks(profile, table, datasets, methods)
        names = sorted({t.key.dataset for t in tasks})
        costs = synthetic_costs(per_dim, families, batch, names)
        sweep = estimate.estimate_sweep(tasks, "", jobs=jobs, costs=costs)
        # only what these steps give: a run of a family not timed has no figure (estimate.py
        # would fall back on its own table)
        sweep = dataclasses.replace(sweep, runs={
            k: e if re.match(r"\d+ records? on ", e.source) else estimate.RunEstimate(None, "not timed")
            for k, e in sweep.runs.items()})
        known = sweep.known
        out.append({"sweep": label, "runs": len(tasks), "cpu_hours": sum(known) / 3600,
                    "wall_hours": sweep.wall_seconds / 3600, "workers": sweep.workers,
                    "without_figure": len(tasks) - len(known)})
    return out


# ------------------------------------------------------------------ report


def hours(h: float) -> str:
    return estimate.duration(h * 3600)


def report(timed: list[Timed], dims, precisions, labels: dict, jobs: int, batch: int,
           families: dict) -> dict:
    """Print the tables; return the figures (what --json writes)."""
    by = {(t.dim, t.family, t.precision): t for t in timed}
    methods = [m for m in labels if m != FLOOR]
    has_floor = FLOOR in labels
    result = {"ms": {}, "steps": {}, "ratio_to_vae": {}, "projections": {}}
    for precision in precisions:
        cols = [labels[m] for m in methods if m != BASELINE]
        head = ["dim(z)", f"{labels[BASELINE]} ms", *cols]
        if has_floor:
            head += ["GPVAE floor", "GPVAE / floor"]
        print(f"\n{precision}: ms per step of the {labels[BASELINE]}, every other family as a "
              f"multiple of it")
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("--:" for _ in head) + "|")
        for dim in dims:
            vae = by[(dim, BASELINE, precision)].median_ms
            cells = [str(dim), f"{vae:.1f}"]
            for m in (*methods, *((FLOOR,) if has_floor else ())):
                t = by[(dim, m, precision)]
                key = f"{precision}/d{dim}/{m}"
                result["ms"][key] = t.median_ms
                result["steps"][key] = len(t.times)
                result["ratio_to_vae"][key] = t.median_ms / vae
                if m != BASELINE:
                    cells.append(f"x{t.median_ms / vae:.2f}")
            if has_floor:
                gpvae, floor = by[(dim, "gpvae", precision)], by[(dim, FLOOR, precision)]
                cells.append(f"x{gpvae.median_ms / floor.median_ms:.2f}")
            print("| " + " | ".join(cells) + " |")
    if len(precisions) > 1:
        base, other = precisions[0], precisions[1]
        print(f"\n{other} against {base}: {base} ms / {other} ms per step (above 1: {other} is faster)")
        every = [*methods, *((FLOOR,) if has_floor else ())]
        head = ["dim(z)", *(labels[m] for m in every)]
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("--:" for _ in head) + "|")
        for dim in dims:
            cells = [str(dim)] + [f"{by[(dim, m, base)].median_ms / by[(dim, m, other)].median_ms:.2f}"
                                  for m in every]
            print("| " + " | ".join(cells) + " |")
    if BASELINE in families:
        print(f"\nprojected on this machine ({jobs} run(s) at once, one thread each; "
              "benchmark/estimate.py's cost model with these steps, see --help):")
        head = ["sweep", "runs", *(f"{p} CPU time" for p in precisions),
                *(f"{p} wall time" for p in precisions)]
        print("| " + " | ".join(head) + " |")
        print("|:--|" + "|".join("--:" for _ in head[1:]) + "|")
        per_precision = {}
        for precision in precisions:
            per_dim = {dim: {m: by[(dim, m, precision)].median_ms for m in methods}
                       for dim in dims}
            per_precision[precision] = projections(per_dim, families, batch, jobs)
            result["projections"][precision] = per_precision[precision]
        for i, (label, *_rest) in enumerate(SWEEPS):
            rows = [per_precision[p][i] for p in precisions]
            missing = max(r["without_figure"] for r in rows)
            note = f" ({missing} runs without a figure)" if missing else ""
            print(f"| {label}{note} | {rows[0]['runs']:,} | "
                  + " | ".join(hours(r["cpu_hours"]) for r in rows) + " | "
                  + " | ".join(hours(r["wall_hours"]) for r in rows) + " |")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.analyses.training_cost",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--dims", default="10,20,50", help="latent sizes (default: 10,20,50)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64, "
                   "the claims profile's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per family (default: 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    p.add_argument("--slow-ms", type=float, default=2000.0,
                   help="a family whose warm-up step takes longer is timed in --slow-steps rounds")
    p.add_argument("--slow-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, bf16 (default: fp32)")
    p.add_argument("--families", default=None,
                   help="methods to time (default: every family of Tables 1 and 4); the VAE always")
    p.add_argument("--dataset", default="mnist", help="a column of specs/datasets.yaml (default: mnist)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help=f"folder holding the data (default: $GPVAE_BENCH_DATA or {DEFAULT_DATA_ROOT})")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at once for the projected wall time (default: every core)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    try:
        dims = [int(d) for d in args.dims.split(",")]
        precisions = [s.strip() for s in args.precision.split(",") if s.strip()]
        if bad := [s for s in precisions if s not in PRECISIONS]:
            raise ValueError(f"--precision {','.join(bad)}: choose from {', '.join(PRECISIONS)}")
        if not precisions or len(set(precisions)) < len(precisions):
            raise ValueError("--precision: name fp32 and/or bf16 once each")
        if min(dims) < 1 or args.batch_size < 1 or args.steps < 1 or args.warmup < 0 or (
                args.threads is not None and args.threads < 1) or (args.jobs or 1) < 1:
            raise ValueError("--dims, --batch-size, --steps, --threads and --jobs must be positive")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
        rows = table_families()
        if args.families:
            wanted = {BASELINE, *(f.strip() for f in args.families.split(",") if f.strip())}
            if unknown := wanted - {r.method for r in rows}:
                raise ValueError(f"--families: {', '.join(sorted(unknown))} not in Tables 1 and 4 "
                                 f"({', '.join(r.method for r in rows)})")
            rows = [r for r in rows if r.method in wanted]
        settings = load_dataset_settings(args.dataset)
        data = load_dataset(settings.loader(args.dataset), args.data_root)
    except (ValueError, RuntimeError, KeyError, DatasetMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    flushed = torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    x = data.to_float(data.train[: args.batch_size]).to(device)
    jobs = args.jobs or os.cpu_count() or 1
    print(f"training_cost: one training step as the trainer takes it (loss(x), backward, fused "
          f"Adam) on a batch of {len(x)} {args.dataset} training images; device {device.type}: "
          f"{device_name(device)}; "
          f"{torch.get_num_threads()} thread(s); torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("flush-to-zero: " + ("on (torch.set_flush_denormal(True), as in training runs)" if flushed
                               else "not supported on this CPU: subnormal floats are kept"))
    if "bf16" in precisions:
        print(bf16_note(device) + "; bf16 = the trainer's autocast(bfloat16) around forward and loss")
    timed = build_timed(rows, dims, precisions, settings, data, device)
    run_steps(timed, x, device, args.steps, args.warmup, args.slow_ms, args.slow_steps,
              progress=lambda line: print(line, file=sys.stderr, flush=True))
    labels = {}
    for t in timed:
        labels.setdefault(t.family, t.label)
    few = sorted({f"{t.label} {t.precision}" for t in timed if len(t.times) < args.steps})
    few = [f"{name}: {args.slow_steps}" for name in few]
    print(f"timed: the median of {args.steps} steps per family"
          + (f" (fewer, being slow: {', '.join(few)})" if few else "")
          + f", interleaved round by round after {args.warmup} warm-up steps")
    families = {r.method: r.variant for r in rows}
    result = report(timed, dims, precisions, labels, jobs, len(x), families)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "dims": dims, "precisions": precisions, "batch_size": len(x), "threads":
            torch.get_num_threads(), "device": device_name(device), "flush_denormal": flushed,
            "families": labels, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
