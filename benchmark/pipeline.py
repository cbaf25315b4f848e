"""One table, from request to rendered files: resolve -> plan -> follow up Slurm -> launch ->
collect -> aggregate -> render. This is the harness's Python API; `reproduce.py` (benchmark.cli)
only turns argv into a `Request` and prints the errors.

    from benchmark.pipeline import Request, run
    outcome = run(Request(table="1", profile="claims", methods={"vae", "gpvae"}, dims={10},
                          splits=1, data_root="../shared/data"))
    outcome.table.cells  # {(dataset, dim): {(method, variant): Cell}}; outcome.paths: the files written

A timing table (metric inference_ms, Table 3) is another kind of evaluation on the same path: its
plan is the table's (column, row) cells, "launching" times them in this process (untrained models
need no training runs), its record is timings.json, and benchmark.render writes it as every table.
Bad input raises errors.InputError (or a launcher / plugin error) with a one-line message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import datasets
from .errors import Unavailable, UsageError
from .keys import RunKey
from .plan import Plan, make_plan
from .profiles import apply_overrides, load_profile
from .specs import load_table_spec
from .store import Record, ResultsStore, warn_once, warn_unusable_checkpoint, write_text_atomic

log = logging.getLogger("gpvae_bench")
DEFAULT_DATA_ROOT = os.environ.get("GPVAE_BENCH_DATA", "data")
LAUNCHERS = ("debug", "local", "slurm")


def _frozen(values, cast=str) -> frozenset | None:
    """None (everything), or the set; a string is comma-separated ("vae,gpvae", "10,50")."""
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    return None if values is None else frozenset(cast(v) for v in values)


@dataclass(frozen=True)
class Request:
    """What to do, as the command line says it (`reproduce.py --help` explains each field); names
    are checked against the table when the request is run."""

    table: str  # "1", "table1" or a spec file
    profile: str | None = None  # a name in benchmark/profiles or a YAML path; None: chosen for
    # this machine (benchmark.machine: claims on a CPU, paper with CUDA or under Slurm)
    overrides: tuple[str, ...] = ()  # "KEY=VALUE" on top of the profile (--set)
    data_root: str = DEFAULT_DATA_ROOT
    download: bool = False
    results_dir: str = "results"
    launcher: str = "local"  # debug (this process), local (subprocesses), slurm
    jobs: int | None = None  # local launcher; None: one run per CPU core (one on a GPU)
    threads: int | None = None
    cluster: str | None = None  # slurm: cluster profile name or path
    wait: bool = True  # slurm: False submits and returns (--no-wait)
    collect: bool = False  # launch nothing: render what exists
    dry_run: bool = False  # say what would run and how long it would take; change nothing
    device: str = "auto"
    methods: Collection[str] | None = None  # families (sa) or rows (sa-k4); None = every row
    datasets: Collection[str] | None = None
    dims: Collection[int] | None = None
    splits: int | None = None  # the profile's first N splits
    force: bool = False
    retry_failed: bool = False
    paired: bool = False
    compare_paper: bool = False
    claims: bool = False
    budget: str | None = None  # with claims: plan the sweep to decide claims within this duration
    keep_weights: bool = False  # keep each run's final state_dict beside its record
    quiet: bool = False  # nothing but warnings and errors on the console

    def __post_init__(self):
        for name, cast in (("methods", str), ("datasets", str), ("dims", int)):
            object.__setattr__(self, name, _frozen(getattr(self, name), cast))
        object.__setattr__(self, "overrides", tuple(self.overrides))


@dataclass
class Outcome:
    """What a request produced: the exit code `reproduce.py` returns, the table as rendered, the
    files written, this request's records, and one line per problem (failed or skipped run)."""

    exit_code: int = 0
    table: object = None  # render.TableData (log-likelihood tables) or {(dataset, dim): {row: ms}}
    paths: list[Path] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Console:
    """Where the pipeline talks: what was asked for (the table, the dry run's report) to stdout,
    progress and chatter to stderr; with `quiet`, stderr has nothing but warnings and errors (the
    log's WARNING and up, and `problem` lines: failed and skipped runs)."""

    def __init__(self, quiet: bool = False, reporting: bool = False):
        self.quiet = quiet
        self.reporting = reporting  # --dry-run, --collect: the plan's state is what was asked

    def result(self, text: str) -> None:
        print(text)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    def status(self, text: str) -> None:
        """The plan's state (done / to run / pending): chatter in a training run, but the report
        itself under --dry-run and --collect, so said there even when quiet."""
        if self.reporting or not self.quiet:
            print(text, file=sys.stderr)

    def problem(self, text: str) -> None:
        print(text, file=sys.stderr)


