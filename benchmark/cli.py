"""`python reproduce.py --table N`: plan -> launch -> collect -> aggregate -> render."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from methods.registry import (
    PluginImportError,
    UnknownMethodError,
    broken_note,
    broken_plugins,
    lenient_plugins,
    registered_methods,
)

from .aggregate import floors, low_power_note, records_frame, summarize
from .errors import InputError, Unavailable, UsageError, describe_os_error, one_line
from .index_page import write_index
from .keys import RunKey
from .lazy import lazy_module
from .paper_tables import load_paper_table
from .plan import Plan, make_plan
from .profiles import apply_overrides, load_profile, profile_names
from .render import TableData, to_html, to_latex, to_markdown
from .specs import Row, load_table_spec, table_names
from .store import Record, ResultsStore, warn_once, write_text_atomic
from .yamlio import ConfigError

# heavy modules (torch, pandas, scipy, submitit) are imported when first used, so that --help,
# --list and a dry run start fast (benchmark.lazy)
torch = lazy_module("torch")
claims, compare, datasets, export, figures, timing = (
    lazy_module(f"{__package__}.{name}")
    for name in ("claims", "compare", "datasets", "export", "figures", "timing"))
LAUNCHERS = ("debug", "local", "slurm")  # benchmark.launch.LAUNCHERS, without importing it


def follow_up(*args, **kwargs):
    from .launch import follow_up as follow

    return follow(*args, **kwargs)


def launch(*args, **kwargs):
    from .launch import launch as launch_tasks

    return launch_tasks(*args, **kwargs)


def _launcher_errors() -> tuple[type, ...]:
    """benchmark.launch.LauncherError once launch is imported (nothing raised it before)."""
    module = sys.modules.get(f"{__package__}.launch")
    return (module.LauncherError,) if module is not None else ()

log = logging.getLogger("gpvae_bench")
DEFAULT_DATA_ROOT = os.environ.get("GPVAE_BENCH_DATA", "data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Train every method of a table of Kim (CVPR 2022) over splits x restarts, "
        "evaluate test log-likelihood by IWAE, t-test against the best method, and write the "
        "table as Markdown, LaTeX and HTML under RESULTS/tables/.",
    )
    p.add_argument("--table", help="which table to reproduce (see --list)")
    p.add_argument("--profile", default="quick",
                   help="work size: smoke (seconds), quick (minutes on a CPU), paper (the paper's "
                   "protocol), or a path to a profile YAML (default: quick)")
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
    p.add_argument("--jobs", type=int, default=1,
                   help="local launcher: runs at the same time; CPU threads are shared among "
                   "them (default: 1)")
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
                   help="print the plan (done / pending / failed runs) and exit")
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
    p.add_argument("--figures", action="store_true",
                   help="draw the paper's Figures 1-2 (2-D latent GPVAE on MNIST) under "
                   "RESULTS/figures/ with --data-root/--download/--results-dir/--device/--threads; "
                   "`python -m benchmark.figures --help` lists the figure settings")
    p.add_argument("--list", action="store_true", help="list tables, methods, profiles, datasets")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch log lines")
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
    for name, info in registered_methods().items():
        rows = [Row.of(name, v) for v in info.variants]
        variants = ", ".join(f"{row.label} = {row.id}" for row in rows)
        lines.append(f"  {name}: {variants}")
    for module, error in broken_plugins().items():
        lines.append(f"  broken: {module} failed to import ({error}): its methods are unavailable")
    lines.append("profiles:")
    for name in profile_names():
        try:
            lines.append(f"  {name}: {load_profile(name).description}")
        except ConfigError as err:
            lines.append(f"  {name}: broken: {err}")
    lines.append(f"datasets: {', '.join(datasets.dataset_names())}")
    return "\n".join(lines)


def _csv(value: str | None, cast=str) -> set | None:
    return None if value is None else {cast(v.strip()) for v in value.split(",") if v.strip()}


def _dims(value: str | None, table_dims) -> set | None:
    """--dims as a set of the table's latent sizes; anything else is a usage error."""
    if value is None:
        return None
    try:
        dims = _csv(value, int)
    except ValueError:
        raise UsageError(f"--dims {value}: expected comma-separated integers, e.g. 10,50") from None
    unknown = sorted(dims - set(table_dims))
    if unknown:
        raise UsageError(f"--dims: {unknown[0]} is not a latent size of this table; its sizes: "
                         + ", ".join(str(d) for d in table_dims))
    return dims


