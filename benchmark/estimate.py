"""The cost model: how long runs take, estimated before a sweep starts (`--dry-run`, local or
`--launcher slurm`) and while it runs (the console's ETA, benchmark.progress).

A run is epochs x training images x seconds per image-epoch + (validation + test images) x IWAE K
x seconds per image-sample: all epochs, so early stopping (`patience`) can only make it shorter.
The per-image costs come from, in this order:

1. measured: the finished records under the results folder of the same method and variant on the
   same dataset (the same latent size when there are any, else any), made on the device type the
   run will use: each record's `history` holds every epoch's seconds and `sizes` its training
   images, `metrics.eval_seconds` its evaluation time;
2. else a fallback for that device type:
   - CPU: FALLBACK_* below, per-image costs measured on this project's 2-core VM (AMD EPYC, torch
     2.14.1, one thread, MNIST's CNN with h=256, batch 64), scaled to the run's variant, latent
     size, network, image size and profile. Rough (within about 2x): they say whether a sweep
     takes minutes, hours or days, not to the minute. Where each figure comes from is said beside
     it: docs/claims-profile.md and docs/performance.md
     (`python -m benchmark.analyses.speed --train`), and the `claims` records of Table 1;
   - GPU: the paper's Table 3 (ms per test batch of 128 at dim 50, on an RTX 2080 Ti,
     benchmark/paper/table3.yaml), a training step taken as 3 forward passes (forward + backward),
     evaluation as K forward passes per image; rows the paper did not time take a stand-in (hf =
     iaf of the same k, me/rme with m components = m x vae);
3. measured records made on the other device type (said so: a CPU time is no GPU time).

A sweep: locally, the runs longest expected first (the order the pipeline launches them in), each
started when one of the launcher's --jobs slots comes free; more runs at once than cores (than one
on a GPU) share them, each slower in proportion; on Slurm, per job of
packed runs from "fully overlapping" (its longest run) to "back to back" (their sum), and in total
jobs x GPUs x job time.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from . import speed_probe
from .tasks import RunTask

# images a full-data run trains on (the official training set less its validation share) and
# evaluates on (validation + test), per dataset: benchmark/datasets.py's docstring
FULL_SIZES = {"mnist": (54000, 16000), "binarized_mnist": (50000, 20000),
              "omniglot": (21911, 10504), "svhn": (65932, 33357), "cifar10": (45000, 15000),
              "celeba": (162080, 40519)}

# ---- GPU fallback: the paper's Table 3 (benchmark/paper/table3.yaml)
TABLE3_BATCH = 128
TRAIN_STEP_FORWARDS = 3  # a training step: forward + backward, about 3 forward passes

# ---- CPU fallback: measured on the 2-core VM, one thread (docs/claims-profile.md,
# docs/performance.md). Another CPU: scaled by its own records (machine_scale).
# ms per training image per epoch (forward, backward, Adam, the epoch's validation ELBO) of each
# family's first variant, MNIST CNN h=256, batch 64, d=10 (claims-b64 and claims records, quiet VM)
FALLBACK_TRAIN_MS = {"vae": 0.38, "gpvae": 0.89, "hf": 0.41, "iaf": 0.43, "me": 1.10, "rme": 0.65,
                     "sa": 1.10}
FALLBACK_FIRST_VARIANT = {"hf": 1, "iaf": 1, "sa": 1, "me": 2, "rme": 2}  # what the ms above timed
GPVAE_MS_PER_DIM = 0.0228  # GPVAE's cost grows with d: 0.89 ms at d=10, 1.80 at d=50 (claims)
VLAE_RATIO = 140.0  # a VLAE step is ~140 VAE steps on a CPU (speed --train, d=50: 10988 / 78.6 ms)
FALLBACK_EVAL_MS = 0.175  # ms per evaluated image per IWAE sample (val + test), any method but VLAE
VLAE_EVAL_RATIO = 8.0  # VLAE(2): 218 s of evaluation for 1,500 images x K=100
# other networks than MNIST's CNN: FC (Table 4's column, h=500) per step at batch 32 against CNN:
# VAE 6.3 / 22.3 ms, GPVAE 566 / 130 ms (its 2 d h^2 covariance parameters dominate)
FC_RATIO = {"gpvae": 4.35}
FC_RATIO_OTHERS = 0.28
MNIST_PIXELS = 28 * 28  # not measured on larger images: scaled by pixels (SVHN, CIFAR-10, CelebA)
PIXELS = {"svhn": 32 * 32 * 3, "cifar10": 32 * 32 * 3, "celeba": 64 * 64 * 3}

CPU_FALLBACK = ("the fallback table of per-epoch costs measured on the 2-core VM "
                "(benchmark/estimate.py)")


@dataclass(frozen=True)
class RunEstimate:
    seconds: float | None
    source: str  # how: "3 records on cpu", "paper Table 3 on an RTX 2080 Ti", CPU_FALLBACK, ...


# ------------------------------------------------------------------ one run


def sizes(task: RunTask) -> tuple[int, int]:
    """(training images, evaluated images: validation + test) of one run of `task`."""
    prof = task.profile
    train, evaluated = FULL_SIZES.get(task.key.dataset, (50000, 15000))
    val_test = (prof.val_size or evaluated // 2) + (prof.test_size or evaluated - evaluated // 2)
    return prof.train_size or train, val_test if (prof.val_size or prof.test_size) else evaluated


@dataclass(frozen=True)
class MeasuredCost:
    method: str
    variant: str
    dataset: str
    dim: int
    device: str  # cpu or cuda
    train_s_per_image_epoch: float
    eval_s_per_image_sample: float | None


def measured_costs(results_dir: str | Path) -> list[MeasuredCost]:
    """Per-image costs of every finished record under `results_dir` that has a history."""
    from .store import ResultsStore

    out = []
    for path in ResultsStore(results_dir).record_paths():
        try:
            rec = json.loads(path.read_text())
            if rec.get("status") != "ok":
                continue
            key, run_sizes, hist = rec["key"], rec["sizes"], rec["history"]
            epochs = [h["seconds"] for h in hist if isinstance(h.get("seconds"), int | float)]
            if not epochs or not run_sizes.get("train"):
                continue
            k = rec["config"]["profile"]["iwae_k"]
            ev = rec["metrics"].get("eval_seconds")
            n_eval = (run_sizes.get("val") or 0) + (run_sizes.get("test") or 0)
            out.append(MeasuredCost(
                key["method"], key["variant"], key["dataset"], int(key["dim"]),
                str(rec.get("provenance", {}).get("device", "cpu")).split(":")[0],
                statistics.mean(epochs) / run_sizes["train"],
                ev / (n_eval * k) if ev and n_eval and k else None))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
            continue
    return out


def _table3_ms(method: str, variant: str, dataset: str) -> tuple[float, str] | None:
    from .paper_tables import load_paper_table

    try:
        cells = load_paper_table("table3").cells
    except Exception:  # noqa: BLE001 - no paper numbers: no estimate from them
        return None
    column = cells.get((dataset, 50)) or cells.get(("mnist", 50)) or {}
    if (method, variant) in column:
        return column[(method, variant)].mean, ""
    if method == "hf" and ("iaf", variant) in column:
        return column[("iaf", variant)].mean, f" (hf-{variant} taken as iaf-{variant})"
    if method in ("me", "rme") and variant.startswith("m") and ("vae", "default") in column:
        m = int(variant[1:]) if variant[1:].isdigit() else 1
        return m * column[("vae", "default")].mean, f" ({method}-{variant} taken as {m} x vae)"
    return None


def table3_seconds(task: RunTask) -> RunEstimate | None:
    """One run's seconds on a GPU from the paper's Table 3; None for a row it has no stand-in for."""
    key, prof = task.key, task.profile
    t3 = _table3_ms(key.method, key.variant, key.dataset)
    if t3 is None:
        return None
    ms, note = t3
    n_train, n_eval = sizes(task)
    seconds = (prof.epochs * n_train / TABLE3_BATCH * TRAIN_STEP_FORWARDS * ms / 1000
               + n_eval * prof.iwae_k / TABLE3_BATCH * ms / 1000)
    return RunEstimate(seconds, f"paper Table 3 on an RTX 2080 Ti{note}")


def _number(variant: str) -> int | None:
    match = re.search(r"(\d+)$", variant)
    return int(match.group(1)) if match else None


def fallback_seconds(task: RunTask) -> float | None:
    """One run's seconds on one CPU thread from FALLBACK_*; None for a method it has no figure
    for."""
    key, prof = task.key, task.profile
    train_ms = fallback_train_ms(key.method, key.variant, key.dim)
    if train_ms is None:
        return None
    eval_ms = FALLBACK_EVAL_MS * (VLAE_EVAL_RATIO if key.method == "vlae" else 1.0)
    if task.settings.network == "fc":
        train_ms *= FC_RATIO.get(key.method, FC_RATIO_OTHERS)
    scale = PIXELS.get(task.data_name, MNIST_PIXELS) / MNIST_PIXELS
    n_train, n_eval = sizes(task)
    return scale * (prof.epochs * n_train * train_ms + n_eval * prof.iwae_k * eval_ms) / 1000


def fallback_train_ms(method: str, variant: str, dim: int) -> float | None:
    """FALLBACK_TRAIN_MS for one row at latent size `dim` (MNIST's CNN), as fallback_seconds
    scales it; None for a method without a figure."""
    vae = FALLBACK_TRAIN_MS["vae"]
    if method == "vlae":
        return VLAE_RATIO * vae
    if method not in FALLBACK_TRAIN_MS:
        return None
    ms = FALLBACK_TRAIN_MS[method]
    first, n = FALLBACK_FIRST_VARIANT.get(method), _number(variant)
    if first and n:  # more flow steps / SVI steps / components: sub-linear (docs/performance.md, Table 4)
        ms = vae + (ms - vae) * (n / first) ** 0.5
    if method == "gpvae":
        ms += GPVAE_MS_PER_DIM * (dim - 10)
    return ms


def machine_scale(costs: list[MeasuredCost]) -> tuple[float, int]:
    """How much slower (> 1) or faster this machine trains than the VM the fallback table was
    measured on: the median of measured / fallback per-image cost over the CPU records of MNIST-size
    CNN columns (mnist, omniglot), and how many records that rests on; (1.0, 0) without any."""
    ratios = []
    for c in costs:
        if c.device != "cpu" or c.dataset not in ("mnist", "omniglot"):
            continue
        ms = fallback_train_ms(c.method, c.variant, c.dim)
        if ms:
            ratios.append(c.train_s_per_image_epoch * 1000 / ms)
    return (statistics.median(ratios), len(ratios)) if ratios else (1.0, 0)


def probe_scale() -> float:
    """machine_scale's ratio measured without records: this CPU's VAE step (speed_probe) against
    FALLBACK_TRAIN_MS["vae"]."""
    return speed_probe.vae_ms_per_image() / FALLBACK_TRAIN_MS["vae"]


def _from_records(task: RunTask, pool: list[MeasuredCost], gpu: bool) -> RunEstimate:
    prof = task.profile
    n_train, n_eval = sizes(task)
    train = statistics.median(c.train_s_per_image_epoch for c in pool)
    evals = [c.eval_s_per_image_sample for c in pool if c.eval_s_per_image_sample]
    ev = statistics.median(evals) * n_eval * prof.iwae_k if evals else 0.0
    devices = "/".join(sorted({c.device for c in pool}))
    caveat = ""
    if gpu and "cuda" not in devices:
        caveat = " (measured without a GPU: an upper bound for a GPU)"
    elif not gpu and "cpu" not in devices:
        caveat = " (measured on a GPU: a lower bound for a CPU)"
    return RunEstimate(prof.epochs * n_train * train + ev,
                       f"{len(pool)} record{'s' if len(pool) > 1 else ''} on {devices}{caveat}")


def estimate_run(task: RunTask, gpu: bool, costs: list[MeasuredCost],
                 probe: bool = False) -> RunEstimate:
    """Seconds one run of `task` takes on a job with (`gpu`) or without a GPU (one thread), and how
    estimated: records on that device, else its fallback (Table 3 / the CPU table, scaled to this
    machine by its records of other rows, or with `probe` and no such record by a few timed steps:
    benchmark.speed_probe), else records on the other device."""
    key = task.key
    same = [c for c in costs if (c.method, c.variant, c.dataset) == (key.method, key.variant, key.dataset)]
    same = [c for c in same if c.dim == key.dim] or same
    want = "cuda" if gpu else "cpu"
    if pool := [c for c in same if c.device == want]:
        return _from_records(task, pool, gpu)
    if gpu and (t3 := table3_seconds(task)) is not None:
        return t3
    if not gpu and (seconds := fallback_seconds(task)) is not None:
        scale, n = machine_scale(costs)
        if n:  # this machine's speed, from its own records of other rows
            return RunEstimate(seconds * scale, f"{CPU_FALLBACK}, scaled x{scale:.2f} to this "
                               f"machine by {n} record{'s' * (n > 1)} of other rows")
        if probe:  # no record yet: a few timed VAE steps on this machine
            scale = probe_scale()
            return RunEstimate(seconds * scale, f"{CPU_FALLBACK}, scaled x{scale:.2f} to this "
                               f"machine by {speed_probe.PROBE_STEPS} timed VAE steps "
                               f"(benchmark/speed_probe.py)")
        return RunEstimate(seconds, CPU_FALLBACK)
    if same:
        return _from_records(task, same, gpu)
    return RunEstimate(None, "no measurement on a GPU" if gpu else
                       "no measurement (no record and no fallback figure for this method)")


# ------------------------------------------------------------------ a sweep


@dataclass(frozen=True)
class SweepEstimate:
    """A local sweep: every run's estimate, how many train at full speed at once (`workers`: CPU
    cores, one GPU) and how many the launcher starts at once (`at_once`, --jobs: more than
    `workers` share them, each slower in proportion)."""
    runs: dict  # RunKey -> RunEstimate
    workers: int  # runs that train at full speed at once: min(--jobs, cores); 1 on a GPU
    at_once: int | None = None  # runs started at once: min(--jobs, runs); None: `workers`
    gpu: bool = False

    @property
    def known(self) -> list[float]:
        return [c.seconds for c in self.runs.values() if c.seconds is not None]

    @property
    def sharing(self) -> bool:
        """Whether more runs train at once than there are cores (a GPU) for them."""
        return (self.at_once or 0) > self.workers

    def launch_order(self, tasks: list[RunTask]) -> list[RunTask]:
        """`tasks` longest expected first (runs without an estimate first, in their order), so
        that the sweep does not end on one long run while the other slots stand idle. Measured on
        the `claims` profile's 18 VAE and GPVAE runs, 2 at once: in table order the last GPVAE
        d=50 run (650 s) ran alone at the end (docs/claims-profile.md)."""
        def expected(task):
            seconds = self.runs[task.key].seconds
            return -math.inf if seconds is None else -seconds
        return sorted(tasks, key=expected)

    @property
    def wall_seconds(self) -> float:
        """The runs in launch_order, each started as soon as one of the launcher's slots comes
        free (as the local launcher does); while more run than `workers`, they share the cores
        equally, each at workers / running of its own speed."""
        capacity = max(1, self.workers)
        slots = max(capacity, self.at_once or capacity)
        todo = sorted(self.known, reverse=True)
        if slots == capacity:  # each run on a core of its own
            free = [0.0] * capacity
            for seconds in todo:
                heapq.heappush(free, heapq.heappop(free) + seconds)
            return max(free)
        now, running = 0.0, []  # the work left (seconds at full speed) of each started run
        while todo or running:
            while todo and len(running) < slots:
                running.append(todo.pop(0))
            rate = min(1.0, capacity / len(running))  # each run's share of a core
            first = min(running)  # the next run to finish
            now += first / rate
            running = [left - first for left in running]
            running = [left for left in running if left > 0]
        return now

    def how(self) -> str:
        """One line on what the estimate rests on."""
        counts: dict[str, int] = {}
        for cost in self.runs.values():
            kind = "records" if "record" in cost.source else cost.source
            counts[kind] = counts.get(kind, 0) + 1
        records = "measured records under the results folder"
        parts = [f"{n} run{'s' if n > 1 else ''} from {records if k == 'records' else k}"
                 for k, n in sorted(counts.items())]
        if self.sharing:
            shared = "the GPU" if self.gpu else f"{self.workers} core{'s' if self.workers > 1 else ''}"
            at_once = f"{self.at_once} at once (--jobs) sharing {shared}, each slower in proportion"
        else:
            at_once = f"{self.workers} at once (min(--jobs, cores); one on a GPU)"
        return ("; ".join(parts) + f"; each run at one thread's speed, {at_once}; a run given "
                "several threads may go faster; all epochs, so early stopping can only make it "
                "shorter")


def estimate_sweep(tasks: list[RunTask], results_dir, *, jobs: int = 1, gpu: bool = False,
                   costs: list[MeasuredCost] | None = None, probe: bool = False) -> SweepEstimate:
    """A local sweep of `tasks` as the local launcher runs it: min(`jobs`, runs) at once, sharing
    the cores (one GPU) when they are more; seconds per run at one core's (the GPU's) speed;
    `probe`: estimate_run's."""
    costs = measured_costs(results_dir) if costs is None else costs
    runs = {task.key: estimate_run(task, gpu, costs, probe) for task in tasks}
    jobs = max(1, jobs)
    workers = 1 if gpu else min(jobs, os.cpu_count() or 1)
    return SweepEstimate(runs, workers, at_once=max(1, min(jobs, len(tasks))), gpu=gpu)


