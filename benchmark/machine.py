"""What the bare command means on the machine at hand: `python reproduce.py --table 1` with no
`--profile` or `--jobs` (Request.profile / Request.jobs None) gets the profile and the concurrency
chosen here, says them in its first line with the sweep's estimate (benchmark.estimate), and, when
the profile was chosen here, the estimate is long and the console is interactive, says how to
shorten the sweep and asks before training. Never a prompt when stdin or stdout is not a terminal.

The rule (README, "The bare command"); an explicit --profile or --jobs always wins:
- profile: `paper` under `--launcher slurm` or where the runs get a CUDA device (`--device cuda`,
  or `auto` with one found); else `claims`, the profile designed for verdicts on a CPU;
- jobs (the local launcher): one run per CPU core on a CPU (one thread each), one on a GPU; the
  debug launcher runs one at a time in-process, the Slurm launcher as its cluster profile says.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

CPU_PROFILE = "claims"
GPU_PROFILE = "paper"
LONG_SECONDS = 3600.0  # an estimate above this is "long": say how to shorten it before training
HEADLINE = ("vae", "gpvae")  # the paper's headline pair (Table 1): the first shortening offered
CLAIMS_FILE = Path(__file__).parent / "paper" / "claims.yaml"  # the paper's claims, per table


@dataclass(frozen=True)
class Choice:
    """What was chosen for this machine (None: given on the command line) and why."""

    profile: str | None
    jobs: int | None
    why: str  # "2 CPU cores, no CUDA device", "a CUDA device", "--launcher slurm"


def _cuda(device: str) -> bool:
    """Whether the runs of a local sweep would get a CUDA device (`--device` as given)."""
    if device.startswith("cuda"):
        return True  # a CUDA device that is not there is resolve_device's error, said later
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def choose(request):
    """(request with profile and jobs filled in, Choice or None when both were given)."""
    r = request
    if r.profile is not None and r.jobs is not None:
        return r, None
    slurm = r.launcher == "slurm"
    cuda = not slurm and _cuda(r.device)
    cores = os.cpu_count() or 1
    why = ("--launcher slurm" if slurm else "a CUDA device" if cuda else
           f"{cores} CPU core{'s' if cores != 1 else ''}, no CUDA device")
    profile = jobs = None
    if r.profile is None:
        profile = GPU_PROFILE if slurm or cuda else CPU_PROFILE
    if r.jobs is None:
        jobs = cores if r.launcher == "local" and not cuda else 1
    resolved = dataclasses.replace(r, profile=profile or r.profile, jobs=jobs or r.jobs)
    # jobs mean nothing to the debug and Slurm launchers: not said as a choice there
    said_jobs = jobs if r.launcher == "local" else None
    if profile is None and said_jobs is None:
        return resolved, None
    return resolved, Choice(profile, said_jobs, why)


def interactive() -> bool:
    """Whether a person is at the console: stdin and stdout both terminals."""
    try:
        return sys.stdin.isatty() and sys.stdout.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _runnable(sweep, pending) -> list:
    """The pending runs whose data is here (or will be downloaded): what the sweep will train."""
    from . import datasets

    r = sweep.request
    there = {name for name in {t.data_name for t in pending}
             if r.download or datasets.files_present(name, r.data_root)}
    return [t for t in pending if t.data_name in there]


def _estimate(sweep, tasks):
    from .estimate import estimate_sweep

    r = sweep.request
    gpu = sweep.device.startswith("cuda")
    # priced as --dry-run and the progress bar price it (the speed probe where no record scales it),
    # so the first line's estimate is the one the rest of the command says
    return estimate_sweep(tasks, r.results_dir, jobs=r.jobs, gpu=gpu, probe=not gpu)


def first_line(sweep, pending) -> tuple[str, float | None]:
    """The command's first line (what was chosen, and the estimate) and the estimated seconds;
    ("", None) when nothing chosen matters to this table (jobs do not to a timing table)."""
    from .estimate import duration

    r, c = sweep.request, sweep.choice
    chosen = []  # (what, the option that chooses otherwise)
    if c.profile is not None:
        chosen.append((f"profile {c.profile}", "--profile"))
    if c.jobs is not None and not sweep.timing:
        each = (f", {sweep.threads} thread{'s' if sweep.threads != 1 else ''} each"
                if sweep.threads else "")
        chosen.append((f"{c.jobs} run{'s' if c.jobs != 1 else ''} at a time{each}", "--jobs"))
    if not chosen:
        return "", None
    what = " and ".join(w for w, _ in chosen)
    options = " and ".join(o for _, o in chosen)
    line = (f"{sweep.spec.name}: {what}, chosen for this machine ({c.why}; {options} "
            f"choose{'s' if len(chosen) == 1 else ''} otherwise)")
    if sweep.timing:
        return line, None
    if r.collect:
        return line + ": rendering what exists", None
    if getattr(r, "budget", None) is not None:  # --claims --budget sizes the sweep itself
        return line + ": the budget's plan below chooses the runs", None
    if r.launcher == "slurm":
        return line + (": its job arrays and their estimate below" if r.dry_run else
                       ": --dry-run estimates its job arrays"), None
    runnable = _runnable(sweep, pending)
    missing = len(pending) - len(runnable)
    without = f"; {missing} more lack their data" if missing else ""
    if not runnable:
        return line + (f": nothing to train here, the {missing} runs to do lack their data"
                       if missing else ": nothing to train"), None
    est = _estimate(sweep, runnable)
    n = f"{len(runnable)} run{'s' if len(runnable) != 1 else ''}"
    if len(est.known) < len(runnable):
        return line + f": {n}, no estimate for {len(runnable) - len(est.known)}{without}", None
    return (line + f": estimate {duration(est.wall_seconds)} for {n} here{without}",
            est.wall_seconds)


def shorter(sweep, pending) -> list[str]:
    """Ways to shorten the sweep, each with its estimate: the headline pair, one latent size, both,
    and a claims budget where the pipeline has one."""
    from .estimate import duration

    runnable = _runnable(sweep, pending)
    methods = {t.key.method for t in runnable}
    dims = sorted({t.key.dim for t in runnable})
    pair = [m for m in HEADLINE if m in methods]
    ways = []
    if pair and methods - set(pair):
        ways.append((f"--methods {','.join(pair)}", lambda t: t.key.method in pair))
    if len(dims) > 1:
        ways.append((f"--dims {dims[0]}", lambda t: t.key.dim == dims[0]))
    if len(ways) == 2:
        ways.append((f"{ways[0][0]} {ways[1][0]}",
                     lambda t, a=ways[0][1], b=ways[1][1]: a(t) and b(t)))
    out = []
    for option, keep in ways:
        est = _estimate(sweep, [t for t in runnable if keep(t)])
        out.append(f"{option} ({duration(est.wall_seconds)})")
    if "budget" in {f.name for f in dataclasses.fields(sweep.request)} and _has_claims(sweep):
        out.append("--claims --budget 3h (the runs that decide the most claims in 3 h)")
    return out


def _has_claims(sweep) -> bool:
    """Whether the paper's claims about this table are recorded (what --budget plans for); read
    from the claims file, not through benchmark.analyses, which the harness imports on request."""
    if sweep.claim_set is not None:
        return True
    from .yamlio import ConfigError, read_yaml_mapping

    try:
        return sweep.spec.name in read_yaml_mapping(CLAIMS_FILE)
    except ConfigError:
        return False


def pending_runs(sweep, plan, in_flight) -> list:
    """What the pipeline will launch: the plan's pending runs less those queued in Slurm."""
    r = sweep.request
    if plan is None or r.collect:
        return []
    return [t for t in plan.pending(r.retry_failed, r.force) if t.key not in in_flight]


def announce(sweep, plan, in_flight) -> bool:
    """Say what was chosen for this machine, with the estimate; when the profile was chosen here,
    the estimate is long and a person is at the console, say how to shorten it and, before
    training, ask. False: the person said no (nothing trained). `plan` None: a timing table."""
    con, r = sweep.console, sweep.request
    pending = pending_runs(sweep, plan, in_flight)
    line, seconds = first_line(sweep, pending)
    if line:
        con.status(line)
    long = seconds is not None and seconds > LONG_SECONDS
    if not (long and sweep.choice.profile is not None and interactive()):
        return True
    ways = shorter(sweep, pending)
    con.problem("that is long: " + ("shorten it with " + ", ".join(ways) + "; " if ways else "")
                + "--dry-run lists the runs")
    if r.dry_run:
        return True
    try:
        answer = input(f"train all {len(_runnable(sweep, pending))} runs now? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    con.problem("nothing trained; rerun with the options above, or with --profile "
                f"{sweep.choice.profile} to train it all without asking")
    return False
