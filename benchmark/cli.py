"""`python reproduce.py`: parse and check the command line into a benchmark.pipeline.Request, run
it, and print any error as one line (exit 2: the command or a file it names must change; 1: the
machine cannot do it now). What happens to a request is benchmark.pipeline's."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from methods.registry import (
    PluginImportError,
    UnknownMethodError,
    broken_plugins,
    lenient_plugins,
    method_specs,
)

from .errors import InputError, UsageError, describe_os_error, one_line
from .pipeline import DEFAULT_DATA_ROOT, LAUNCHERS, Request, resolve_device
from .pipeline import run as run_request
from .profiles import load_profile, profile_names
from .specs import Row, load_table_spec, table_names
from .yamlio import ConfigError

log = logging.getLogger("gpvae_bench")


class _OneLineParser(argparse.ArgumentParser):
    """argparse's errors (an unknown option, --jobs two) as the harness's others: one `error:` line
    and exit 2, not the whole usage first."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(message)} (reproduce.py --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="reproduce.py",
        description="Train every method of a table of Kim (CVPR 2022) over splits x restarts, "
        "evaluate test log-likelihood by IWAE, t-test against the best method, and write the "
        "table as Markdown, LaTeX and HTML under RESULTS/tables/.",
    )
    p.add_argument("--table", help="which table to reproduce (see --list)")
    p.add_argument("--profile", default=None,
                   help="work size: smoke (seconds a run; checks the wiring, numbers mean "
                   "nothing), quick (minutes a run on a CPU; hours for a whole table), claims "
                   "(full data, 18 epochs: converged runs for verdicts, about half an hour a run "
                   "on a CPU), paper (the paper's protocol: days on a CPU, use a GPU or Slurm), "
                   "or a path to a profile YAML (default: chosen for "
                   "this machine: paper with a CUDA device or --launcher slurm, else claims). "
                   "--dry-run says how long a sweep takes here")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one profile setting, e.g. --set epochs=10 --set batch_size=64 "
                   "(repeatable; values are YAML scalars, null included; checked like a profile "
                   "file). The runs are new ones, under the profile name plus the changes "
                   "(quick+batch_size=64,epochs=10), never the profile's own records")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help="folder holding the datasets in torchvision layout "
                   f"(default: $GPVAE_BENCH_DATA or '{DEFAULT_DATA_ROOT}')")
    p.add_argument("--download", action="store_true",
                   help="download missing datasets from their official sources")
    p.add_argument("--results-dir", default="results",
                   help="where records, logs and tables go (default: results)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="debug: in this process; local: subprocesses (see --jobs); slurm: job "
                   "arrays through submitit (see --cluster) (default: local)")
    p.add_argument("--jobs", type=int, default=None,
                   help="local launcher: runs at the same time; CPU threads are shared among "
                   "them (default: one per CPU core; one on a CUDA device)")
    p.add_argument("--threads", type=int, default=None,
                   help="local launcher: CPU threads per run (default: CPU cores / --jobs); 1 suits "
                   "GPU runs, whose work is not on the CPU")
    p.add_argument("--cluster", default=None,
                   help="slurm launcher: cluster profile name (slurm/NAME.yaml) or path")
    p.add_argument("--no-wait", action="store_true",
                   help="slurm launcher: submit and return; render later with --collect")
    p.add_argument("--collect", action="store_true",
                   help="launch nothing: aggregate and render the records that exist")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (done / pending / failed runs), the columns whose data "
                   "is missing and an estimate of the sweep's time on this machine (from the "
                   "records' measured epoch times, else a table measured on a 2-core VM), and exit")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N or auto (cuda when available) (default: auto)")
    p.add_argument("--methods", help="comma-separated method families (sa) or rows (sa-k4, as "
                   "--dry-run and --list name them) to run (default: all rows)")
    p.add_argument("--datasets", help="comma-separated datasets to run (default: the table's)")
    p.add_argument("--dims", help="comma-separated latent sizes to run (default: the table's)")
    p.add_argument("--splits", type=int, default=None,
                   help="use only the first N splits of the profile (a trimmed sweep; its runs "
                   "are the same runs the full profile would make)")
    p.add_argument("--force", action="store_true",
                   help="recompute runs that already have a record (old ones are set aside)")
    p.add_argument("--retry-failed", action="store_true", help="rerun only runs recorded as failed")
    p.add_argument("--paired", action="store_true",
                   help="paired t-test over the shared splits instead of the paper's unpaired "
                   "Welch test")
    p.add_argument("--compare-paper", action="store_true",
                   help="also write tableN_vs_paper.{md,tex,html}: ours and the paper's numbers "
                   "per cell, Kendall tau per column, significance pattern vs the paper's")
    p.add_argument("--claims", action="store_true",
                   help="also test each claim the paper makes about the table (and, for table 1, "
                   "Figure 1) on our results and write tableN_claims.{md,html}: test, n, effect, "
                   "p and a verdict (reproduced / contradicted / underpowered); the claims are "
                   "benchmark/paper/claims.yaml")
    p.add_argument("--budget", metavar="DURATION",
                   help="with --claims: plan the sweep to decide as many of the table's claims as "
                   "possible within DURATION of wall time on this machine (45m, 3h, 1h30m): which "
                   "rows, columns and how many splits to train, from the records that exist, "
                   "their spread and the --dry-run cost model; prints the plan per claim, trains "
                   "it (nothing under --dry-run), then the verdicts")
    p.add_argument("--figures", action="store_true",
                   help="draw the paper's Figures 1-2 (2-D latent GPVAE on MNIST) under "
                   "RESULTS/figures/ with --data-root/--download/--results-dir/--device/--threads; "
                   "`python -m benchmark.analyses.figures --help` lists the figure settings")
    p.add_argument("--list", action="store_true", help="list tables, methods, profiles, datasets")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep each trained run's final model (its state_dict, the weights it "
                   "was evaluated with) beside its record, as s<split>-r<restart>.pt")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="nothing on stderr but warnings and errors (no progress bar, run "
                   "logs, plan summary or file list); what was asked for is still printed: the "
                   "table, and the plan's state under --dry-run and --collect")
    return p