def _resolve_device(name: str, here: bool = True) -> str:
    """--device checked; with `here` (the runs execute on this machine) resolved: auto = cuda when
    this machine has one. Not `here` (Slurm: the runs execute on the nodes), the request itself,
    which each run resolves on its node (benchmark.run.resolve_device)."""
    if name != "auto":
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError):
            raise UsageError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None
        if device.type not in ("cpu", "cuda"):
            raise UsageError(f"--device {name}: only cpu and cuda are supported")
    if not here:
        return name
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    return name


def _check_rows(spec, methods: set | None, option: str | None) -> None:
    """--methods must select some row of the table, and the selected rows' plugins must import."""
    selected = [row for row in spec.rows if row.selected_by(methods)]
    if not selected:
        families = ", ".join(dict.fromkeys(row.method for row in spec.rows))
        raise UsageError(f"--methods {option}: selects none of the rows of {spec.name}; its "
                         f"methods: {families} (or rows by id, see --list)")
    unavailable = [row for row in selected if not row.has_plugin]
    if unavailable and broken_plugins():
        raise PluginImportError(f"row {unavailable[0].label} of {spec.name} needs method "
                                f"{unavailable[0].method!r}, which is not registered"
                                + broken_note())


def _check_results_dir(results_dir: str) -> None:
    """Before any training: the results folder must be a folder this process can write into."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise Unavailable(f"--results-dir {path} is a file, not a folder: move it away or choose "
                          "another --results-dir")
    path.mkdir(parents=True, exist_ok=True)  # an OSError here is reported by main()
    with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
        pass


def _data_missing(plan: Plan, data_root: str) -> None:
    """Say why a column without a single record was not run: its files are not there (a cheap
    look, so that --collect keeps the reason too). A column with records shows them."""
    loaders = {t.key.dataset: t.data_name for t in plan.tasks}
    for ds, loader in loaders.items():
        tasks = [t for t in plan.tasks if t.key.dataset == ds]
        if any(plan.states[t.key] in ("done", "failed") for t in tasks):
            if plan.unavailable.get(ds) == "data missing":
                del plan.unavailable[ds]
        elif ds not in plan.unavailable and not datasets.files_present(loader, data_root):
            plan.unavailable[ds] = "data missing"


def _check_data(plan: Plan, pending, requested: set | None, data_root: str, download: bool):
    """The pending runs whose data can be loaded; the columns left out are marked unavailable.
    Missing data is an error only for a column the user named, or when the table would show
    nothing at all (no other column to run and no finished run)."""
    columns = {t.key.dataset: t.data_name for t in pending}
    others = any(t.key.dataset not in columns or plan.states[t.key] in ("done", "failed")
                 for t in plan.tasks)
    _, missing = datasets.load_columns(columns, data_root, download, named=requested,
                                       others=others)
    for ds in missing:
        plan.unavailable[ds] = "data missing"
    return [t for t in pending if t.key.dataset not in missing]


def collect_records(plan: Plan) -> list[Record]:
    """The current records of the plan's runs, validated by the store (a corrupt one is reported
    in one warning line and left out; a run sets it aside and redoes it)."""
    records = []
    for task in plan.tasks:
        rec = task.store.current(task.key, task.config_hash())
        if rec is not None:
            records.append(rec)
    return records


def build_table(plan: Plan, spec, profile, records: list[Record], paired: bool) -> TableData:
    frame = records_frame(records, spec.metric)
    failed: dict = {}
    for rec in records:
        if not rec.ok:
            k = rec.key
            idx = (k.dataset, k.dim, k.method, k.variant)
            failed[idx] = failed.get(idx, 0) + 1
    test = "paired t-test over shared splits" if paired else "two-sided Welch t-test"
    caption = (
        f"Profile '{profile.name}': {profile.splits} splits x {profile.restarts} restarts "
        f"(best validation IWAE kept), {profile.epochs} epochs, "
        f"{profile.train_size or 'all'} training images, IWAE K={profile.iwae_k} on "
        f"{profile.test_size or 'all'} test images. Mean ± sample std over splits (nats). "
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."
    )
    cells = summarize(frame, paired=paired)
    legend = " ".join(filter(None, [
        f"Red bold: best mean in the column. Blue bold: {test} against the best gives p > 0.01. "
        "Plain: p <= 0.01. 'below floor': fewer than 100 nats above the mean-image model "
        "(last row), a sign of a broken run.",
        low_power_note(cells, paired=paired),
    ]))
    return TableData(spec, cells, floors(frame), dict(plan.unavailable), failed, caption, legend)


def write_tables(data: TableData, results_dir: Path, paper=None, claim_report=None) -> list[Path]:
    out = ResultsStore(results_dir).tables_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in (("md", to_markdown(data)), ("tex", to_latex(data)),
                         ("html", to_html(data))):
        path = out / f"{data.spec.name}.{suffix}"
        write_text_atomic(path, text)
        paths.append(path)
    if paper is not None:
        paths += compare.write_comparison(data, paper, out)
    if claim_report is not None:
        paths += claims.write_report(claim_report, out)
    paths += export.write_records_export(results_dir, [data.spec])  # every record, one row each
    paths.append(write_index(results_dir))
    return paths


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def run(args) -> int:
    if args.list:
        print(list_everything())
        return 0
    if args.figures:
        return _figures(args)
    if not args.table:
        raise UsageError("--table is required (or --list); known tables: "
                         + ", ".join(table_names()))
    spec = load_table_spec(args.table)
    paper = load_paper_table(spec.name) if args.compare_paper else None
    claim_set = claims.load_claims(spec.name) if args.claims else None
    profile = apply_overrides(load_profile(args.profile), args.overrides)
    methods = _csv(args.methods)
    unknown = sorted((methods or set()) - set(registered_methods()) - {r.id for r in spec.rows})
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; registered methods: "
                         + ", ".join(registered_methods()) + f"; rows of {spec.name}: "
                         + ", ".join(r.id for r in spec.rows) + broken_note())
    _check_rows(spec, methods, args.methods)
    requested = _csv(args.datasets)
    for ds in requested or ():
        if ds not in spec.datasets:
            raise UsageError(f"dataset {ds!r} is not in {spec.name}; its datasets: "
                             + ", ".join(spec.datasets))
    dims = _dims(args.dims, spec.dims)
    if args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    # under Slurm the device is decided on the node where each run executes, not here
    device = _resolve_device(args.device, here=args.launcher != "slurm" or timing.is_timing_table(spec))
    if args.splits is not None:
        if not 1 <= args.splits <= profile.splits:
            raise UsageError(f"--splits must be between 1 and {profile.splits} for profile "
                             f"{profile.name!r}")
        profile = dataclasses.replace(profile, splits=args.splits)
    if not args.dry_run:
        _check_results_dir(args.results_dir)
    if timing.is_timing_table(spec):  # nothing to train: timed in this process
        if args.compare_paper:
            raise UsageError(f"--compare-paper compares log-likelihood tables; {spec.name} is a "
                             "timing table (the paper's times are in benchmark/paper/table3.yaml)")
        rc = 0
        if not (args.collect and args.claims):  # --collect --claims: the stored times only
            rc = timing.run_timing_table(spec, profile, args, device, methods, requested, dims)
        if claim_set is not None and rc == 0 and not args.dry_run:
            _timing_claims(spec, profile, claim_set, Path(args.results_dir))
        return rc
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    threads = args.threads
    if threads is None and args.launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // args.jobs)

    def planned() -> Plan:
        return make_plan(spec, profile, data_root=args.data_root, results_dir=args.results_dir,
                         device=device, threads=threads, download=args.download, methods=methods,
                         dataset_filter=requested, dims=dims)

    # the submitit folder (job pickles, per-task logs) lives with the results: on a cluster, a
    # filesystem that the nodes share
    folder = ResultsStore(args.results_dir).jobs_dir(profile.name, spec.name)
    plan = planned()
    # every run this command would submit (failed ones too under --retry-failed, done ones under
    # --force) is looked up in Slurm's queue, in one squeue call: never two jobs for one run
    looked_up = {t.key: t for t in plan.tasks if plan.states[t.key] == "missing"}
    if not args.collect:
        looked_up.update((t.key, t) for t in plan.pending(args.retry_failed, args.force))
    in_flight, ended = follow_up(folder, list(looked_up.values()), record=not args.dry_run)
    if ended:
        plan = planned()  # runs whose job ended without a record are now recorded as failed
    for row in plan.rows_without_plugin:
        log.warning("row %s: no plugin registered for method %r yet", row.label, row.method)
    for ds, why in plan.unavailable.items():
        if why != "not selected":
            log.warning("dataset %s: %s", ds, why)
    pending = [] if args.collect else plan.pending(args.retry_failed, args.force)
    pending = [t for t in pending if t.key not in in_flight]  # never two jobs for one run
    queued = f"; {len(in_flight)} queued or running in Slurm" if in_flight else ""
    print(f"{spec.name}, profile {profile.name}: {plan.summary()}{queued}; {len(pending)} to run",
          file=sys.stderr)
    cluster = None
    if args.launcher == "slurm" and pending:
        from .cluster import load_cluster_profile

        if not args.cluster:
            raise UsageError("--launcher slurm needs --cluster NAME (a slurm/NAME.yaml profile)")
        cluster = load_cluster_profile(args.cluster)
    if args.dry_run:
        for task in pending:
            print(f"  would run {task.key} ({plan.states[task.key]})")
        for key, claim in plan.in_progress():
            print(f"  in progress: {key} ({claim.describe()}): not started again")
        for key, (job_id, state) in in_flight.items():
            print(f"  in Slurm: {key} (job {job_id}, {state}): not submitted again")
        if cluster is not None:
            print(_slurm_dry_run(pending, folder, cluster, device=device, data_root=args.data_root,
                                 results_dir=args.results_dir))
        return 0
    pending = _check_data(plan, pending, requested, args.data_root, args.download)
    for task in pending:  # each run's worker sets the record aside, under the run's claim
        state = plan.states[task.key]
        if state in ("corrupt", "stale"):
            warn_once(state, task.record_path, "%s record %s (%s): set aside and redone", state,
                      task.record_path, plan.why[task.key].rpartition("corrupt record (")[2].rstrip(")"))
    for key, claim in plan.dead_claims():
        if any(t.key == key for t in pending):
            warn_once("dead claim", claim.path, "run %s: taking over the claim of a dead owner "
                      "(%s; %s)", key, claim.describe(), claim.dead_because())
    for key, claim in plan.in_progress():
        log.warning("run %s: in progress elsewhere (%s): not started again", key, claim.describe())

    start = time.perf_counter()
    results = launch(pending, launcher=args.launcher, jobs=args.jobs, cluster_profile=cluster,
                     folder=folder, wait=not args.no_wait)
    if pending and not (args.launcher == "slurm" and args.no_wait):
        print(f"trained {len(pending)} runs in {time.perf_counter() - start:.0f}s",
              file=sys.stderr)
    elif pending:
        print("submitted; run again with --collect to render what has finished", file=sys.stderr)
        return 0

    # the table shows every row and column with records, whatever --methods/--datasets/--dims ran
    table_plan = plan
    if (methods, requested, dims) != (None, None, None):
        table_plan = make_plan(spec, profile, data_root=args.data_root,
                               results_dir=args.results_dir, device=device, threads=threads,
                               download=args.download)
        table_plan.unavailable.update(plan.unavailable)
        for ds, why in plan.unavailable.items():
            if why == "not selected":
                del table_plan.unavailable[ds]
    _data_missing(table_plan, args.data_root)
    all_records = collect_records(table_plan)
    records = [r for r in all_records if r.key in plan.states]  # the runs this command selected
    data = build_table(table_plan, spec, profile, all_records, args.paired)
    report = None
    if claim_set is not None:
        report = claims.build_report(
            spec, claim_set, results_dir=args.results_dir, records=all_records,
            caption=f"Profile '{profile.name}': {profile.splits} splits x {profile.restarts} "
            "restarts (best validation IWAE kept per split).")
    paths = write_tables(data, Path(args.results_dir), paper, report)
    print(to_markdown(data, ansi=sys.stdout.isatty()))
    if paper is not None:
        print(compare.to_markdown(data, paper))
    if report is not None:
        print(claims.to_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)

    failures = [r for r in records if not r.ok]
    for rec in failures:
        print(f"failed: {rec.key}: {rec.error} (log: {rec.log_file})", file=sys.stderr)
    for res in results:
        if res.get("status") == "skipped":
            print(f"skipped: {RunKey(**res['key'])}: {res['reason']}", file=sys.stderr)
    if args.collect:
        unfinished = len(plan.tasks) - len(records)
        if unfinished:
            queued = f" ({len(in_flight)} queued or running in Slurm)" if in_flight else ""
            running = len(plan.in_progress())
            running = f" ({running} in progress)" if running else ""
            print(f"pending: {unfinished} runs have no current record yet{queued}{running}",
                  file=sys.stderr)
    return 1 if failures else 0


def _timing_claims(spec, profile, claim_set, results_dir: Path) -> None:
    """The claims about a timing table, from its stored timings.json (written by the run)."""
    path = claims.timings_path(results_dir, profile.name, spec.name)
    report = claims.build_report(spec, claim_set, results_dir=results_dir,
                                 timings=claims.read_timings(path), timing_source=str(path),
                                 caption=f"Profile '{profile.name}': times from {path}.")
    paths = claims.write_report(report, ResultsStore(results_dir).tables_dir()) + [
        write_index(results_dir)]
    print(claims.to_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


def _figures(args) -> int:
    if args.table:
        raise UsageError("--figures draws the figures only; run --table separately")
    if args.claims:
        raise UsageError("--claims goes with --table: Figure 1's claim is reported with "
                         "--table 1 --claims (from the figures' saved result)")
    if args.threads:
        torch.set_num_threads(args.threads)
    argv = ["--data-root", args.data_root, "--results-dir", args.results_dir,
            "--device", _resolve_device(args.device)] + (["--download"] if args.download else [])
    return figures.main(argv)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5940 else f"{seconds / 3600:.1f} h"


def _slurm_dry_run(pending, folder: Path, cluster, *, device: str, data_root: str,
                   results_dir: str) -> str:
    """What --launcher slurm would submit: per job array its runs and jobs after packing, the
    device its runs will use, a time estimate against its time limit and its #SBATCH lines; the
    sweep's cap, GPU-hours, and whether the data is where the jobs will look."""
    from .cluster import expected_device, max_array_size
    from .estimate import estimate_run, measured_costs
    from .launch import slurm_arrays

    size, size_from = max_array_size(cluster)
    arrays = slurm_arrays(pending, folder, cluster, max_size=size)
    jobs = sum(len(a.packs) for a in arrays)
    lines = [f"slurm: would submit {len(pending)} runs as {jobs} jobs in {len(arrays)} job arrays "
             f"with cluster profile {cluster.name} ({cluster.source}); nothing submitted"]
    if cluster.sweep_parallelism:
        lines.append(f"  at most {cluster.sweep_parallelism} jobs of the sweep at once "
                     "(sweep_parallelism, shared among the arrays)")
    else:
        lines.append("  no cap on the whole sweep (sweep_parallelism unset): each array's own "
                     "array_parallelism applies")
    lines.append(f"  arrays split at {size} jobs ({size_from})")
    loaders = {t.key.dataset: t.data_name for t in pending}
    for ds, loader in sorted(loaders.items()):
        there = datasets.files_present(loader, data_root)
        lines.append(f"  data: {ds} {'found' if there else 'MISSING'} under {data_root} (on this "
                     "machine; the nodes must see the same path)"
                     + ("" if there else ": its runs would fail; --download, or copy it there"))
    costs = measured_costs(results_dir)
    total_low = total_high = 0.0
    unknown = 0
    for array in arrays:
        res = cluster.resources(array.method)
        gpus = res.get("gpus_per_node", 0)
        cap = f"; at most {array.parallelism} at once" if array.parallelism else ""
        after = f", after {arrays[array.after].name} (afterany)" if array.after is not None else ""
        lines.append(f"  array {array.name}: {len(array.tasks)} runs in {len(array.packs)} jobs "
                     f"({array.runs_per_task} runs per job: {array.packing}){cap}{after}")
        lines.append(f"    device: {expected_device(device, cluster, array.method)}")
        estimates = {t.key: estimate_run(t, bool(gpus), costs) for t in array.tasks}
        if any(e.seconds is None for e in estimates.values()):
            unknown += sum(e.seconds is None for e in estimates.values())
            why = next(e.source for e in estimates.values() if e.seconds is None)
            lines.append(f"    estimate: none for some runs ({why})")
        else:
            lows = [max(estimates[t.key].seconds for t in pack) for pack in array.packs]
            highs = [sum(estimates[t.key].seconds for t in pack) for pack in array.packs]
            per_run = [e.seconds for e in estimates.values()]
            sources = sorted({e.source.split(" (")[0] for e in estimates.values()})
            notes = sorted({e.source.split(" (", 1)[1].rstrip(")") for e in estimates.values()
                            if " (" in e.source})
            sources += [f"stand-ins: {', '.join(notes)}"] if notes else []
            limit = res.get("timeout_min")
            verdict = ("no time limit in the profile" if limit is None else
                       f"time limit {limit} min: " + (
                           "fits even back to back" if limit * 60 >= max(highs) else
                           "fits only if its runs overlap" if limit * 60 >= max(lows) else
                           "too short even for one run: it will be requeued (max_requeues) from "
                           "its checkpoints, or fail"))
            lines.append(f"    estimate: {_minutes(min(per_run))}-{_minutes(max(per_run))} per run "
                         f"({'; '.join(sources)}); a job {_minutes(max(lows))} (its runs fully "
                         f"overlapping) to {_minutes(max(highs))} (back to back); {verdict}")
            scale = gpus or 1
            total_low += scale * sum(lows)
            total_high += scale * sum(highs)
        lines += [f"    {line}" for line in array.directives]
        lines += [f"    setup: {line}" for line in res.get("setup", [])]
    unit = "GPU-hours" if any(cluster.resources(a.method).get("gpus_per_node") for a in arrays) \
        else "job-hours (no GPU asked for)"
    missing = f"; {unknown} runs without an estimate left out" if unknown else ""
    lines.append(f"  estimate: {total_low / 3600:.0f}-{total_high / 3600:.0f} {unit} (jobs x GPUs x "
                 "job time; packed runs fully overlapping to back to back; all epochs, early "
                 f"stopping ends runs sooner{missing}; see benchmark/estimate.py)")
    return "\n".join(lines)


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)  # so `kill` cancels local jobs too
    # and SIGINT even when started from a background shell, which ignores it for its children
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return run(args)
    except (InputError, *_launcher_errors(), PluginImportError, UnknownMethodError) as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except OSError as err:  # results not writable: read-only, disk full, something in the way
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished runs are recorded; rerun to continue", file=sys.stderr)
        return 130