# ------------------------------------------------------------------ resolve: check the request


@dataclass
class Sweep:
    """A request checked against its table and profile."""

    request: Request
    spec: object
    profile: object
    device: str
    threads: int | None
    paper: object = None
    claim_set: object = None
    console: Console = field(default_factory=Console)
    choice: object = None  # what benchmark.machine chose (profile, jobs); None: all given

    @property
    def timing(self) -> bool:
        return self.spec.timing

    @property
    def folder(self) -> Path:
        """submitit's folder (job pickles, per-task logs), with the results: on a cluster, a file
        system the nodes share."""
        return ResultsStore(self.request.results_dir).jobs_dir(self.profile.name, self.spec.name)

    def plan(self, selected: bool = True) -> Plan:
        """The runs this request selects (or, not `selected`, every run of the table)."""
        r = self.request
        pick = dict(methods=r.methods, dataset_filter=r.datasets, dims=r.dims) if selected else {}
        return make_plan(self.spec, self.profile, data_root=r.data_root, results_dir=r.results_dir,
                         device=self.device, threads=self.threads, download=r.download, **pick)


def resolve(request: Request) -> Sweep:
    """Check every name and number of `request` against its table and profile (UsageError,
    ConfigError, ... with one line naming the fix) before anything is planned or trained."""
    from methods.registry import broken_note, method_specs

    r = request
    if not r.table:
        from .specs import table_names

        raise UsageError("--table is required (or --list); known tables: " + ", ".join(table_names()))
    if r.launcher not in LAUNCHERS:
        raise UsageError(f"--launcher {r.launcher}: choose from {', '.join(LAUNCHERS)}")
    from .machine import choose

    r, choice = choose(r)  # --profile, --jobs not given: chosen for this machine
    spec = load_table_spec(r.table)
    paper = claim_set = None
    if r.compare_paper:
        from .paper_tables import load_paper_table

        paper = load_paper_table(spec.name)
    earlier_report = ResultsStore(r.results_dir).tables_dir() / f"{spec.name}_claims.md"
    if r.claims or earlier_report.exists():  # a claims report written earlier is kept current
        from .analyses import claims

        claim_set = claims.load_claims(spec.name)
    profile = apply_overrides(load_profile(r.profile), list(r.overrides))
    unknown = sorted((r.methods or set()) - set(method_specs()) - {row.id for row in spec.rows})
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; registered methods: "
                         + ", ".join(method_specs()) + f"; rows of {spec.name}: "
                         + ", ".join(row.id for row in spec.rows) + broken_note())
    _check_rows(spec, r.methods, builds=not (r.dry_run or r.collect))
    for option, given, known in (("--datasets", r.datasets, spec.datasets), ("--dims", r.dims, spec.dims)):
        if given is not None and not given:  # "--dims ," names none
            raise UsageError(f"{option}: names none; those of {spec.name}: {', '.join(map(str, known))}")
    for ds in sorted(r.datasets or ()):
        if ds not in spec.datasets:
            raise UsageError(f"dataset {ds!r} is not in {spec.name}; its datasets: "
                             + ", ".join(spec.datasets))
    wrong = sorted((r.dims or set()) - set(spec.dims))
    if wrong:
        raise UsageError(f"--dims: {wrong[0]} is not a latent size of this table; its sizes: "
                         + ", ".join(str(d) for d in spec.dims))
    if r.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    timing = spec.timing
    # under Slurm the device is decided on the node where each run executes, not here
    device = resolve_device(r.device, here=r.launcher != "slurm" or timing)
    if r.budget is not None:
        _check_budget(r, spec, claim_set)
        from .analyses.claim_budget import Planning  # the budget chooses each comparison's splits

        profile = dataclasses.replace(profile, splits=max(profile.splits,
                                                          Planning.of(claim_set).max_splits))
    if r.splits is not None:
        if not 1 <= r.splits <= profile.splits:
            raise UsageError(f"--splits must be between 1 and {profile.splits} for profile "
                             f"{profile.name!r}")
        profile = dataclasses.replace(profile, splits=r.splits)
    if not r.dry_run:
        check_results_dir(r.results_dir)
    if timing and r.compare_paper:
        raise UsageError(f"--compare-paper compares log-likelihood tables; {spec.name} is a "
                         "timing table (the paper's times are in benchmark/paper/table3.yaml)")
    if r.threads is not None and r.threads < 1:
        raise UsageError("--threads must be >= 1")
    threads = r.threads
    if threads is None and r.launcher == "local":
        threads = max(1, (os.cpu_count() or 1) // r.jobs)
    if r.launcher == "local" and r.jobs > (os.cpu_count() or 1) and not (r.collect or timing):
        log.warning("--jobs %d: more runs at once than this machine's %d CPU cores; they will share "
                    "the cores (each run slower, the sweep no faster than --jobs %d)", r.jobs,
                    os.cpu_count() or 1, os.cpu_count() or 1)
    return Sweep(r, spec, profile, device, threads, paper, claim_set,
                 Console(r.quiet, reporting=r.dry_run or r.collect), choice=choice)


def _check_budget(r: Request, spec, claim_set) -> None:
    from .analyses.claim_budget import parse_budget

    parse_budget(r.budget)
    if not r.claims:
        raise UsageError("--budget plans a sweep to decide the paper's claims: use it with --claims")
    if spec.timing:
        raise UsageError(f"--budget plans training runs; {spec.name} is a timing table")
    if r.splits is not None:
        raise UsageError("--budget chooses how many splits each comparison gets: leave out --splits")
    if r.collect or r.launcher == "slurm":
        raise UsageError("--budget plans a sweep on this machine: not with --collect or "
                         "--launcher slurm")


def resolve_device(name: str, here: bool = True) -> str:
    """--device checked; with `here` (the runs execute on this machine) resolved: auto = cuda when
    this machine has one. Not `here` (Slurm: the runs execute on the nodes), the request itself,
    which each run resolves on its node (benchmark.run.resolve_device)."""
    import torch

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


def _check_rows(spec, methods, builds: bool = True) -> None:
    """--methods must select some row of the table, and the selected rows' plugins must import:
    when it `builds` models (trains or times), each selected row's plugin is imported here, so that
    an error in a plugin's body (which reading its source cannot see) fails the command in one line
    before anything runs; a dry run or --collect reads the plugins' source and imports none."""
    from methods.registry import (
        PluginImportError,
        UnknownMethodError,
        broken_note,
        broken_plugins,
        get_method,
        method_specs,
    )

    selected = [row for row in spec.rows if row.selected_by(methods)]
    if not selected:
        families = ", ".join(dict.fromkeys(row.method for row in spec.rows))
        option = ",".join(sorted(methods)) if methods else ""
        raise UsageError(f"--methods {option}: selects none of the rows of {spec.name}; its "
                         f"methods: {families} (or rows by id, see --list)")
    known = method_specs()
    if builds:
        for method in dict.fromkeys(row.method for row in selected if row.method in known):
            try:
                get_method(method)
            except UnknownMethodError:  # its module failed to import: now in broken_plugins()
                pass
        known = method_specs()
    unavailable = [row for row in selected if row.method not in known]
    if unavailable and broken_plugins():
        raise PluginImportError(f"row {unavailable[0].label} of {spec.name} needs method "
                                f"{unavailable[0].method!r}, which is not registered"
                                + broken_note())
    if unavailable:  # a spec is the user's intent: a row no plugin serves is a typo, not a gap
        row = unavailable[0]
        raise UsageError(f"row {row.id} of {spec.name} names method {row.method!r}, which has no "
                         f"plugin; known methods: {', '.join(known)} (fix the row, or leave it out "
                         "with --methods)")


def check_results_dir(results_dir: str) -> None:
    """Before any training: the results folder must be a folder this process can write into."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise Unavailable(f"--results-dir {path} is a file, not a folder: move it away or choose "
                          "another --results-dir")
    path.mkdir(parents=True, exist_ok=True)  # an OSError here is reported by the caller
    with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
        pass


# ------------------------------------------------------------------ run: the sequence


def run(request: Request) -> Outcome:
    """Do what `request` asks; see the module docstring."""
    sweep = resolve(request)
    if sweep.timing:
        return _run_timing(sweep)
    return _run_training(sweep)


def _run_training(sweep: Sweep) -> Outcome:
    r, con = sweep.request, sweep.console
    plan = sweep.plan()
    plan, in_flight = follow_up_slurm(sweep, plan)
    if sweep.choice is not None:  # the bare command: first, what was chosen here and the estimate
        from .machine import announce

        if not announce(sweep, plan, in_flight):  # a person said no to a long sweep
            return Outcome()
    for row in plan.rows_without_plugin:
        log.warning("row %s: no plugin registered for method %r yet", row.label, row.method)
    for ds, why in plan.unavailable.items():
        if why != "not selected":
            log.warning("dataset %s: %s", ds, why)
    pending = [] if r.collect else plan.pending(r.retry_failed, r.force)
    pending = [t for t in pending if t.key not in in_flight]  # never two jobs for one run
    if r.budget is not None:  # only the runs the claims plan chose
        budget_plan = plan_claims_budget(sweep, plan)
        con.result(budget_plan.text())
        chosen = {t.key for t in budget_plan.tasks}
        pending = [t for t in pending if t.key in chosen]
    queued = f"; {len(in_flight)} queued or running in Slurm" if in_flight else ""
    con.status(f"{sweep.spec.name}, profile {sweep.profile.name}: {plan.summary()}{queued}; "
            f"{len(pending)} to run")
    cluster = _cluster(sweep) if pending else None
    if r.dry_run:
        con.result(dry_run_report(sweep, plan, pending, in_flight, cluster))
        return Outcome()
    pending = _check_data(plan, pending, r.datasets, r.data_root, r.download)
    _announce(sweep, plan, pending)

    outcome = Outcome()
    start = time.perf_counter()
    results = launch_runs(sweep, pending, cluster)
    if results is None:  # submitted to Slurm without waiting
        con.say("submitted; run again with --collect to render what has finished")
        return outcome
    if pending:
        con.say(f"trained {len(pending)} runs in {time.perf_counter() - start:.0f}s")

    table_plan = _table_plan(sweep, plan)
    all_records = collect_records(table_plan)
    outcome.records = [rec for rec in all_records if rec.key in plan.states]  # this request's
    outcome.table = build_table(table_plan, sweep.spec, sweep.profile, all_records, r.paired)
    report = None
    if sweep.claim_set is not None:
        from .analyses import claims

        p = sweep.profile
        report = claims.build_report(
            sweep.spec, sweep.claim_set, results_dir=r.results_dir, records=all_records,
            caption=f"Profile '{p.name}': {p.splits} splits x {p.restarts} "
            "restarts (best validation IWAE kept per split).")
    outcome.paths = write_tables(outcome.table, Path(r.results_dir), sweep.paper, report)
    _show(sweep, outcome.table, report)
    con.say("wrote " + ", ".join(str(p) for p in outcome.paths))

    for rec in outcome.records:
        if not rec.ok:
            outcome.problems.append(f"failed: {rec.key}: {rec.error} (log: {rec.log_file})")
    for res in results:
        if res.get("status") == "skipped":
            outcome.problems.append(f"skipped: {RunKey(**res['key'])}: {res['reason']}")
    for line in outcome.problems:
        con.problem(line)
    if r.collect:
        unfinished = len(plan.tasks) - len(outcome.records)
        if unfinished:
            queued = f" ({len(in_flight)} queued or running in Slurm)" if in_flight else ""
            running = len(plan.in_progress())
            running = f" ({running} in progress)" if running else ""
            con.status(f"pending: {unfinished} runs have no current record yet{queued}{running}")
    outcome.exit_code = 1 if any(not rec.ok for rec in outcome.records) else 0
    return outcome


def plan_claims_budget(sweep: Sweep, plan: Plan):
    """--claims --budget: which of the plan's runs to train so that as many claims as possible are
    decided within the budget (benchmark.analyses.claim_budget)."""
    from .analyses.claim_budget import parse_budget, plan_budget

    r = sweep.request
    paper = None
    try:
        from .paper_tables import load_paper_table

        paper = load_paper_table(sweep.spec.name)
    except (ValueError, KeyError, OSError):  # no paper numbers: plan for the tie tolerance
        paper = None
    there = {t.data_name for t in plan.tasks}
    there = {name for name in there if r.download or datasets.files_present(name, r.data_root)}
    tasks = [t for t in plan.tasks if t.data_name in there]
    missing = sorted({t.key.dataset for t in plan.tasks if t.data_name not in there})
    scope = (f"profile {sweep.profile.name}, {len({(t.key.method, t.key.variant) for t in tasks})} "
             f"rows x {len({(t.key.dataset, t.key.dim) for t in tasks})} columns selected"
             + (f" (left out, data missing under {r.data_root}: {', '.join(missing)})"
                if missing else ""))
    return plan_budget(sweep.spec, sweep.claim_set, tasks, collect_records(plan),
                       budget=parse_budget(r.budget), results_dir=r.results_dir, jobs=r.jobs,
                       gpu=sweep.device.startswith("cuda"), paper=paper, scope=scope)


def follow_up_slurm(sweep: Sweep, plan: Plan) -> tuple[Plan, dict]:
    """Runs of this request that went to Slurm earlier: those still queued or running
    ({key: (job id, state)}) are not submitted again; a job that ended without recording its run
    gets a failure record (not under --dry-run), and the plan is made again to see it."""
    from .launch import follow_up

    r = sweep.request
    # every run this command would submit (failed ones too under --retry-failed, done ones under
    # --force) is looked up in Slurm's queue, in one squeue call: never two jobs for one run
    looked_up = {t.key: t for t in plan.tasks if plan.states[t.key] == "missing"}
    if not r.collect:
        looked_up.update((t.key, t) for t in plan.pending(r.retry_failed, r.force))
    in_flight, ended = follow_up(sweep.folder, list(looked_up.values()), record=not r.dry_run)
    if ended:
        plan = sweep.plan()  # runs whose job ended without a record are now recorded as failed
    return plan, in_flight


def _cluster(sweep: Sweep):
    if sweep.request.launcher != "slurm":
        return None
    from .cluster import load_cluster_profile

    if not sweep.request.cluster:
        raise UsageError("--launcher slurm needs --cluster NAME (a slurm/NAME.yaml profile)")
    return load_cluster_profile(sweep.request.cluster)


def _announce(sweep: Sweep, plan: Plan, pending) -> None:
    """Warnings before launching: records to be redone, claims to be taken over, runs skipped
    because another process trains them, finished runs without the weights asked for."""
    for task in pending:  # each run's worker sets the record aside, under the run's claim
        state = plan.states[task.key]
        if state in ("corrupt", "stale"):
            warn_once(state, task.record_path, "%s record %s (%s): set aside and redone", state,
                      task.record_path, plan.why[task.key].rpartition("corrupt record (")[2].rstrip(")"))
        warn_unusable_checkpoint(task.checkpoint_path)  # cut short, damaged: set aside by its run
    for key, claim in plan.dead_claims():
        if any(t.key == key for t in pending):
            warn_once("dead claim", claim.path, "run %s: taking over the claim of a dead owner "
                      "(%s; %s)", key, claim.describe(), claim.dead_because())
    for key, claim in plan.in_progress():
        log.warning("run %s: in progress elsewhere (%s): not started again", key, claim.describe())
    if sweep.request.keep_weights:
        store = ResultsStore(sweep.request.results_dir)
        redone = {t.key for t in pending}
        without = [t for t in plan.tasks if plan.states[t.key] == "done" and t.key not in redone
                   and not store.weights_path(t.key).exists()]
        if without:
            log.warning("--keep-weights: %d finished runs have no saved weights (trained without "
                        "it); --force retrains them", len(without))


def launch_runs(sweep: Sweep, pending, cluster) -> list[dict] | None:
    """Train `pending` with the request's launcher, the console showing an ETA from estimated
    per-run costs (benchmark.estimate) refined by the first finished runs; their records, or None
    when they went to Slurm without waiting."""
    from .launch import launch
    from .progress import RunProgress

    r = sweep.request
    if not pending:
        return []
    if r.keep_weights:
        pending = [dataclasses.replace(t, keep_weights=True) for t in pending]
    progress = None
    if r.launcher != "slurm":
        from .estimate import estimate_sweep

        gpu = sweep.device.startswith("cuda")  # on a CPU without records: its speed, timed
        est = estimate_sweep(pending, r.results_dir, jobs=r.jobs, gpu=gpu, probe=not gpu)
        pending = est.launch_order(pending)  # longest expected first: no long run left for last
        progress = RunProgress(pending, {k: c.seconds for k, c in est.runs.items()},
                               workers=est.workers, quiet=r.quiet)
    results = launch(pending, launcher=r.launcher, jobs=r.jobs, cluster_profile=cluster,
                     folder=sweep.folder, wait=r.wait, progress=progress)
    if r.launcher == "slurm" and not r.wait:
        return None
    return results


def _table_plan(sweep: Sweep, plan: Plan) -> Plan:
    """The table shows every row and column with records, whatever --methods/--datasets/--dims
    ran; a column without records says why (its data is missing)."""
    r = sweep.request
    table_plan = plan
    if (r.methods, r.datasets, r.dims) != (None, None, None):
        table_plan = sweep.plan(selected=False)
        table_plan.unavailable.update(plan.unavailable)
        for ds, why in plan.unavailable.items():
            if why == "not selected":
                del table_plan.unavailable[ds]
    _data_missing(table_plan, r.data_root)
    return table_plan


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


def _check_data(plan: Plan, pending, requested, data_root: str, download: bool):
    """The pending runs whose data can be loaded; the columns left out are marked unavailable.
    Missing data is an error only for a column the user named, or when the table would show
    nothing at all (no other column to run and no finished run)."""
    if not pending:
        return pending
    columns = {t.key.dataset: t.data_name for t in pending}
    others = any(t.key.dataset not in columns or plan.states[t.key] in ("done", "failed")
                 for t in plan.tasks)
    _, missing = datasets.load_columns(columns, data_root, download,
                                       named=set(requested) if requested else None, others=others)
    for ds in missing:
        plan.unavailable[ds] = "data missing"
    return [t for t in pending if t.key.dataset not in missing]


# ------------------------------------------------------------------ collect, aggregate, render


def collect_records(plan: Plan) -> list[Record]:
    """The current records of the plan's runs, validated by the store (a corrupt one is reported
    in one warning line and left out; a run sets it aside and redoes it)."""
    records = []
    for task in plan.tasks:
        rec = task.store.current(task.key, task.config_hash())
        if rec is not None:
            records.append(rec)
    return records


def build_table(plan: Plan, spec, profile, records: list[Record], paired: bool):
    """Aggregate: best restart per split, mean ± std per cell, t-tests against the best."""
    from .aggregate import floors, low_power_note, records_frame, summarize
    from .likelihood_text import caption_of, column_likelihoods
    from .render import TableData, split_values

    frame = records_frame(records, spec.metric)
    failed: dict = {}
    for rec in records:
        if not rec.ok:
            k = rec.key
            idx = (k.dataset, k.dim, k.method, k.variant)
            failed[idx] = failed.get(idx, 0) + 1
    test = "paired t-test over shared splits" if paired else "two-sided Welch t-test"
    likelihoods = column_likelihoods(spec.datasets, {t.key.dataset: t.settings for t in plan.tasks})
    caption = (
        f"Profile '{profile.name}': {profile.splits} splits x {profile.restarts} restarts "
        f"(best validation IWAE kept), {profile.epochs_text()} epochs, "
        f"{profile.train_size or 'all'} training images, IWAE K={profile.iwae_k} on "
        f"{profile.test_size or 'all'} test images. Mean ± sample std over splits (nats). "
        f"{caption_of(likelihoods.values())} "
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."
    )
    cells = summarize(frame, paired=paired)
    legend = " ".join(filter(None, [
        f"Red bold: best mean in the column. Blue bold: {test} against the best gives p > 0.01. "
        "Plain: p <= 0.01. 'below floor': fewer than 100 nats above the mean-image model "
        "(last row), a sign of a broken run.",
        low_power_note(cells, paired=paired),
    ]))
    return TableData(spec, cells, floors(frame), dict(plan.unavailable), failed, caption, legend,
                     split_values(frame), likelihoods)


def write_texts(results_dir: Path, name: str, texts: dict[str, str]) -> list[Path]:
    """tables/NAME.{md,tex,html}, each written atomically."""
    out = ResultsStore(results_dir).tables_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in texts.items():
        paths.append(out / f"{name}.{suffix}")
        write_text_atomic(paths[-1], text)
    return paths


def write_tables(data, results_dir: Path, paper=None, claim_report=None) -> list[Path]:
    """A log-likelihood table's files, its comparison with the paper and its claims report, the
    records export and the results page. A comparison written earlier (--compare-paper) is
    rewritten from the same aggregate even without `paper`, so the page never shows one older
    than its table; one whose paper numbers are gone is set aside (NAME_vs_paper.SUFFIX.stale)."""
    from . import export
    from .index_page import write_index
    from .render import to_html, to_latex, to_markdown

    out = ResultsStore(results_dir).tables_dir()
    paths = write_texts(results_dir, data.spec.name, {
        "md": to_markdown(data), "tex": to_latex(data), "html": to_html(data)})
    earlier = sorted(out.glob(f"{data.spec.name}_vs_paper.*"))
    earlier = [p for p in earlier if p.suffix in (".md", ".tex", ".html")]
    if paper is None and earlier:
        from .paper_tables import load_paper_table

        try:
            paper = load_paper_table(data.spec.name)
        except (ValueError, KeyError, OSError) as e:  # ConfigError is a ValueError
            for old in earlier:
                os.replace(old, old.with_name(old.name + ".stale"))
            log.warning("%s: set aside as .stale (the paper's numbers cannot be read: %s)",
                        ", ".join(p.name for p in earlier), e)
    if paper is not None:  # the analyses are imported only when asked for (or kept current)
        from .analyses import compare

        paths += compare.write_comparison(data, paper, out)
    if claim_report is not None:
        from .analyses import claims

        paths += claims.write_report(claim_report, out)
    paths += export.write_records_export(results_dir, [data.spec])  # every record, one row each
    paths.append(write_index(results_dir))
    return paths


def _show(sweep: Sweep, data, report) -> None:
    from .render import to_markdown

    con = sweep.console
    con.result(to_markdown(data, ansi=sys.stdout.isatty()))
    if sweep.paper is not None:
        from .analyses import compare

        con.result(compare.to_markdown(data, sweep.paper))
    if report is not None:
        from .analyses import claims

        con.result(claims.to_markdown(report))


# ------------------------------------------------------------------ dry run


def dry_run_report(sweep: Sweep, plan: Plan, pending, in_flight: dict, cluster) -> str:
    """What would run, how long it would take here (benchmark.estimate), which columns lack data, and
    under Slurm what would be submitted (slurm_dry_run: the Slurm launcher's lines)."""
    r = sweep.request
    lines = [f"  would run {t.key} ({plan.states[t.key]})" for t in pending]
    lines += [f"  in progress: {key} ({claim.describe()}): not started again"
              for key, claim in plan.in_progress()]
    lines += [f"  in Slurm: {key} (job {job_id}, {state}): not submitted again"
              for key, (job_id, state) in in_flight.items()]
    lines += data_lines(plan, r.data_root, r.download)
    if cluster is not None:  # the Slurm launcher's own lines: arrays, #SBATCH, GPU-hours
        lines.append(slurm_dry_run(pending, sweep.folder, cluster, device=sweep.device,
                                   data_root=r.data_root, results_dir=r.results_dir))
    elif pending:
        there = {t.data_name for t in pending}
        there = {name for name in there if r.download or datasets.files_present(name, r.data_root)}
        runnable = [t for t in pending if t.data_name in there]
        lines += estimate_lines(sweep, runnable, skipped=len(pending) - len(runnable))
    return "\n".join(lines)


def data_lines(plan: Plan, data_root: str, download: bool) -> list[str]:
    """One line per column whose data is not under `data_root`: its runs would not be run."""
    lines = []
    loaders = {t.key.dataset: t.data_name for t in plan.tasks}
    for ds, loader in sorted(loaders.items()):
        if not datasets.files_present(loader, data_root):
            todo = [t for t in plan.tasks if t.key.dataset == ds and plan.states[t.key] != "done"]
            fix = ("--download fetches it first" if download else
                   "its runs would be skipped (their cells: 'not run (data missing)'); --download, "
                   "or put the files there")
            lines.append(f"  data MISSING: {ds} is not under {data_root} ({len(todo)} runs): {fix}")
    for ds, why in plan.unavailable.items():
        if why not in ("not selected", "data missing"):
            lines.append(f"  column {ds}: {why}")
    return lines


def estimate_lines(sweep: Sweep, pending, skipped: int = 0) -> list[str]:
    """The sweep's time on this machine and how it was estimated (`skipped`: runs left out, their
    data missing)."""
    from .estimate import duration, estimate_sweep

    r = sweep.request
    gpu = sweep.device.startswith("cuda")  # on a CPU without records: its speed, timed
    est = estimate_sweep(pending, r.results_dir, jobs=r.jobs, gpu=gpu, probe=not gpu)
    per_run = est.known
    lines = []
    without = f"; not counting the {skipped} runs whose data is missing" if skipped else ""
    if per_run:
        runs = f"{len(per_run)} run" + ("s" if len(per_run) > 1 else "")
        spread = (duration(per_run[0]) if len(per_run) == 1 else
                  f"{duration(min(per_run))} to {duration(max(per_run))} a run")
        lines.append(f"estimate: {duration(est.wall_seconds)} for {runs} on this machine "
                     f"({spread}{without})")
        lines.append(f"  how: {est.how()}")
    elif skipped:
        lines.append(f"estimate: nothing to run here: the {skipped} runs to do lack their data")
    unknown = sorted({str(k).rsplit("/", 1)[0] for k, c in est.runs.items() if c.seconds is None})
    if unknown:
        lines.append(f"  no estimate for {len(unknown)} cells (no record and no fallback figure): "
                     + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5940 else f"{seconds / 3600:.1f} h"


def slurm_dry_run(pending, folder: Path, cluster, *, device: str, data_root: str,
                  results_dir: str) -> str:
    """What --launcher slurm would submit: per job array its runs and jobs after packing, the
    device its runs will use, a time estimate against its time limit and its #SBATCH lines; the
    sweep's cap, GPU-hours, and whether the data is where the jobs will look."""
    from .cluster import expected_device, max_array_size
    from .estimate import estimate_array, measured_costs
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
        est = estimate_array(array.packs, gpus, costs)
        estimates = est.runs
        if est.job_seconds is None:
            unknown += est.unknown
            why = next(e.source for e in estimates.values() if e.seconds is None)
            lines.append(f"    estimate: none for some runs ({why})")
        else:
            lows, highs = est.job_seconds
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
            low, high = est.hours
            total_low += low
            total_high += high
        lines += [f"    {line}" for line in array.directives]
        lines += [f"    setup: {line}" for line in res.get("setup", [])]
    unit = "GPU-hours" if any(cluster.resources(a.method).get("gpus_per_node") for a in arrays) \
        else "job-hours (no GPU asked for)"
    missing = f"; {unknown} runs without an estimate left out" if unknown else ""
    lines.append(f"  estimate: {total_low:.0f}-{total_high:.0f} {unit} (jobs x GPUs x "
                 "job time; packed runs fully overlapping to back to back; all epochs, early "
                 f"stopping ends runs sooner{missing}; see benchmark/estimate.py)")
    return "\n".join(lines)


# ------------------------------------------------------------------ timing tables


def _run_timing(sweep: Sweep) -> Outcome:
    """A timing table on the same path: plan (its cells) -> measure here -> record
    (timings.json) -> render; claims from the stored times."""
    from . import timing

    r, con = sweep.request, sweep.console
    spec, profile = sweep.spec, sweep.profile
    rows = [row for row in spec.rows if row.has_plugin and row.selected_by(r.methods)]
    columns = [(ds, dim) for ds in spec.datasets if r.datasets is None or ds in r.datasets
               for dim in (sorted(r.dims) if r.dims else spec.dims)]
    outcome = Outcome()
    if sweep.choice is not None:  # the profile chosen for this machine, said first
        from .machine import announce

        announce(sweep, plan=None, in_flight={})
    if r.dry_run:
        con.result("\n".join(f"  would time {', '.join(row.label for row in rows)} on {ds} d={dim}"
                             for ds, dim in columns))
        return outcome
    if not (r.collect and r.claims):  # --collect --claims: the stored times only
        from .index_page import write_index

        datasets_ = list(dict.fromkeys(ds for ds, _ in columns))
        dims = list(dict.fromkeys(dim for _, dim in columns))
        times, missing, sizes, passes = timing.measure(
            spec, profile, data_root=r.data_root, device=sweep.device, download=r.download,
            rows=rows, datasets_=datasets_, dims=dims, requested=r.datasets)
        caption = timing.caption(spec, profile, rows, sizes, sweep.device)
        timing.save(ResultsStore(r.results_dir).timings_path(profile.name, spec.name), caption,
                    times, missing, sizes, passes)
        texts = timing.render(spec, rows, columns, times, missing, caption)
        outcome.table = times
        outcome.paths = write_texts(Path(r.results_dir), spec.name, texts)
        outcome.paths.append(write_index(Path(r.results_dir)))
        con.result(texts["md"])
        con.say("wrote " + ", ".join(str(p) for p in outcome.paths))
    if sweep.claim_set is not None:
        outcome.paths += _timing_claims(sweep)
    return outcome


def _timing_claims(sweep: Sweep) -> list[Path]:
    """The claims about a timing table, from its stored timings.json (written by the run)."""
    from .analyses import claims
    from .index_page import write_index

    results_dir, spec, profile = Path(sweep.request.results_dir), sweep.spec, sweep.profile
    path = claims.timings_path(results_dir, profile.name, spec.name)
    report = claims.build_report(spec, sweep.claim_set, results_dir=results_dir,
                                 timings=claims.read_timings(path), timing_source=str(path),
                                 caption=f"Profile '{profile.name}': times from {path}.")
    paths = claims.write_report(report, ResultsStore(results_dir).tables_dir()) + [
        write_index(results_dir)]
    sweep.console.result(claims.to_markdown(report))
    sweep.console.say("wrote " + ", ".join(str(p) for p in paths))
    return paths
