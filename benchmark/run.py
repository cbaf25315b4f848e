"""run_one: claim the run -> load a split -> build the method -> train -> evaluate -> write the
record -> release the claim.

This is the only function the launchers execute, in-process, in a local subprocess or as a Slurm
task, so every path produces the same record for the same task. The claim (benchmark.store) makes
it the only process training its run: a run another process is training is skipped as "in
progress", and one whose record appeared meanwhile is not trained again. Under the local launcher
a worker also stops (its claim released, its checkpoint kept) when its launcher is gone.
"""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import functools
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import submitit
import torch

from . import datasets, factory
from .errors import describe_os_error, environment_failure
from .evaluate import evaluate, mean_diagnostics, mean_image_log_likelihood
from .store import HEARTBEAT_SECONDS, STALE_AFTER_SECONDS, ClaimInfo, job_id, pid_alive
from .tasks import RunTask  # RunTask: re-exported (launch and analyses import it from here)
from .train import train

log = logging.getLogger("gpvae_bench")
REPO = Path(__file__).resolve().parents[1]
LAUNCHER_POLL_SECONDS = 1.0  # how often a local worker checks that its launcher still runs
STOP_GRACE_SECONDS = 10.0  # then how long it lets training unwind before it exits regardless


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices: a seeded random `val_fraction` of the official training set."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str, download: bool):
    return datasets.load_dataset(name, root, download)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _provenance(device: torch.device) -> dict:
    import numpy
    import scipy

    try:
        dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    except (RuntimeError, AssertionError) as err:  # provenance must never lose the run's record
        dev = f"unknown ({err})"
    return {
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "numpy": numpy.__version__, "scipy": scipy.__version__},
        "git_commit": _git_commit(),
        "host": socket.gethostname(),
        "device": f"{device.type}: {dev or platform.machine()}",
        "threads": torch.get_num_threads(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


class DeviceUnavailable(RuntimeError):
    """The run asks for CUDA on a node that has none."""


def resolve_device(request: str) -> str:
    """The torch device for a run's device request, decided on the machine the run executes on
    (a Slurm node, not the login node that submitted it): auto = cuda when this machine has one."""
    if request == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(f"--device {request}: CUDA is not available on "
                                f"{socket.gethostname()} (ask for a GPU in the cluster profile: "
                                "gpus_per_node, or use --device auto)")
    return request


def _first(t: torch.Tensor, n: int | None) -> torch.Tensor:
    return t if n is None else t[:n]


@dataclass
class Fitted:
    """A run's model with the images of its split; `fit` fills in the training summary."""

    model: torch.nn.Module
    train_images: torch.Tensor
    val_images: torch.Tensor
    test_images: torch.Tensor
    to_input: Callable[[torch.Tensor], torch.Tensor]  # images -> model input on the run's device
    likelihood: torch.nn.Module
    fit: dict = dataclasses.field(default_factory=dict)  # train()'s summary: epochs, history, ...
    train_seconds: float = 0.0


def build_model(task: RunTask, image_shape, likelihood_name: str, num_train: int):
    """(model, likelihood): the method of `task.key` with the task's parameters, seeded with the
    key's init seed, by the one model factory (benchmark.factory)."""
    return factory.build_model(task.key.method, dict(task.params), settings=task.settings,
                               image_shape=image_shape, likelihood=likelihood_name,
                               latent_dim=task.key.dim, num_train=num_train,
                               seed=task.key.init_seed)


def prepare(task: RunTask) -> Fitted:
    """Load the key's split (train / validation / test images) and build its untrained model."""
    key, prof = task.key, task.profile
    device = torch.device(task.device)
    data = _load(task.data_name, task.data_root, task.download)
    train_idx, val_idx = split_indices(len(data.train), data.val_fraction, key.split_seed)
    train_images = data.train[_first(train_idx, prof.train_size)]

    def to_input(images: torch.Tensor) -> torch.Tensor:
        return data.to_float(images).to(device)

    model, likelihood = build_model(task, data.image_shape, data.likelihood, len(train_images))
    return Fitted(model.to(device), train_images, data.train[_first(val_idx, prof.val_size)],
                  _first(data.test, prof.test_size), to_input, likelihood.to(device))


def fit(task: RunTask, checkpoint: Path | None = None) -> Fitted:
    """prepare(task), then train it with the profile's settings (resuming from `checkpoint`)."""
    prof, fitted = task.profile, prepare(task)
    start = time.perf_counter()
    fitted.fit = train(fitted.model, fitted.train_images, fitted.val_images,
                       to_input=fitted.to_input, epochs=prof.epochs, batch_size=prof.batch_size,
                       lr=prof.lr, eval_batch_size=prof.eval_batch_size, patience=prof.patience,
                       seed=task.key.init_seed, checkpoint=checkpoint,
                       checkpoint_tag=task.config_hash(), precision=prof.precision,
                       lr_schedule=prof.lr_schedule)
    fitted.train_seconds = time.perf_counter() - start
    return fitted


def train_and_evaluate(task: RunTask) -> dict:
    prof = task.profile
    fitted = fit(task, task.checkpoint_path)
    start = time.perf_counter()
    torch.manual_seed(task.key.eval_seed)
    ev = dict(k=prof.iwae_k, batch_size=prof.eval_batch_size, to_input=fitted.to_input)
    val = evaluate(fitted.model, fitted.val_images, **ev)
    test = evaluate(fitted.model, fitted.test_images, **ev)
    diagnostics = mean_diagnostics(fitted.model, fitted.test_images, prof.eval_batch_size,
                                   fitted.to_input)
    train_mean = fitted.to_input(fitted.train_images).mean(0)
    floor = mean_image_log_likelihood(fitted.likelihood, train_mean, fitted.test_images,
                                      prof.eval_batch_size, fitted.to_input)
    kept = {}
    if task.keep_weights:  # the weights evaluated above (the best validation epoch's)
        kept["weights_file"] = str(task.store.save_weights(task.key, fitted.model.state_dict()))
    training = fitted.model.training_diagnostics()  # the method's own record of its training
    if training:
        kept["training_diagnostics"] = training
    return {
        **kept,
        "metrics": {
            "val_iwae": val["iwae"], "val_elbo": val["elbo"],
            "test_iwae": test["iwae"], "test_elbo": test["elbo"],
            "mean_image_floor": floor,
            **({"sigma_x": float(fitted.likelihood.sigma)}  # a learned one's trained value
               if getattr(fitted.likelihood, "sigma", None) is not None else {}),
            "train_seconds": fitted.train_seconds, "eval_seconds": time.perf_counter() - start,
            **{k: v for k, v in fitted.fit.items() if k != "history"},
        },
        "diagnostics": diagnostics,
        "history": fitted.fit["history"],
        "sizes": {"train": len(fitted.train_images), "val": len(fitted.val_images),
                  "test": len(fitted.test_images)},
    }


LOG_TAIL_LINES = 40  # how much of a failed run's log its record keeps


def _job_log_files() -> tuple[str | None, str | None]:
    """The submitit (stdout, stderr) logs this run writes to, when it runs as a submitit job."""
    import submitit

    try:
        env = submitit.JobEnvironment()
        return (str(env.paths.stdout), str(env.paths.stderr)) if env.activated() else (None, None)
    except (RuntimeError, KeyError):  # the debug executor has no log files of its own
        return None, None


def log_tail(path: str | None, lines: int = LOG_TAIL_LINES) -> str | None:
    """The last `lines` lines of a log file, or None if there is none."""
    if not path:
        return None
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return None


def _slurm_job() -> dict | None:
    """Which Slurm job (array task) runs this, and how often it was requeued; None outside Slurm."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return None
    array, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    return {"job_id": f"{array}_{index}" if array and index else env["SLURM_JOB_ID"],
            "requeues": _requeue_count()}


def _ensure_logging(prefix: str = "") -> None:
    """In a job subprocess nobody configured logging: send the per-epoch lines to stdout (each
    prefixed with `prefix`: the runs of a packed Slurm job share one log)."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _new_record(task: RunTask) -> dict:
    key = task.key
    return {"key": dataclasses.asdict(key), "config": task.config(), "config_hash": task.config_hash(),
            "seeds": {"split": key.split_seed, "init": key.init_seed}}


def _write_record(task: RunTask, record: dict, start: float, claim) -> dict:
    record["wall_seconds"] = time.perf_counter() - start
    record["provenance"] = _provenance(torch.device(task.device))
    record["slurm"] = _slurm_job()
    record["log_file"], record["stderr_file"] = _job_log_files()
    if record["status"] != "ok":
        sys.stdout.flush()  # so the tail holds the error line logged just now
        record["log_tail"] = log_tail(record["log_file"])
    if not claim.held():  # judged dead and taken over (e.g. suspended past the staleness limit)
        log.error("run %s: its claim was taken over by another process; not recording", task.key)
        return skipped(task, "claim taken over by another process while training")
    return dict(task.store.write(record).data)


def stopped(task: RunTask, err: OSError) -> dict:
    """What run_one returns when the results disk cannot take the run (full, read-only): no record
    is written, and the launcher stops the sweep with `error`, one line (launch._stop_on)."""
    return {"status": "stopped", "key": dataclasses.asdict(task.key),
            "error": describe_os_error(err)}


def skipped(task: RunTask, why: str) -> dict:
    """What run_one returns for a run it did not train (no record written)."""
    return {"status": "skipped", "key": dataclasses.asdict(task.key), "reason": why}


def _make_way(task: RunTask) -> str | None:
    """With the claim held: why the run is not to be trained (its record is there), or None after
    moving aside what stands in the way (a corrupt or stale record; with --force a done one)."""
    store, key = task.store, task.key
    state, why = store.examine(key, task.config_hash())
    if state in ("done", "failed"):
        redo = task.force or (task.retry_failed and state == "failed")
        if not redo or store.record_path(key).stat().st_mtime > task.planned_at:
            return f"already {state}"
        if state == "failed" and not task.force:
            return None  # --retry-failed: the new record replaces the failed one
    if state == "missing":
        return None
    moved = store.set_aside(key, "replaced" if state in ("done", "failed") else state)
    if moved is not None:
        log.info("run %s: %s record set aside as %s%s", key, state, moved.name,
                 f" ({why})" if why else "")
    return None


def _interrupt_once(signum, frame):
    """KeyboardInterrupt on the first SIGINT or SIGTERM, the later ones ignored: Ctrl-C reaches the
    worker and its launcher's SIGTERM follows, and a second interrupt must not cut short the
    unwinding that releases the run's claim. (A handler that does nothing rather than SIG_IGN: a
    signal already pending would otherwise be reported as 'ignored due to race condition'.)"""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_stopping)
    raise KeyboardInterrupt


