"""The GPU checks of issue 25 (section 4) in one command: Table 3's inference times against the
paper's, every family's training step at batch 128, and how many concurrent runs one GPU takes.

    python -m benchmark.analyses.gpu_check [--device cuda] [--data-root DIR] [--out DIR]
        [--budget-s 480] [--parts table3,training,concurrency] [--quick]

From the paper: Table 3's rows, batch of 128, dim(z) = 50 and printed milliseconds
(benchmark/paper/table3.yaml; an RTX 2080 Ti), and the method families of Tables 1 and 4.
Our choices: MNIST only; Table 3 on the first `--t3-images` test images (20 batches) over
`--t3-repeats` passes, not the whole test set over 5 passes, otherwise benchmark/timing.py's code
path (the model factory, `prepare_inference`, `infer` under torch.utils.benchmark.Timer); the
training step, fp32, of benchmark.analyses.training_cost (build_timed, run_steps: interleaved,
median); runs per GPU: `--levels` (1, 4, 8) worker processes, spawned like packed Slurm runs, each
training one model (VAE or GPVAE at d=50, batch 64, the claims profile's batch) on the one device
in the same wall-clock window; throughput = training steps per second summed over the workers; the
suggested runs_per_task is the largest level whose step from the level before gained >= 10%.

The budget (`--budget-s`) is shared by the parts in the ratio 1 : 1 : 2, time a part leaves over
going to the next; a part over its share stops at the next row, round or trial and says so.
Prints a Markdown report; writes it and the figures (gpu_check.md, gpu_check.json) under `--out`.
`--quick` is a tiny setting (d=2, a few steps, levels 1,2) that checks the wiring on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..cluster import DEFAULT_RUNS_PER_GPU
from ..datasets import DatasetMissing, load_dataset
from ..errors import InputError
from ..factory import build_model
from ..paper_tables import load_paper_table
from ..render import md_compact_table
from ..specs import load_dataset_settings, load_table_spec
from ..timing import SEED, device_name, test_batches, time_inference
from ..train import make_optimizer, make_step
from ..yamlio import ConfigError
from .speed import DEFAULT_DATA_ROOT
from .training_cost import BASELINE, build_timed, run_steps, table_families

DATASET = "mnist"
PAPER_DIM = 50  # Table 3's dim(z): the paper's printed times are for it
PARTS = ("table3", "training", "concurrency")
WEIGHTS = {"table3": 1.0, "training": 1.0, "concurrency": 2.0}
GAIN = 0.10  # a level counts when its throughput is at least 10% above the level before it
TRIAL_LEAD_S = 0.25  # workers are told to start this long after the command is sent
# option: (default, --quick's)
SETTINGS = {
    "dim": (50, 2), "t3_batch": (128, 8), "t3_images": (2560, 8), "t3_repeats": (3, 1),
    "train_batch": (128, 4), "train_steps": (20, 2), "warmup": (2, 1), "levels": ("1,4,8", "1,2"),
    "run_batch": (64, 4), "window_s": (20.0, 0.3), "run_families": ("vae,gpvae", "vae,gpvae"),
}
WHERE = ("set it as `runs_per_task: N` in the cluster profile slurm/<cluster>.yaml (top level, or "
         "per family under `overrides: {gpvae: {runs_per_task: N}}`); the default for a GPU profile "
         f"that leaves it unset is DEFAULT_RUNS_PER_GPU in benchmark/cluster.py (today "
         f"{DEFAULT_RUNS_PER_GPU}, an estimate), documented in slurm/example.yaml's runs_per_task "
         "comment and slurm/README.md (Packing)")


class OverBudget(Exception):
    """A part's share of the budget is spent (raised between rounds of run_steps)."""


@dataclasses.dataclass
class Deadline:
    at: float  # time.monotonic()

    def left(self) -> float:
        return self.at - time.monotonic()

    def over(self) -> bool:
        return self.left() <= 0


