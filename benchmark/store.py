"""The results folder as a small database, with one owner: this module.

It owns the layout (where records, checkpoints, claims, timings, tables and job logs go), the record
schema and its version, reading and validating records (a typed `Record`; a wrong-typed or missing
field makes the record corrupt, like a truncated one), the one atomic writer that every record,
table, page and checkpoint goes through, setting records aside, and the claims that let one process
at a time train a run. Everything else asks it, so two launchers, a rerun or a Slurm requeue see
the same truth and never train a run twice nor rewrite a finished record.

Claims: before training, a worker creates `<record>.claim` beside the record with O_CREAT|O_EXCL
(atomic on local file systems and on NFSv3+, which Slurm clusters share), holding host, pid, the
pid's start time, the submitit job id and a token; while it trains a daemon thread rewrites it
every `HEARTBEAT_SECONDS` (the file's mtime is the heartbeat). A claim whose owner is dead (same
host: no such pid, or a pid reused by another process; same Slurm job: an earlier incarnation,
i.e. a requeue; any host: no heartbeat for `STALE_AFTER_SECONDS`) is taken over with one warning.
The claim is removed once the run's record is written (ok or failed), or when training stops.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import Unavailable
from .keys import RunKey

log = logging.getLogger("gpvae_bench")

# 1: records written before this module (no "schema" field); 2: the same fields plus "schema".
SCHEMA_VERSION = 2
HEARTBEAT_SECONDS = 30.0  # how often a training run refreshes its claim
STALE_AFTER_SECONDS = 300.0  # a claim not refreshed for this long is dead, whatever its host


class CorruptRecord(ValueError):
    pass


class RecordPathBlocked(Unavailable):
    """A folder (or other non-file) where a run's record belongs: one error line, exit 1."""


_WARNED: set[tuple[str, str]] = set()


def warn_once(topic: str, path: Path | str, msg: str, *args) -> None:
    """log.warning(msg, *args) the first time this process says `topic` about `path`; later times
    at INFO: a launcher that warns about what its in-process worker then does says it once."""
    seen = (topic, str(path)) in _WARNED
    _WARNED.add((topic, str(path)))
    log.log(logging.INFO if seen else logging.WARNING, msg, *args)


# ------------------------------------------------------------------ the one atomic writer


def _new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call `write(f)` on a temp file in the same folder, fsync, then rename over `path`: a reader
    sees the old file or the new, never half of one, and a failed write (full disk, an error in
    `write`) leaves neither a temp file nor a changed target. The file gets the usual umask-based
    mode, not mkstemp's owner-only 0o600, so that others sharing a results folder can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"write_text_atomic needs a str, not {type(text).__name__}")
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


class _KeepOSError:
    """A file's write() that remembers the OSError it raised: torch.save turns a full disk into a
    RuntimeError ('unexpected pos ...'), and the caller should see the disk error instead."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save through the atomic writer: never a half-written checkpoint, nor a stray temp."""
    import torch

    def save(f: IO[bytes]) -> None:
        out = _KeepOSError(f)
        try:
            torch.save(state, out)
        except RuntimeError:
            if out.error is not None:
                raise OSError(out.error.errno, out.error.strerror, str(path)) from None
            raise

    write_atomic(path, save)