def _already_stopping(signum, frame):
    pass


@contextlib.contextmanager
def _stop_with_launcher(task: RunTask):
    """Under the local launcher: stop this worker when the launcher is gone (killed, even by
    SIGKILL: a thread polls its pid) or when it is asked to (SIGTERM, SIGINT; submitit's workers
    otherwise ignore SIGTERM). Stopping raises KeyboardInterrupt in the main thread, so the claim
    is released and the checkpoint kept; a worker that has not ended `STOP_GRACE_SECONDS` later
    exits regardless."""
    if task.launcher is None:
        yield
        return
    pid, start = task.launcher
    done = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, _interrupt_once)

    def watch():
        while not done.wait(LAUNCHER_POLL_SECONDS):
            if not pid_alive(pid, start):
                log.warning("run %s: launcher (pid %d) is gone: stopping; the checkpoint is kept",
                            task.key, pid)
                if previous:  # a real signal, so that a blocking call in the main thread returns
                    os.kill(os.getpid(), signal.SIGINT)
                else:
                    _thread.interrupt_main(signal.SIGINT)
                if not done.wait(STOP_GRACE_SECONDS):
                    os._exit(143)
                return

    thread = threading.Thread(target=watch, daemon=True, name="launcher watchdog")
    thread.start()
    try:
        yield
    finally:
        done.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _claimed(task: RunTask, work: Callable[[RunTask, object], dict]) -> dict:
    """`work(task, claim)` while holding the run's claim, if the run is still to do; else what
    skipped() says (another process holds the claim, or the record is there now)."""
    with _stop_with_launcher(task):
        claim = task.store.claim(task.key, job=job_id(), heartbeat_s=HEARTBEAT_SECONDS,
                                 stale_after=STALE_AFTER_SECONDS)
        if isinstance(claim, ClaimInfo):
            log.info("run %s: in progress elsewhere (%s): skipped", task.key, claim.describe())
            return skipped(task, f"in progress ({claim.describe()})")
        with claim:
            why = _make_way(task)
            if why is not None:
                log.info("run %s: %s: skipped", task.key, why)
                return skipped(task, why)
            return work(task, claim)