def shares(total_s: float, parts) -> Callable[[str], Deadline]:
    """deadline(part): the part's share of what is left of the budget when it starts (a part that
    finishes early leaves its time to the ones after it)."""
    start = time.monotonic()

    def deadline(part: str) -> Deadline:
        left = max(0.0, total_s - (time.monotonic() - start))
        later = sum(WEIGHTS[p] for p in parts[parts.index(part):])
        return Deadline(time.monotonic() + left * WEIGHTS[part] / later)

    return deadline


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def fmt(value, spec: str = ".2f", prefix: str = "", missing: str = "-") -> str:
    return missing if value is None else f"{prefix}{value:{spec}}"


# ------------------------------------------------------------------ 1. Table 3 against the paper


def table3(data, settings, device, dim: int, batch: int, images: int, repeats: int,
           deadline: Deadline, progress) -> dict:
    """Every Table 3 row's ms per batch of `infer` (timing.time_inference, one pass a call so the
    budget can stop it between passes) against the paper's MNIST column."""
    spec, paper = load_table_spec("3"), load_paper_table("table3").column(DATASET, PAPER_DIM)
    batches = test_batches(data, images, batch, device)
    rows = []
    for row in spec.rows:
        passes = []
        if not deadline.over():
            model, _ = build_model(row.method, row.param_dict, settings=settings,
                                   image_shape=data.image_shape, likelihood=data.likelihood,
                                   latent_dim=dim, num_train=len(data.train), seed=SEED)
            model = model.to(device)
            while len(passes) < repeats and not (passes and deadline.over()):
                passes += time_inference(model, batches, 1)
            del model
        cell = paper.get((row.method, row.variant))
        rows.append({"row": row.label, "ms": statistics.fmean(passes) if passes else None,
                     "passes": len(passes), "paper_ms": cell.mean if cell else None})
        progress(f"table3: {row.label}: " + fmt(rows[-1]["ms"], ".2f", missing="not timed") + " ms")
    vae = rows[0]
    for r in rows:
        r["ratio_to_paper"] = ratio(r["ms"], r["paper_ms"])
        r["ratio_to_vae"] = ratio(r["ms"], vae["ms"])
        r["paper_ratio_to_vae"] = ratio(r["paper_ms"], vae["paper_ms"])
    return {"dim": dim, "batch": len(batches[0]), "batches": len(batches), "repeats": repeats,
            "rows": rows, "cut_short": any(r["passes"] < repeats for r in rows)}


def table3_lines(res: dict) -> list[str]:
    lines = [f"## Table 3: inference ms per batch at d={res['dim']}, MNIST, against the paper",
             "",
             f"{res['batches']} test batches of {res['batch']}, mean of up to {res['repeats']} "
             "passes (each after 2 warm-up passes; benchmark/timing.py's `time_inference`); the "
             f"paper's ms: Table 3, MNIST, d={PAPER_DIM}, an RTX 2080 Ti."
             + (" Cut short by the budget: rows with fewer passes." if res["cut_short"] else ""),
             ""]
    rows = [[r["row"], fmt(r["ms"]), fmt(r["paper_ms"], ".1f"), fmt(r["ratio_to_paper"]),
             fmt(r["ratio_to_vae"], prefix="x"), fmt(r["paper_ratio_to_vae"], prefix="x"),
             str(r["passes"])] for r in res["rows"]]
    return lines + [md_compact_table(["row", "ms", "paper ms", "ours / paper", "x VAE",
                                      "paper x VAE", "passes"], rows, "lrrrrrr")]


# ------------------------------------------------------------------ 2. training step per family


def training(data, settings, device, dim: int, batch: int, steps: int, warmup: int,
             deadline: Deadline, progress) -> dict:
    """training_cost's step (fp32) of every Table 1/4 family and GPVAE's floor at `dim`, `batch`."""
    timed = build_timed(table_families(), [dim], ["fp32"], settings, data, device)
    x = data.to_float(data.train[:batch]).to(device)

    def guard(line: str) -> None:
        progress(f"training: {line}")
        if deadline.over():
            raise OverBudget

    cut = False
    try:
        run_steps(timed, x, device, steps, warmup, slow_ms=2000.0, slow_steps=3, progress=guard)
    except OverBudget:
        cut = True
    ms = {t.family: (t.median_ms if t.times else None) for t in timed}
    return {"dim": dim, "batch": len(x), "steps": steps, "cut_short": cut,
            "families": [{"family": t.family, "label": t.label, "ms": ms[t.family],
                          "steps": len(t.times), "ratio_to_vae": ratio(ms[t.family], ms[BASELINE])}
                         for t in timed]}


