"""How long a local sweep will take, before it starts (`--dry-run`) and while it runs (the ETA).

A run's seconds on one thread come from, in this order:
1. the records under the results folder (benchmark.estimate: the same method, variant and dataset,
   the same latent size when there is one; each record's `history` holds every epoch's seconds);
2. else, FALLBACK below: per-image costs measured on this project's 2-core VM (AMD EPYC, torch
   2.14.1, one thread, MNIST's CNN with h=256, batch 64), scaled to the run's method variant, latent
   size, dataset and profile. These are rough (within about 2x): they say whether a sweep takes
   minutes, hours or days, not to the minute. Where they come from: README, "The claims profile"
   and "Performance" (`python -m benchmark.speed --train`), and the `claims` records of Table 1.

A run is epochs x training images x seconds per image-epoch + (validation + test images) x IWAE K x
seconds per image-sample: all epochs, so early stopping (`patience`) can only make it shorter. The
sweep's wall time: the runs in order, each started when one of min(--jobs, cores) slots comes free.
"""

from __future__ import annotations

import heapq
import os
import re
from dataclasses import dataclass

from .keys import RunTask

# ---- FALLBACK: measured on the 2-core VM, one thread (README, "The claims profile", "Performance")
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


@dataclass(frozen=True)
class RunCost:
    seconds: float | None
    source: str  # "3 records on cpu" or "fallback table (2-core VM)"


@dataclass(frozen=True)
class SweepEstimate:
    runs: dict  # RunKey -> RunCost
    workers: int  # runs that train at once

    @property
    def known(self) -> list[float]:
        return [c.seconds for c in self.runs.values() if c.seconds is not None]

    @property
    def wall_seconds(self) -> float:
        """The runs in order, each started on the first of `workers` slots to come free (as the
        local launcher does)."""
        slots = [0.0] * max(1, self.workers)
        for seconds in self.known:
            heapq.heappush(slots, heapq.heappop(slots) + seconds)
        return max(slots)

    def how(self) -> str:
        """One line on what the estimate rests on."""
        counts: dict[str, int] = {}
        for cost in self.runs.values():
            kind = "records" if "record" in cost.source else cost.source
            counts[kind] = counts.get(kind, 0) + 1
        records = "measured records under the results folder"
        parts = [f"{n} run{'s' if n > 1 else ''} from {records if k == 'records' else k}"
                 for k, n in sorted(counts.items())]
        return ("; ".join(parts) + f"; each run at one thread's speed, {self.workers} at once "
                "(min(--jobs, cores); a run given several threads may go faster); all epochs, "
                "so early stopping can only make it shorter")


def _number(variant: str) -> int | None:
    match = re.search(r"(\d+)$", variant)
    return int(match.group(1)) if match else None


def fallback_seconds(task: RunTask) -> float | None:
    """One run's seconds on one thread from FALLBACK; None for a method it has no figure for."""
    from .estimate import _sizes

    key, prof = task.key, task.profile
    vae = FALLBACK_TRAIN_MS["vae"]
    if key.method == "vlae":
        train_ms, eval_ms = VLAE_RATIO * vae, VLAE_EVAL_RATIO * FALLBACK_EVAL_MS
    elif key.method in FALLBACK_TRAIN_MS:
        train_ms, eval_ms = FALLBACK_TRAIN_MS[key.method], FALLBACK_EVAL_MS
        first, n = FALLBACK_FIRST_VARIANT.get(key.method), _number(key.variant)
        if first and n:  # more flow steps / SVI steps / components: sub-linear (README, Table 4)
            train_ms = vae + (train_ms - vae) * (n / first) ** 0.5
        if key.method == "gpvae":
            train_ms += GPVAE_MS_PER_DIM * (key.dim - 10)
    else:
        return None
    if task.settings.network == "fc":
        train_ms *= FC_RATIO.get(key.method, FC_RATIO_OTHERS)
    scale = PIXELS.get(task.data_name, MNIST_PIXELS) / MNIST_PIXELS
    n_train, n_eval = _sizes(task)
    return scale * (prof.epochs * n_train * train_ms + n_eval * prof.iwae_k * eval_ms) / 1000


def estimate_sweep(tasks: list[RunTask], results_dir, *, jobs: int = 1, gpu: bool = False,
                   costs=None) -> SweepEstimate:
    """Seconds per run of `tasks` (records first, then FALLBACK) and how many train at once."""
    from .estimate import estimate_run, measured_costs

    costs = measured_costs(results_dir) if costs is None else costs
    runs = {}
    for task in tasks:
        measured = estimate_run(task, gpu, costs)
        if measured.seconds is not None:
            runs[task.key] = RunCost(measured.seconds, measured.source)
        elif gpu:
            runs[task.key] = RunCost(None, "no measurement on a GPU")
        else:
            seconds = fallback_seconds(task)
            runs[task.key] = RunCost(seconds, "the fallback table of per-epoch costs measured on "
                                     "the 2-core VM (benchmark/costs.py)" if seconds is not None
                                     else "no measurement")
    workers = 1 if gpu else min(max(1, jobs), os.cpu_count() or 1)
    return SweepEstimate(runs, workers)


def duration(seconds: float) -> str:
    """'40 s', '12 min', '3.5 h', '4.2 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