def error_summary(err: BaseException, limit: int = 300) -> str:
    """'ValueError: the message's first line', at most `limit` characters, for a record's `error`
    and the failure listing; the whole message (torch's can carry a tensor dump) is in its
    `traceback`."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def run_one(task: RunTask) -> dict:
    """Claim, run and record one task; a failure is recorded (status 'failed'), not raised. A run
    that is not to be trained (claimed by another process, or recorded meanwhile) is skipped."""
    _ensure_logging()
    return _claimed(task, _train_and_record)


def _train_and_record(task: RunTask, claim) -> dict:
    # Slurm without CPU binding (cgroups) lets torch see every core of the node: use the allocation
    threads = task.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0"))
    if threads:
        torch.set_num_threads(threads)
    # Subnormal floats take a slow path on x86 CPUs: a GPVAE run's steps grew 87 -> 116 ms as its
    # parameters gathered ~17k of them; flushed to zero (values below 1.2e-38 become 0, which moves
    # no reported number) its epochs stay flat (docs/performance.md). Training and evaluation alike.
    torch.set_flush_denormal(True)
    key = task.key
    record = _new_record(task)
    start = time.perf_counter()
    log.info("run %s", key)
    try:
        # the task carries the device request (--device auto): decided here, where the run executes
        task = dataclasses.replace(task, device=resolve_device(task.device))
        record.update(train_and_evaluate(task), status="ok")
    except Exception as err:  # recorded, so one failing run never stops the others
        if environment_failure(err):  # disk full, read-only: no method failed; record nothing
            log.info("run %s stopped: %s", key, describe_os_error(err))
            return stopped(task, err)
        log.error("run %s failed: %s", key, error_summary(err))
        record.update(status="failed", error=error_summary(err),
                      traceback=traceback.format_exc()[-4000:])
    record = _write_record(task, record, start, claim)
    if record["status"] == "ok":
        task.store.remove_checkpoint(task.key)
    return record


class RequeueCap(Exception):
    """Raised by SlurmRun.checkpoint() at the requeue cap, inside submitit's USR2 handler: it stops
    the job where it is, and the runs not finished yet are recorded as failed with this message."""

    def __init__(self, requeues: int, max_requeues: int) -> None:
        super().__init__(f"Requeued {requeues} times, the most max_requeues={max_requeues} allows; "
                         "rerun with --retry-failed to resume from its checkpoint")
        self.requeues = requeues


class RunsFailed(Exception):
    """Raised by a Slurm job after its runs are recorded when any of them failed, so that the job
    exits non-zero (sacct: FAILED) and dependencies and mail see it. One line, the failures."""


PACK_POLL_SECONDS = 1.0
KILLED_GRACE_SECONDS = 3.0  # a run killed by a signal: is the whole job being killed (requeue)?


def _pack_worker(task: RunTask, conn) -> None:
    """One run of a packed Slurm job, in its own process: run_one, its result sent back. The job's
    process (submitit's) handles USR2 (checkpoint and requeue) and outlives SIGTERM (KillWait, then
    SIGKILL for all); so do the runs: they ignore both, and stop when that process is gone."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(PACK_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True, name="parent watchdog").start()
    _ensure_logging(f"[{task.key.method}-{task.key.variant} s{task.key.split}-r{task.key.restart} "
                    f"d{task.key.dim}] ")
    try:
        result = run_one(task)
    except BaseException as err:  # noqa: BLE001 - reported to the job's process, which raises
        result = {"status": "crashed", "key": dataclasses.asdict(task.key),
                  "error": error_summary(err), "traceback": traceback.format_exc()[-4000:]}
    conn.send(result)
    conn.close()