def training_lines(res: dict) -> list[str]:
    lines = [f"## Training step at batch {res['batch']}, d={res['dim']}, fp32: ms and x VAE",
             "",
             f"benchmark.analyses.training_cost's step (zero_grad, loss(x).backward(), fused Adam) "
             f"on {res['batch']} MNIST training images, the median of up to {res['steps']} steps "
             "interleaved round by round; first variant of each family of Tables 1 and 4."
             + (" Cut short by the budget." if res["cut_short"] else ""),
             ""]
    rows = [[f["label"], fmt(f["ms"]), fmt(f["ratio_to_vae"], prefix="x"), str(f["steps"])]
            for f in res["families"]]
    return lines + [md_compact_table(["family", "ms per step", "x VAE", "steps"], rows, "lrrr")]


# ------------------------------------------------------------------ 3. runs per GPU


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs (picklable: it crosses a spawn)."""
    device: str
    dim: int
    families: tuple  # ((method, params), ...)
    images: object  # numpy array (B, C, H, W), floats in [0, 1]
    likelihood: str
    num_train: int
    threads: int
    warmup: int


def _worker(rank: int, spec: WorkerSpec, commands, results) -> None:
    """A training process: builds a model of every family, warms it up, says 'ready', then for
    each ('run', family, t_start, t_end) trains that family from t_start (wall clock) until
    t_end and reports its steps and seconds; ('stop',) ends it."""
    try:
        torch.set_num_threads(spec.threads)
        torch.set_flush_denormal(True)
        device = torch.device(spec.device)
        settings = load_dataset_settings(DATASET)
        x = torch.from_numpy(spec.images).to(device)
        steps = {}
        for method, params in spec.families:
            model, _ = build_model(method, dict(params), settings=settings,
                                   image_shape=tuple(x.shape[1:]), likelihood=spec.likelihood,
                                   latent_dim=spec.dim, num_train=spec.num_train, seed=rank)
            model = model.to(device).train()
            model.on_epoch_start(0, 1)
            steps[method] = make_step(model, make_optimizer(model, 1e-3), None)
            for _ in range(spec.warmup):
                steps[method](x)
            sync(device)
        results.put(("ready", rank, None))
        while (cmd := commands.get())[0] == "run":
            _, family, t_start, t_end = cmd
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            time.sleep(max(0.0, t_start - time.time()))
            n = 0
            while time.time() < t_end:
                steps[family](x)
                sync(device)  # the trainer syncs every step too (loss.item())
                n += 1
            elapsed = time.time() - t_start
            gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            host_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            results.put(("done", rank, {"family": family, "steps": n, "seconds": elapsed,
                                        "gpu_mb": gpu_mb, "host_mb": host_mb}))
    except Exception as err:  # reported to the parent, which says so in the report
        results.put(("error", rank, f"{type(err).__name__}: {err}"))


def collect(results, procs, ranks, expected: str, until: float) -> tuple[dict, list[str]]:
    """({rank: info} of the workers `ranks` that put `expected`, errors): waits until each has
    reported, has died without a word (a crash, or a spawn that could not start), or
    time.monotonic() passes `until`."""
    got, errors, pending = {}, [], set(ranks)
    while pending and time.monotonic() < until:
        try:
            kind, rank, info = results.get(timeout=max(0.05, min(0.5, until - time.monotonic())))
        except queue.Empty:
            for rank in sorted(r for r in pending if procs[r].exitcode is not None):
                errors.append(f"worker {rank} exited (code {procs[rank].exitcode}) without a report")
                pending.discard(rank)
            continue
        pending.discard(rank)
        if kind == expected:
            got[rank] = info
        else:
            errors.append(f"worker {rank}: {info}")
    if pending:
        errors.append(f"worker(s) {', '.join(map(str, sorted(pending)))}: no report in time")
    return got, errors


def start_workers(spec: WorkerSpec, count: int, deadline: Deadline, progress):
    """Spawn `count` workers and wait until each is ready; (processes, their command queues,
    results queue, ranks ready, errors)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs, commands = [], []
    for rank in range(count):
        commands.append(ctx.Queue())
        procs.append(ctx.Process(target=_worker, args=(rank, spec, commands[rank], results),
                                 daemon=True))
        procs[-1].start()
    ready, errors = collect(results, procs, range(count), "ready", deadline.at)
    progress(f"concurrency: {len(ready)} of {count} workers ready")
    return procs, commands, results, sorted(ready), errors