def checkpoint_problem(path: Path) -> str | None:
    """What makes the checkpoint at `path` unusable, or None (also when there is none): torch.save
    writes a zip archive, and torch.load neither notices a damaged byte (it does not check the
    archive's CRCs: the weights would come back altered) nor says more than 'PytorchStreamReader
    failed' for a file cut short. Reads the whole file once; no torch."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return "a folder, not a checkpoint"
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, zlib.error) as err:
        return f"unreadable (cut short or damaged: {_first_line(err)})"
    return f"damaged ({damaged}: CRC mismatch)" if damaged else None


NOT_WEIGHTS_ONLY = ("it holds objects other than tensors, numbers and strings, which are not loaded "
                    "(loading them could run code)")


def unsafe_globals(path: Path) -> list[str]:
    """The names a checkpoint's pickle would import beyond what torch's weights-only unpickler
    allows (torch.serialization.get_unsafe_globals_in_checkpoint: it reads the pickle's opcodes and
    runs nothing); [] when it cannot tell (the run's load then decides)."""
    from torch.serialization import get_unsafe_globals_in_checkpoint

    try:
        return list(get_unsafe_globals_in_checkpoint(path))
    except Exception:  # any trouble reading it is load_checkpoint's to report
        return []


def warn_unusable_checkpoint(path: Path) -> None:
    """Before its run is launched, where the person at the console sees it (a worker's own warning
    goes to its log): one warning if the checkpoint at `path` is cut short, damaged or holds objects
    that could run code (the run's worker sets it aside, holding the run's claim, and starts from
    scratch)."""
    why = checkpoint_problem(path)
    if why is None and Path(path).exists() and (names := unsafe_globals(path)):
        why = f"{NOT_WEIGHTS_ONLY}: {', '.join(names[:3])}"
    if why is not None:
        warn_once("corrupt checkpoint", path, "checkpoint %s: %s; the run sets it aside (.corrupt) "
                  "and starts from scratch", path, why)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at `path`, or None if there is none or it cannot be used. It is read with
    torch's weights-only unpickler: tensors (RNG states included), numbers, strings, lists, dicts,
    and nothing that could run code (a checkpoint planted in a shared results folder is not
    trusted; docs/results-folder.md). One that cannot be used (cut short by a killed copy or a
    full disk, damaged, or holding other objects) is set aside beside it as `<name>.corrupt`, with
    one warning naming it, and the run starts from scratch; nothing is deleted."""
    import pickle

    import torch

    path = Path(path)
    if not path.exists():
        return None
    why = checkpoint_problem(path)
    if why is None:
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except FileNotFoundError:
            return None  # removed meanwhile
        except OSError:
            raise  # the disk, not the file (an I/O error): the caller reports it
        except Exception as err:  # whatever torch raises for a file it cannot read: the file is bad
            why = (NOT_WEIGHTS_ONLY if isinstance(err, pickle.UnpicklingError)
                   and "Weights only load failed" in str(err) else f"unreadable ({_first_line(err)})")
    moved = set_aside_file(path, "corrupt")
    warn_once("corrupt checkpoint", path, "checkpoint %s: %s; set aside as %s, the run starts from "
              "scratch", path, why, moved.name if moved else "(gone meanwhile)")
    return None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def set_aside_file(path: Path, reason: str) -> Path | None:
    """Move `path` to `<name>.<reason>` beside it (`<name>.<reason>1`, ... if taken): kept, not
    deleted, and out of the way; None if there was nothing to move."""
    path = Path(path)
    n = 0
    while (target := path.with_name(f"{path.name}.{reason}{n or ''}")).exists():
        n += 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


# ------------------------------------------------------------------ the record schema

_NUMBER = (int, float)


def _is_number(v) -> bool:
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _type_name(v) -> str:
    return "null" if v is None else type(v).__name__


def _check(data: Mapping, name: str, kind: str, *, required: bool, nullable: bool = False,
           where: str = ""):
    """data[name] if it has the type `kind` ('str', 'int', 'number', 'dict', 'list'); else raises
    CorruptRecord naming the field."""
    label = f"{where}{name}"
    if name not in data:
        if required:
            raise CorruptRecord(f"missing field {label!r}")
        return None
    v = data[name]
    if v is None and nullable:
        return None
    ok = {"str": lambda: isinstance(v, str),
          "int": lambda: isinstance(v, int) and not isinstance(v, bool),
          "number": lambda: _is_number(v),
          "dict": lambda: isinstance(v, dict),
          "list": lambda: isinstance(v, list)}[kind]()
    if not ok:
        raise CorruptRecord(f"field {label!r} must be {'a' if kind != 'int' else 'an'} {kind}"
                            f"{' or null' if nullable else ''}, not {_type_name(v)}")
    return v


@dataclass(frozen=True)
class Metrics:
    """An ok record's metrics: the three aggregation needs are required numbers; the others are
    numbers when present (`extra`)."""

    val_iwae: float
    test_iwae: float
    mean_image_floor: float
    extra: Mapping[str, float | int | None] = dataclasses.field(default_factory=dict)

    REQUIRED = ("val_iwae", "test_iwae", "mean_image_floor")
    OPTIONAL_INT = ("epochs_run", "best_epoch", "resumed_from_epoch")

    @classmethod
    def parse(cls, data) -> Metrics:
        if not isinstance(data, dict):
            raise CorruptRecord(f"field 'metrics' must be a dict, not {_type_name(data)}")
        required = {n: float(_check(data, n, "number", required=True, where="metrics."))
                    for n in cls.REQUIRED}
        extra = {}
        for name in data:
            if name in cls.REQUIRED:
                continue
            kind = "int" if name in cls.OPTIONAL_INT else "number"
            extra[name] = _check(data, name, kind, required=False, nullable=True, where="metrics.")
        return cls(**required, extra=extra)

    def value(self, name: str) -> float:
        """The metric `name` (a table's `metric`, e.g. test_iwae); KeyError if the record lacks it."""
        if name in self.REQUIRED:
            return getattr(self, name)
        v = self.extra.get(name)
        if v is None:
            raise KeyError(name)
        return float(v)


def _parse_key(data) -> RunKey:
    if not isinstance(data, dict):
        raise CorruptRecord(f"field 'key' must be a dict, not {_type_name(data)}")
    values = {}
    for f in dataclasses.fields(RunKey):
        values[f.name] = _check(data, f.name, "int" if f.type in ("int", int) else "str",
                                required=True, where="key.")
    return RunKey(**values)


# fields beyond the typed ones that a record may hold, with their types when present
_OPTIONAL_FIELDS = {"config": "dict", "seeds": "dict", "provenance": "dict", "history": "list",
                    "diagnostics": "dict", "sizes": "dict", "slurm": "dict", "traceback": "str",
                    "log_tail": "str", "weights_file": "str"}
STATUSES = ("ok", "failed")


@dataclass(frozen=True)
class Record:
    """One run's record, validated: see `Record.parse` for what makes one corrupt."""

    key: RunKey
    config_hash: str
    status: str  # "ok" or "failed"
    metrics: Metrics | None  # always set when ok
    error: str | None = None
    wall_seconds: float | None = None
    log_file: str | None = None
    stderr_file: str | None = None
    schema: int = 1
    data: Mapping = dataclasses.field(default_factory=dict, repr=False, compare=False)  # as stored

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def parse(cls, data) -> Record:
        """Validate a record as JSON gives it; CorruptRecord names the first field that is wrong."""
        if not isinstance(data, dict):
            raise CorruptRecord(f"a record must be a JSON object, not {_type_name(data)}")
        schema = _check(data, "schema", "int", required=False)
        schema = 1 if schema is None else schema
        if not 1 <= schema <= SCHEMA_VERSION:
            raise CorruptRecord(f"unknown schema version {schema} (this harness reads 1 to "
                                f"{SCHEMA_VERSION})")
        if "key" not in data:
            raise CorruptRecord("missing field 'key'")
        key = _parse_key(data["key"])
        config_hash = _check(data, "config_hash", "str", required=True)
        status = _check(data, "status", "str", required=True)
        if status not in STATUSES:
            raise CorruptRecord(f"field 'status' must be one of {', '.join(STATUSES)}, not {status!r}")
        if status == "ok":
            metrics = Metrics.parse(data["metrics"]) if "metrics" in data else None
            if metrics is None:
                raise CorruptRecord("missing field 'metrics' (the record says ok)")
        else:
            metrics = None
            _check(data, "metrics", "dict", required=False, nullable=True)
        for name, kind in _OPTIONAL_FIELDS.items():
            _check(data, name, kind, required=False, nullable=True)
        wall = _check(data, "wall_seconds", "number", required=False, nullable=True)
        return cls(key=key, config_hash=config_hash, status=status, metrics=metrics,
                   error=_check(data, "error", "str", required=False, nullable=True),
                   wall_seconds=None if wall is None else float(wall),
                   log_file=_check(data, "log_file", "str", required=False, nullable=True),
                   stderr_file=_check(data, "stderr_file", "str", required=False, nullable=True),
                   schema=schema, data=data)

    @classmethod
    def of(cls, rec: Record | Mapping) -> Record:
        """`rec` itself if it is a Record, else parsed (hand-made records in analyses and tests)."""
        return rec if isinstance(rec, Record) else cls.parse(dict(rec))


def parse_record_text(text: str, path: Path | str = "record") -> Record:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptRecord(f"{path}: corrupt record ({err})") from None
    try:
        return Record.parse(data)
    except CorruptRecord as err:
        raise CorruptRecord(f"{path}: corrupt record ({err})") from None


# ------------------------------------------------------------------ claims


def proc_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process `pid` (started at `start`, when known) still runs on this host: not gone,
    not a zombie (a killed process whose parent has not reaped it; in a container whose PID 1 does
    not reap, orphans stay zombies), not a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
            return False
    except (OSError, ValueError):
        pass
    if start is not None:
        now = proc_start(pid)
        if now is not None and now != start:
            return False  # the pid was reused
    return True


def job_id() -> str | None:
    """This process's submitit job id (Slurm: 'array_task' or the job id; local: the controller's
    pid), which a requeued Slurm job keeps; None outside submitit."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        return str(env.job_id) if env.activated() else None
    except (RuntimeError, KeyError, ImportError):
        return None


@dataclass(frozen=True)
class ClaimInfo:
    """Who holds a claim, as read from its file; `age` is seconds since its last heartbeat."""

    path: Path
    host: str | None
    pid: int | None
    pid_start: int | None
    job: str | None
    token: str | None
    age: float
    inode: int

    def dead_because(self, stale_after: float = STALE_AFTER_SECONDS, *,
                     job: str | None = None) -> str | None:
        """Why the owner is dead, or None while it lives."""
        if self.age > stale_after:
            return f"no heartbeat for {self.age:.0f}s"
        if job is not None and self.job == job and (self.host, self.pid) != (socket.gethostname(),
                                                                            os.getpid()):
            return f"an earlier run of the same job {job} (requeued)"
        if self.host == socket.gethostname() and self.pid is not None and not pid_alive(
                self.pid, self.pid_start):
            return f"pid {self.pid} is gone"
        return None

    def describe(self) -> str:
        who = f"host {self.host}, pid {self.pid}" if self.host else "unreadable claim"
        return f"{who}{f', job {self.job}' if self.job else ''}, heartbeat {self.age:.0f}s ago"


def read_claim(path: Path) -> ClaimInfo | None:
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        text, st = "", path.stat()
    age = max(0.0, time.time() - st.st_mtime)
    try:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError
    except ValueError:  # being written, or broken: live until its heartbeat is stale
        return ClaimInfo(path, None, None, None, None, None, age, st.st_ino)
    pid, start = d.get("pid"), d.get("pid_start")
    return ClaimInfo(path, d.get("host"), pid if isinstance(pid, int) else None,
                     start if isinstance(start, int) else None, d.get("job"), d.get("token"), age,
                     st.st_ino)


class Claim:
    """A claim this process holds: heartbeat thread, ownership check, release."""

    def __init__(self, path: Path, fd: int, content: dict, heartbeat_s: float):
        self.path, self._fd, self._content = Path(path), fd, content
        self._write()  # the first heartbeat: host, pid, token in the file
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"heartbeat {self.path.name}")
        self._thread.start()

    @property
    def token(self) -> str:
        return self._content["token"]

    def _write(self) -> None:
        self._content["heartbeat"] = time.time()
        data = json.dumps(self._content, sort_keys=True).encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)  # so that other NFS clients see the new mtime

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self._fd < 0:
                    return
                if not self.held():
                    log.error("claim %s was taken over by another process: this run's result "
                              "will not be recorded", self.path)
                    return
                try:
                    self._write()
                except OSError as err:  # a hiccup of the file system: try again next beat
                    log.warning("claim %s: heartbeat failed (%s)", self.path, err)

    def held(self) -> bool:
        """Whether the file at `path` is still the one this process created."""
        try:
            return self._fd >= 0 and os.fstat(self._fd).st_ino == self.path.stat().st_ino
        except OSError:
            return False

    def release(self) -> None:
        """Remove the claim if it is still ours; stop the heartbeat. Idempotent."""
        self._stop.set()
        with self._lock:
            if self._fd < 0:
                return
            if self.held():
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create_claim(path: Path, job: str | None, heartbeat_s: float) -> Claim | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, _new_file_mode())
    except FileExistsError:
        return None
    pid = os.getpid()
    content = {"host": socket.gethostname(), "pid": pid, "pid_start": proc_start(pid),
               "job": job, "token": uuid.uuid4().hex, "started": time.time(),
               "heartbeat_every": heartbeat_s}
    try:
        return Claim(path, fd, content, heartbeat_s)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _remove_dead_claim(info: ClaimInfo) -> bool:
    """Move the dead claim `info` out of the way, if the file there is still that claim: rename it
    to a name of our own (only one taker succeeds), check that it is the one judged dead (same
    inode), and put it back (link, which fails if the path is taken again) if it is not."""
    mine = info.path.with_name(f"{info.path.name}.dead.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(info.path, mine)
    except FileNotFoundError:
        return False  # someone else took it over first
    if mine.stat().st_ino != info.inode:  # a new claim replaced the dead one meanwhile: undo
        try:
            os.link(mine, info.path)
        except FileExistsError:
            pass
        mine.unlink(missing_ok=True)
        return False
    mine.unlink(missing_ok=True)
    return True


# ------------------------------------------------------------------ the store


@dataclass(frozen=True)
class ResultsStore:
    """The results folder: `root` (--results-dir)."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ---- layout
    def runs_dir(self, profile: str, table: str) -> Path:
        return self.root / "runs" / profile / table

    def record_path(self, key: RunKey) -> Path:
        return (self.runs_dir(key.profile, key.table) / key.dataset / f"d{key.dim}"
                / f"{key.method}-{key.variant}" / f"s{key.split}-r{key.restart}.json")

    def checkpoint_path(self, key: RunKey) -> Path:
        return self.record_path(key).with_suffix(".ckpt")

    def weights_path(self, key: RunKey) -> Path:
        """The trained model's state_dict (--keep-weights): `torch.load(path, weights_only=True)`
        it into the model that benchmark.factory.build_model makes for the record's method, params
        and dim (docs/results-folder.md: which files of a results folder are data, which code)."""
        return self.record_path(key).with_suffix(".pt")

    def claim_path(self, key: RunKey) -> Path:
        return self.record_path(key).with_suffix(".claim")

    def timings_path(self, profile: str, table: str) -> Path:
        return self.runs_dir(profile, table) / "timings.json"

    def tables_dir(self) -> Path:
        return self.root / "tables"

    def figures_dir(self) -> Path:
        return self.root / "figures"

    def record_paths(self) -> list[Path]:
        """Every run record under runs/ (not set-aside copies, claims, checkpoints or timings)."""
        return sorted(self.root.glob("runs/*/*/*/d*/*/s*-r*.json"))

    def jobs_dir(self, profile: str, table: str) -> Path:
        """submitit's folder for a table (job pickles, per-task logs): with the results, which on
        a cluster is a file system the nodes share."""
        return self.root.absolute() / "submitit" / profile / table

    # ---- records
    def read(self, key: RunKey) -> Record:
        """The record of `key`: FileNotFoundError if there is none, CorruptRecord if it is unusable
        (unreadable, wrong-typed or missing fields, or another run's record)."""
        path = self.record_path(key)
        try:
            text = path.read_text()
        except UnicodeDecodeError as err:
            raise CorruptRecord(f"{path}: corrupt record ({err})") from None
        except IsADirectoryError:  # not ours to move: somebody put it there
            raise RecordPathBlocked(
                f"{path} is a folder where the record of run {key} belongs: move it out of the "
                "results folder, then rerun (nothing was changed)") from None
        record = parse_record_text(text, path)
        if record.key != key:
            raise CorruptRecord(f"{path}: corrupt record (it holds the run {record.key}, not {key})")
        return record

    def state(self, key: RunKey, config_hash: str) -> str:
        """'missing', 'corrupt', 'stale' (made with another config), 'failed' or 'done'."""
        return self.examine(key, config_hash)[0]

    def examine(self, key: RunKey, config_hash: str) -> tuple[str, str]:
        """(state, why) of the record of `key`; `why` says what is wrong with a corrupt one."""
        try:
            record = self.read(key)
        except FileNotFoundError:
            return "missing", ""
        except CorruptRecord as err:
            return "corrupt", str(err)
        if record.config_hash != config_hash:
            return "stale", "made with another configuration"
        return ("done" if record.ok else "failed"), ""

    def current(self, key: RunKey, config_hash: str) -> Record | None:
        """The usable record of `key` made with `config_hash`; None if missing, stale or corrupt
        (corrupt: with one warning line, since the record is not used)."""
        try:
            record = self.read(key)
        except FileNotFoundError:
            return None
        except CorruptRecord as err:
            warn_once("corrupt", self.record_path(key), "%s: not used; a run sets it aside and "
                      "redoes it", err)
            return None
        return record if record.config_hash == config_hash else None

    def write(self, data: dict) -> Record:
        """Validate `data` (a record is never written that a reader would reject), stamp the schema
        version and write it atomically at its key's path; the only place records are written."""
        data = {**data, "schema": SCHEMA_VERSION}
        record = Record.parse(data)  # raises CorruptRecord: a bug in the writer, not in the disk
        write_json_atomic(self.record_path(record.key), data)
        return record

    def set_aside(self, key: RunKey, reason: str) -> Path | None:
        """Keep an unusable record next to where it was (nothing computed is ever deleted); None if
        there was nothing to move."""
        path = self.record_path(key)
        target = set_aside_file(path, reason)
        if target is None:
            return None
        weights = self.weights_path(key)  # --keep-weights: they go with their record
        if weights.exists():
            os.replace(weights, weights.with_name(weights.name + target.name.removeprefix(path.name)))
        return target

    # ---- checkpoints and weights
    def remove_checkpoint(self, key: RunKey) -> None:
        self.checkpoint_path(key).unlink(missing_ok=True)

    def save_weights(self, key: RunKey, state_dict: dict) -> Path:
        """Write a run's final weights atomically beside its record; their path."""
        path = self.weights_path(key)
        save_checkpoint(path, state_dict)
        return path

    # ---- claims
    def claim_info(self, key: RunKey) -> ClaimInfo | None:
        return read_claim(self.claim_path(key))

    def live_claim(self, key: RunKey, stale_after: float = STALE_AFTER_SECONDS) -> ClaimInfo | None:
        """Who is training `key` right now, or None (no claim, or its owner is dead)."""
        info = self.claim_info(key)
        return info if info is not None and info.dead_because(stale_after) is None else None

    def claim(self, key: RunKey, *, job: str | None = None,
              heartbeat_s: float = HEARTBEAT_SECONDS,
              stale_after: float = STALE_AFTER_SECONDS) -> Claim | ClaimInfo:
        """Claim `key` for training: a held `Claim`, or the `ClaimInfo` of the live owner. A dead
        owner's claim is taken over with one warning line."""
        path = self.claim_path(key)
        for _ in range(5):  # a few rounds of races with other takers at most
            claim = _create_claim(path, job, heartbeat_s)
            if claim is not None:
                return claim
            info = read_claim(path)
            if info is None:
                continue  # released just now: try again
            why = info.dead_because(stale_after, job=job)
            if why is None:
                return info
            if _remove_dead_claim(info):
                warn_once("dead claim", path, "run %s: taking over the claim of a dead owner "
                          "(%s; %s)", key, info.describe(), why)
        info = read_claim(path)
        if info is None:
            raise RuntimeError(f"could not claim {path}")
        return info

    def remove_claim(self, info: ClaimInfo) -> bool:
        """Remove a claim another process left (a dead job's), if it is still that one."""
        return _remove_dead_claim(info)

    def run_state(self, key: RunKey, config_hash: str,
                  stale_after: float = STALE_AFTER_SECONDS) -> str:
        """state(), or 'in progress' while a live process holds the run's claim."""
        return "in progress" if self.live_claim(key, stale_after) else self.state(key, config_hash)