class SlurmRun(submitit.helpers.Checkpointable):
    """A Slurm array task: its runs (one, or `runs_per_task` packed together), as a
    submitit-checkpointable callable for the Slurm launcher.

    The runs execute concurrently, each in its own process (run_one: its own claim, record and
    checkpoint), sharing the job's CPUs (threads split among them) and GPUs (round robin). When
    Slurm preempts the job or its time limit nears, it sends USR2 (signal_delay_s ahead); submitit
    then calls checkpoint() and requeues the job with what it returns. Training state is already on
    disk (train() saves it every epoch), so each requeued run resumes from there and a finished one
    is not run again; no in-memory state needs to travel. A hard `scontrol requeue` (SIGTERM, then
    SIGKILL) skips checkpoint() but resumes the same way. Either way a job requeued more than
    `max_requeues` times records its unfinished runs as failed with that reason (checkpoints kept for
    --retry-failed). A job any of whose runs failed exits non-zero after recording them.
    """

    def __init__(self, max_requeues: int) -> None:
        self.max_requeues = max_requeues

    def __call__(self, tasks: RunTask | list[RunTask]) -> list[dict]:
        tasks = [tasks] if isinstance(tasks, RunTask) else list(tasks)
        _ensure_logging()
        requeues = _requeue_count()
        if requeues > self.max_requeues:  # requeued from outside (scontrol requeue) once too often
            records = [self._give_up(task, requeues) for task in tasks]
            _raise_if_failed(tasks, records, RequeueCap(requeues, self.max_requeues))
            return records
        return _run_pack(tasks, self)

    def checkpoint(self, tasks: RunTask | list[RunTask]):
        tasks = [tasks] if isinstance(tasks, RunTask) else list(tasks)
        requeues = _requeue_count()
        if requeues >= self.max_requeues:
            # stops the job's process where it is waiting for its runs (_run_pack), which then
            # records the unfinished ones as failed with this reason and exits non-zero
            raise RequeueCap(requeues, self.max_requeues)
        for task in tasks:
            log.warning("run %s interrupted (preempted or near its time limit): requeue %d of at "
                        "most %d, resuming from its last checkpoint", task.key, requeues + 1,
                        self.max_requeues)
        return super().checkpoint(tasks)

    def _give_up(self, task: RunTask, requeues: int) -> dict:
        def record_failure(task: RunTask, claim) -> dict:
            log.error("run %s: not requeued again after %d requeues (max_requeues %d)", task.key,
                      requeues, self.max_requeues)
            record = _new_record(task)
            record.update(status="failed", error=str(RequeueCap(requeues, self.max_requeues)))
            return _write_record(task, record, time.perf_counter(), claim)

        return _recorded(task, _claimed(task, record_failure))