def stop_workers(procs, commands) -> None:
    for q in commands:
        q.put(("stop",))
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)


def run_trial(family: str, ranks, procs, commands, results, window_s: float) -> dict:
    """Train `family` in the workers `ranks` at once for `window_s`; the trial's figures."""
    t_start = time.time() + TRIAL_LEAD_S
    for rank in ranks:
        commands[rank].put(("run", family, t_start, t_start + window_s))
    until = time.monotonic() + TRIAL_LEAD_S + window_s + max(30.0, window_s)
    got, errors = collect(results, procs, ranks, "done", until)
    done = list(got.values())
    rates = [d["steps"] / d["seconds"] for d in done if d["seconds"] > 0]
    return {"family": family, "runs": len(ranks), "window_s": window_s, "errors": errors,
            "steps_per_s": sum(rates) if rates and not errors else None,
            "per_run_steps_per_s": statistics.fmean(rates) if rates else None,
            "steps": [d["steps"] for d in done],
            "gpu_mb_max": max((d["gpu_mb"] or 0 for d in done), default=None) or None,
            "host_mb_max": max((d["host_mb"] for d in done), default=None)}


def knee(throughput: list[tuple[int, float | None]], gain: float = GAIN) -> int | None:
    """The largest level reached by steps each gaining >= `gain` over the level before it."""
    if not throughput or throughput[0][1] is None:
        return None
    best_n, best = throughput[0]
    for n, value in throughput[1:]:
        if value is None or value < best * (1 + gain):
            break
        best_n, best = n, value
    return best_n