def list_everything() -> str:
    with lenient_plugins():  # a plugin that fails to import is listed as broken, not fatal
        return _list_everything()


def _list_everything() -> str:
    lines = ["tables:"]
    for name in table_names():
        try:
            spec = load_table_spec(name)
        except ConfigError as err:
            lines.append(f"  {name}: broken: {err}")
            continue
        lines.append(f"  {name}: {spec.title} [{', '.join(spec.datasets)}; dims "
                     f"{', '.join(map(str, spec.dims))}; {len(spec.rows)} rows]")
    lines.append("methods:")
    for name, info in method_specs().items():  # read from the plugins' source: no torch
        rows = [Row.of(name, v) for v in info.variants]
        variants = ", ".join(f"{row.label} = {row.id}" for row in rows)
        lines.append(f"  {name}: {variants}")
        if info.summary:
            lines.append(f"    {info.summary}")
    for module, error in broken_plugins().items():
        lines.append(f"  broken: {module} failed to import ({error}): its methods are unavailable")
    lines.append("profiles:")
    for name in profile_names():
        try:
            lines.append(f"  {name}: {load_profile(name).description}")
        except ConfigError as err:
            lines.append(f"  {name}: broken: {err}")
    from .datasets import dataset_names

    lines.append(f"datasets: {', '.join(dataset_names())}")
    return "\n".join(lines)


def _csv(value: str | None, cast=str) -> set | None:
    return None if value is None else {cast(v.strip()) for v in value.split(",") if v.strip()}


def _dims(value: str | None) -> set | None:
    """--dims as a set of integers (checked against the table by the pipeline)."""
    try:
        return _csv(value, int)
    except ValueError:
        raise UsageError(f"--dims {value}: expected comma-separated integers, e.g. 10,50") from None


def request_from(args: argparse.Namespace) -> Request:
    """The pipeline's request for parsed arguments."""
    if not args.table:
        raise UsageError("--table is required (or --list); known tables: " + ", ".join(table_names()))
    return Request(
        table=args.table, profile=args.profile, overrides=tuple(args.overrides),
        data_root=args.data_root, download=args.download, results_dir=args.results_dir,
        launcher=args.launcher, jobs=args.jobs, threads=args.threads, cluster=args.cluster,
        wait=not args.no_wait, collect=args.collect, dry_run=args.dry_run, device=args.device,
        methods=_csv(args.methods), datasets=_csv(args.datasets), dims=_dims(args.dims),
        splits=args.splits, force=args.force, retry_failed=args.retry_failed, paired=args.paired,
        compare_paper=args.compare_paper, claims=args.claims, budget=args.budget,
        keep_weights=args.keep_weights,
        quiet=args.quiet)


def _figures(args) -> int:
    from .analyses import figures

    if args.table:
        raise UsageError("--figures draws the figures only; run --table separately")
    if args.claims:
        raise UsageError("--claims goes with --table: Figure 1's claim is reported with "
                         "--table 1 --claims (from the figures' saved result)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    argv = ["--data-root", args.data_root, "--results-dir", args.results_dir,
            "--device", resolve_device(args.device)] + (["--download"] if args.download else [])
    return figures.main(argv)


def _command(args) -> int:
    if args.list:
        print(list_everything())
        return 0
    if args.figures:
        return _figures(args)
    return run_request(request_from(args)).exit_code


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _launcher_errors() -> tuple[type, ...]:
    """benchmark.launch.LauncherError once launch is imported (nothing raised it before)."""
    module = sys.modules.get(f"{__package__}.launch")
    return (module.LauncherError,) if module is not None else ()


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # so `kill` cancels local jobs too
    # and SIGINT even when started from a background shell, which ignores it for its children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return _command(args)
    except (InputError, *_launcher_errors(), PluginImportError, UnknownMethodError) as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except OSError as err:  # results not writable: read-only, disk full, something in the way
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are recorded; rerun to continue", file=sys.stderr)
        return 130