def _recorded(task: RunTask, result: dict) -> dict:
    """A run's result, with a run skipped because its record is there (finished before a requeue,
    say) replaced by that record."""
    if result.get("status") == "skipped":
        rec = task.store.current(task.key, task.config_hash())
        if rec is not None:
            return dict(rec.data)
    return result


def _raise_if_failed(tasks: list[RunTask], results: list[dict | None], cause=None) -> None:
    """RunsFailed, one line, if any run failed, crashed or was killed (None)."""
    bad = []
    for task, res in zip(tasks, results, strict=True):
        if res is None:
            bad.append(f"{task.key}: its process was killed")
        elif res.get("status") in ("failed", "crashed"):
            bad.append(f"{task.key}: {res.get('error')}")
    if bad:
        head = f"{len(bad)} of {len(tasks)} runs failed" if len(tasks) > 1 else "the run failed"
        raise RunsFailed(f"{head}: " + "; ".join(b.replace("\n", " ") for b in bad)) from cause


def _pack_devices(tasks: list[RunTask]) -> list[RunTask]:
    """Each run's share of the job: CPU threads split evenly, GPUs round robin (each run still
    resolves its device request itself: auto = cuda when the node has one)."""
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", "0")) or os.cpu_count() or 1
    threads = max(1, cpus // len(tasks))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = []
    for i, task in enumerate(tasks):
        device = task.device
        if gpus > 1 and device in ("auto", "cuda"):
            device = f"cuda:{i % gpus}"
        out.append(dataclasses.replace(task, threads=task.threads or threads, device=device))
    return out


def _run_pack(tasks: list[RunTask], slurm_run: SlurmRun) -> list[dict]:
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA
    tasks = _pack_devices(tasks)
    procs: list = []
    results: list[dict | None] = [None] * len(tasks)
    try:
        for task in tasks:
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_pack_worker, args=(task, send), name=f"run {task.key}")
            proc.start()
            send.close()
            procs.append((proc, receive))
        open_ = set(range(len(tasks)))
        while open_:
            wait([procs[i][1] for i in open_] + [procs[i][0].sentinel for i in open_],
                 timeout=PACK_POLL_SECONDS)
            for i in sorted(open_):
                proc, conn = procs[i]
                try:
                    if conn.poll():
                        results[i] = _recorded(tasks[i], conn.recv())
                except (EOFError, OSError):  # the run's process died without sending
                    pass
                if results[i] is not None or not proc.is_alive():
                    proc.join()
                    open_.discard(i)
        if any(r is None for r in results):
            time.sleep(KILLED_GRACE_SECONDS)  # killed with the whole job (requeue): end with it
    except (RequeueCap, submitit.core.utils.UncompletedJobError) as cap:  # submitit's own cap
        _stop_all(procs)
        for i, task in enumerate(tasks):
            rec = slurm_run._give_up(task, getattr(cap, "requeues", _requeue_count()))
            results[i] = rec if rec.get("status") != "skipped" else results[i]
        _raise_if_failed(tasks, results, cap)
    finally:
        _stop_all(procs)  # e.g. submitit requeued the job and exits: the runs go with it
    _raise_if_failed(tasks, results)
    return [r for r in results if r is not None]


def _stop_all(procs: list) -> None:
    for proc, _ in procs:
        if proc.is_alive():
            proc.kill()
    for proc, _ in procs:
        proc.join(timeout=10)


def _requeue_count() -> int:
    return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