def concurrency(data, device, dim: int, levels, batch: int, families: list[str], warmup: int,
                window_max: float, deadline: Deadline, progress) -> dict:
    """Aggregate training throughput of each level of concurrent runs, per family."""
    rows = {r.method: r for r in table_families()}
    threads = max(1, (os.cpu_count() or 1) // max(levels))
    spec = WorkerSpec(str(device), dim, tuple((f, tuple(sorted(rows[f].param_dict.items())))
                                              for f in families),
                      data.to_float(data.train[:batch]).numpy(), data.likelihood,
                      len(data.train), threads, warmup)
    out = {"dim": dim, "batch": batch, "levels": list(levels), "families": list(families),
           "threads_per_run": threads,
           "trials": [], "errors": [], "window_s": None}
    started = time.monotonic()
    procs, commands, results, ready, errors = start_workers(spec, max(levels), deadline, progress)
    out["startup_s"] = time.monotonic() - started
    out["errors"] += errors
    try:
        plan = [(f, n) for n in levels for f in families]  # a failure at 8 leaves 1 and 4
        overhead = TRIAL_LEAD_S + 1.0
        window = min(window_max, max(0.0, deadline.left() / max(1, len(plan)) - overhead))
        out["window_s"] = window
        for family, n in plan:
            if n > len(ready) or window <= 0 or deadline.left() < window + overhead:
                why = "not enough workers ready" if n > len(ready) else "over the budget"
                out["trials"].append({"family": family, "runs": n, "steps_per_s": None,
                                      "skipped": why})
                continue
            trial = run_trial(family, ready[:n], procs, commands, results, window)
            out["trials"].append(trial)
            progress(f"concurrency: {family} x{n}: " + fmt(trial["steps_per_s"], ".1f",
                                                             missing="failed") + " steps/s")
            if trial["errors"]:
                out["errors"] += trial["errors"]
                break
    finally:
        stop_workers(procs, commands)
    out["cut_short"] = any(t.get("skipped") == "over the budget" for t in out["trials"])
    out["suggested"] = {}
    for family in families:
        mine = [t for t in out["trials"] if t["family"] == family]
        base = mine[0]["steps_per_s"] if mine else None
        for t in mine:
            t["speedup"] = ratio(t["steps_per_s"], base)
        out["suggested"][family] = knee([(t["runs"], t["steps_per_s"]) for t in mine])
    known = [n for n in out["suggested"].values() if n is not None]
    out["runs_per_task"] = min(known) if known else None
    out["where"] = WHERE
    return out


def concurrency_lines(res: dict) -> list[str]:
    lines = [f"## Runs per GPU: training throughput of {', '.join(map(str, res['levels']))} "
             "concurrent runs on one device",
             "",
             f"Each run a spawned process training one model (d={res['dim']}, batch {res['batch']}, "
             f"fp32, {res['threads_per_run']} CPU thread(s) each) for the same "
             + fmt(res["window_s"], ".1f", missing="?") + " s window; steps/s summed over the "
             f"runs; workers started in {res['startup_s']:.1f} s."
             + (" Cut short by the budget: trials skipped." if res["cut_short"] else ""),
             ""]
    rows = [[t["family"], str(t["runs"]),
             fmt(t["steps_per_s"], ".1f", missing=t.get("skipped", "failed")),
             fmt(t.get("per_run_steps_per_s"), ".1f"), fmt(t.get("speedup"), prefix="x"),
             fmt(t.get("gpu_mb_max"), ".0f"), fmt(t.get("host_mb_max"), ".0f")]
            for t in sorted(res["trials"],
                            key=lambda t: (res["families"].index(t["family"]), t["runs"]))]
    lines += [md_compact_table(["family", "runs", "steps/s (sum)", "per run", "speed-up over 1",
                                "GPU MB a run", "host MB a run"], rows, "lrrrrrr"), ""]
    for err in res["errors"]:
        lines.append(f"- error: {err}")
    per = ", ".join(f"{f} {fmt(n, 'd', missing='?')}" for f, n in res["suggested"].items())
    lines.append(f"Suggested runs_per_task (the most runs whose step from the level before gained "
                 f">= {GAIN:.0%}): {per}; for a profile: "
                 + fmt(res["runs_per_task"], "d", missing="none (no throughput measured)")
                 + f". Where: {res['where']}.")
    return lines


# ------------------------------------------------------------------ the command


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message} (python -m benchmark.analyses.gpu_check --help)\n")