@dataclass(frozen=True)
class ArrayEstimate:
    """A Slurm job array: every run's estimate and, per job (a pack of runs), its time from fully
    overlapping runs (the longest) to back to back (their sum); None where a run has none."""
    runs: dict  # RunKey -> RunEstimate
    packs: list  # list of lists of RunTask: one per job
    gpus: int  # per job

    @property
    def unknown(self) -> int:
        return sum(e.seconds is None for e in self.runs.values())

    @property
    def job_seconds(self) -> tuple[list[float], list[float]] | None:
        """(per job: its runs fully overlapping, per job: back to back), or None."""
        if self.unknown:
            return None
        lows = [max(self.runs[t.key].seconds for t in pack) for pack in self.packs]
        highs = [sum(self.runs[t.key].seconds for t in pack) for pack in self.packs]
        return lows, highs

    @property
    def hours(self) -> tuple[float, float]:
        """(low, high) jobs x GPUs (1 without) x job time, in hours; 0 without an estimate."""
        spans = self.job_seconds
        if spans is None:
            return 0.0, 0.0
        scale = self.gpus or 1
        return scale * sum(spans[0]) / 3600, scale * sum(spans[1]) / 3600


def estimate_array(packs, gpus: int, costs: list[MeasuredCost]) -> ArrayEstimate:
    """One Slurm job array's jobs (`packs`: the runs of each job) with `gpus` GPUs per job."""
    runs = {t.key: estimate_run(t, bool(gpus), costs) for pack in packs for t in pack}
    return ArrayEstimate(runs, [list(p) for p in packs], gpus)


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.5 h', '4.2 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