def parse(argv) -> argparse.Namespace:
    p = _OneLineParser(prog="python -m benchmark.analyses.gpu_check",
                       description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu, or auto (default: cuda if "
                   "there is one)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help=f"folder holding MNIST (default: $GPVAE_BENCH_DATA or {DEFAULT_DATA_ROOT})")
    p.add_argument("--out", default="results/gpu-check", help="folder for gpu_check.md and "
                   "gpu_check.json (default: results/gpu-check)")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all three parts "
                   "(default: 480)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"any of {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="tiny setting for a CPU: d=2, few steps, "
                   "levels 1,2 (checks the wiring; the numbers mean nothing)")
    for name, (default, quick) in SETTINGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=None,
                       help=f"default {default} (--quick: {quick})")
    args = p.parse_args(argv)
    for name, (default, quick) in SETTINGS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    return args


def check(args) -> None:
    """Raise ValueError on bad settings (main turns it into one error line)."""
    counts = ("dim", "t3_batch", "t3_images", "t3_repeats", "train_batch", "train_steps",
              "run_batch")
    if bad := [n for n in counts if getattr(args, n) < 1]:
        raise ValueError(", ".join("--" + n.replace("_", "-") for n in bad) + " must be >= 1")
    if args.warmup < 0 or args.window_s <= 0 or args.budget_s <= 0:
        raise ValueError("--warmup must be >= 0, --window-s and --budget-s > 0")
    try:
        args.levels = [int(n) for n in args.levels.split(",")]
    except ValueError:
        raise ValueError(f"--levels {args.levels}: comma-separated counts such as 1,4,8") from None
    if args.levels[0] != 1 or args.levels != sorted(set(args.levels)):
        raise ValueError(f"--levels {','.join(map(str, args.levels))}: increasing counts from 1")
    args.parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not args.parts or (bad := set(args.parts) - set(PARTS)):
        raise ValueError(f"--parts: choose from {', '.join(PARTS)}")
    args.parts = [p for p in PARTS if p in args.parts]
    known = {r.method for r in table_families()}
    args.run_families = [f.strip() for f in args.run_families.split(",") if f.strip()]
    if not args.run_families or (bad := set(args.run_families) - known):
        raise ValueError(f"--run-families: methods of Tables 1 and 4 ({', '.join(sorted(known))})")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)  # RuntimeError on nonsense
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {args.device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")


def header(args, device) -> list[str]:
    paper = "" if args.dim == PAPER_DIM else f" (not the paper's {PAPER_DIM}: --dim/--quick)"
    return [f"# GPU check: {device.type} ({device_name(device)})", "",
            f"torch {torch.__version__}, {os.cpu_count()} CPU cores, "
            f"{time.strftime('%Y-%m-%d %H:%M')}; d={args.dim}{paper}; MNIST from {args.data_root}; "
            f"budget {args.budget_s:.0f} s; parts: {', '.join(args.parts)}"]


def main(argv=None) -> int:
    try:
        args = parse(argv)
    except SystemExit as exit_:  # --help (0) or argparse's one error line (2)
        return int(exit_.code or 0)
    try:
        check(args)
        device = torch.device(args.device)
        data = load_dataset(DATASET, args.data_root)
        settings = load_dataset_settings(DATASET)
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except (ValueError, RuntimeError, OSError, InputError, ConfigError, DatasetMissing) as err:
        text = " ".join(str(err).split()).replace(", or pass --download to fetch them", "")
        print(f"error: {text}", file=sys.stderr)
        return 2
    torch.set_flush_denormal(True)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    deadline = shares(args.budget_s, args.parts)
    started = time.monotonic()
    lines, figures = header(args, device), {"device": device_name(device), "device_type": device.type,
                                            "torch": torch.__version__, "budget_s": args.budget_s,
                                            "quick": args.quick, "dim": args.dim}
    if "table3" in args.parts:
        figures["table3"] = table3(data, settings, device, args.dim, args.t3_batch, args.t3_images,
                                   args.t3_repeats, deadline("table3"), progress)
        lines += ["", *table3_lines(figures["table3"])]
    if "training" in args.parts:
        figures["training"] = training(data, settings, device, args.dim, args.train_batch,
                                       args.train_steps, args.warmup, deadline("training"), progress)
        lines += ["", *training_lines(figures["training"])]
    if "concurrency" in args.parts:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the parts above's cached blocks, before the workers start
        figures["concurrency"] = concurrency(data, device, args.dim, args.levels, args.run_batch,
                                             args.run_families, args.warmup, args.window_s,
                                             deadline("concurrency"), progress)
        lines += ["", *concurrency_lines(figures["concurrency"])]
    figures["elapsed_s"] = time.monotonic() - started
    lines += ["", f"Took {figures['elapsed_s']:.0f} s of the {args.budget_s:.0f} s budget. The "
              "figures go in README.md (Performance) and the cluster profile's comment "
              "(slurm/example.yaml, runs_per_task)."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out)
    (out / "gpu_check.md").write_text(text)
    (out / "gpu_check.json").write_text(json.dumps(figures, indent=1))
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
