"""The results store (benchmark/store.py): typed records that are corrupt when any field is wrong,
set aside and never crash aggregation; claims that let one process at a time train a run. Fast: no
training here (the launcher drills are tests/test_store_drills.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import time

import pytest

from benchmark.aggregate import records_frame
from benchmark.cli import main
from benchmark.keys import RunKey
from benchmark.plan import make_plan
from benchmark.profiles import load_profile
from benchmark.run import RunTask, run_one
from benchmark.specs import load_table_spec
from benchmark.store import (
    SCHEMA_VERSION,
    Claim,
    ClaimInfo,
    CorruptRecord,
    Record,
    RecordPathBlocked,
    ResultsStore,
    proc_start,
    write_json_atomic,
)

KEY = RunKey("smoke", "table1", "mnist", 10, "vae", "default", 0, 0)


def ok_record(key: RunKey = KEY, **metrics) -> dict:
    return {"key": dataclasses.asdict(key), "config_hash": "abc", "status": "ok",
            "metrics": {"val_iwae": -90.0, "test_iwae": -91.0, "mean_image_floor": -700.0,
                        "test_elbo": -95.0, "epochs_run": 4, "resumed_from_epoch": None, **metrics},
            "wall_seconds": 3.5, "log_file": None, "config": {}, "history": []}


def without(d: dict, *path):
    d = json.loads(json.dumps(d))
    *outer, last = path
    node = d
    for p in outer:
        node = node[p]
    del node[last]
    return d


def replaced(d: dict, value, *path):
    d = json.loads(json.dumps(d))
    *outer, last = path
    node = d
    for p in outer:
        node = node[p]
    node[last] = value
    return d


GOOD = ok_record()
# (name, the file's text, what the reason must name)
CORRUPT = [
    ("truncated", json.dumps(GOOD)[:60], "corrupt record (Unterminated string"),
    ("empty file", "", "Expecting value"),
    ("not an object", "[1, 2]", "JSON object"),
    ("metrics a string", json.dumps(replaced(GOOD, "lots", "metrics")), "'metrics' must be a dict"),
    ("test_iwae a string", json.dumps(replaced(GOOD, "-91", "metrics", "test_iwae")),
     "'metrics.test_iwae' must be a number, not str"),
    ("test_iwae null", json.dumps(replaced(GOOD, None, "metrics", "test_iwae")),
     "'metrics.test_iwae' must be a number, not null"),
    ("test_iwae a bool", json.dumps(replaced(GOOD, True, "metrics", "test_iwae")),
     "'metrics.test_iwae' must be a number, not bool"),
    ("missing val_iwae", json.dumps(without(GOOD, "metrics", "val_iwae")),
     "missing field 'metrics.val_iwae'"),
    ("missing metrics in an ok record", json.dumps(without(GOOD, "metrics")),
     "missing field 'metrics'"),
    ("epochs_run a float", json.dumps(replaced(GOOD, 4.5, "metrics", "epochs_run")),
     "'metrics.epochs_run' must be an int"),
    ("key null", json.dumps(replaced(GOOD, None, "key")), "'key' must be a dict, not null"),
    ("key missing", json.dumps(without(GOOD, "key")), "missing field 'key'"),
    ("key.dim a string", json.dumps(replaced(GOOD, "10", "key", "dim")),
     "'key.dim' must be an int, not str"),
    ("key.split missing", json.dumps(without(GOOD, "key", "split")), "missing field 'key.split'"),
    ("another run's record", json.dumps(replaced(GOOD, 1, "key", "split")),
     "it holds the run table1/mnist/d10/vae-default/s1-r0"),
    ("config_hash a number", json.dumps(replaced(GOOD, 7, "config_hash")),
     "'config_hash' must be a str"),
    ("status unknown", json.dumps(replaced(GOOD, "done", "status")), "'status' must be one of"),
    ("wall_seconds a string", json.dumps(replaced(GOOD, "3s", "wall_seconds")),
     "'wall_seconds' must be a number"),
    ("history a dict", json.dumps(replaced(GOOD, {}, "history")), "'history' must be a list"),
    ("newer schema", json.dumps(replaced(GOOD, SCHEMA_VERSION + 1, "schema")),
     "unknown schema version"),
]


@pytest.mark.parametrize("name,text,reason", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_a_wrong_record_is_corrupt_with_its_reason(tmp_path, name, text, reason):
    store = ResultsStore(tmp_path)
    path = store.record_path(KEY)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    state, why = store.examine(KEY, "abc")
    assert state == "corrupt" and reason in why and str(path) in why, why
    with pytest.raises(CorruptRecord):
        store.read(KEY)


def test_non_utf8_is_corrupt_and_a_folder_is_an_error_not_moved(tmp_path):
    store = ResultsStore(tmp_path)
    path = store.record_path(KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xfe{")
    assert store.state(KEY, "abc") == "corrupt"
    path.unlink()
    path.mkdir()
    with pytest.raises(RecordPathBlocked, match="is a folder where the record of run"):
        store.state(KEY, "abc")
    assert path.is_dir()


def test_the_records_on_disk_today_read_as_schema_1(tmp_path):
    """A record as the harness wrote it before the store (no "schema"), and a failed one as the
    launcher wrote it for a dead job, are valid; what the store writes is stamped with the schema."""
    store = ResultsStore(tmp_path)
    legacy = ok_record()
    write_json_atomic(store.record_path(KEY), legacy)
    rec = store.read(KEY)
    assert rec.schema == 1 and rec.ok and rec.metrics.test_iwae == -91.0
    assert rec.metrics.value("test_elbo") == -95.0 and rec.key == KEY
    failed = {"key": dataclasses.asdict(KEY), "config_hash": "abc", "status": "failed",
              "error": "RuntimeError: x", "log_file": "a.out", "stderr_file": "a.err",
              "log_tail": None, "slurm": None}
    written = store.write(failed)
    assert written.schema == SCHEMA_VERSION and not written.ok and written.metrics is None
    assert json.loads(store.record_path(KEY).read_text())["schema"] == SCHEMA_VERSION
    assert store.state(KEY, "abc") == "failed" and store.state(KEY, "other") == "stale"


def test_the_store_never_writes_a_record_it_would_reject(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(CorruptRecord, match="metrics.val_iwae"):
        store.write(without(GOOD, "metrics", "val_iwae"))
    assert not store.record_path(KEY).exists()


def test_real_records_on_disk_are_valid():
    """Every record under the repository's results/ reads (read only; skipped where none)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "results"
    paths = sorted((root / "runs").glob("*/*/*/d*/*/s*-r*.json"))
    if not paths:
        pytest.skip("no records under results/")
    for path in paths:
        rec = Record.parse(json.loads(path.read_text()))
        assert ResultsStore(root).record_path(rec.key) == path


def test_aggregation_validates_mappings():
    frame = records_frame([ok_record(), ok_record(dataclasses.replace(KEY, split=1))])
    assert list(frame["value"]) == [-91.0, -91.0]
    with pytest.raises(CorruptRecord):
        records_frame([replaced(GOOD, "x", "metrics")])


def test_set_aside_keeps_every_copy(tmp_path):
    store = ResultsStore(tmp_path)
    for n in range(3):
        write_json_atomic(store.record_path(KEY), {"n": n})
        assert store.set_aside(KEY, "corrupt").name == f"s0-r0.json.corrupt{n or ''}"
    assert store.set_aside(KEY, "corrupt") is None  # nothing left to move
    assert len(list(store.record_path(KEY).parent.iterdir())) == 3


# ------------------------------------------------------------------ the CLI on corrupt records


def smoke_tasks(results, root="unused") -> list[RunTask]:
    plan = make_plan(load_table_spec("1"), load_profile("smoke"), data_root=str(root),
                     results_dir=str(results), methods={"vae"}, dataset_filter={"mnist"},
                     dims={10})
    return plan.tasks


def good_record(task: RunTask, value: float) -> dict:
    return {"key": dataclasses.asdict(task.key), "config_hash": task.config_hash(),
            "status": "ok", "wall_seconds": 1.0,
            "metrics": {"val_iwae": value, "test_iwae": value, "mean_image_floor": -2000.0}}


def collect(capsys, results, *extra):
    rc = main(["--table", "1", "--profile", "smoke", "--collect", "--datasets", "mnist",
               "--dims", "10", "--methods", "vae", "--results-dir", str(results), "-q", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name,text,reason", CORRUPT[3:12], ids=[c[0] for c in CORRUPT[3:12]])
def test_collect_reports_a_corrupt_record_in_one_line_and_renders_the_rest(
        capsys, tmp_path, name, text, reason):
    good, bad = smoke_tasks(tmp_path)
    write_json_atomic(good.record_path, good_record(good, 600.0))
    text = text.replace(json.dumps(dataclasses.asdict(KEY)), json.dumps(dataclasses.asdict(bad.key)))
    bad.record_path.write_text(text.replace('"abc"', json.dumps(bad.config_hash())))
    rc, out, err = collect(capsys, tmp_path)
    assert rc == 0
    lines = [line for line in err.splitlines() if "corrupt record" in line
             and "not used; a run sets it aside and redoes it" in line]
    assert len(lines) == 1 and str(bad.record_path) in lines[0] and reason in lines[0], err
    assert "Traceback" not in err
    assert "pending: 1 runs have no current record yet" in err
    assert "600.0" in out  # the good record is in the table
    assert bad.record_path.exists()  # --collect moves nothing


def test_dry_run_names_what_is_wrong_and_a_run_sets_it_aside_under_its_claim(capsys, tmp_path):
    [_, bad] = smoke_tasks(tmp_path)
    bad.record_path.parent.mkdir(parents=True)
    bad.record_path.write_text(json.dumps(replaced(good_record(bad, 1.0), None, "key")))
    rc = main(["--table", "1", "--profile", "smoke", "--dry-run", "--datasets", "mnist", "--dims",
               "10", "--methods", "vae", "--results-dir", str(tmp_path), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and f"would run {bad.key} (corrupt)" in out


# ------------------------------------------------------------------ claims


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_claim(store: ResultsStore, key: RunKey, *, age: float = 0.0, **fields) -> None:
    path = store.claim_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": proc_start(os.getpid()),
               "job": None, "token": "t"} | fields
    path.write_text(json.dumps(content))
    if age:
        past = time.time() - age
        os.utime(path, (past, past))


@pytest.mark.parametrize("case,fields,age", [
    ("no such pid on this host", {"pid": None}, 0.0),
    ("pid reused by another process", {"pid_start": -1}, 0.0),
    ("no heartbeat for long on another host", {"host": "elsewhere.example"}, 1000.0),
    ("unreadable and stale", {"__text__": "{half"}, 1000.0),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_dead_owners_claim_is_taken_over_with_one_warning(tmp_path, caplog, case, fields, age):
    store = ResultsStore(tmp_path)
    if fields.get("pid", 0) is None:
        fields["pid"] = dead_pid()
    text = fields.pop("__text__", None)
    write_claim(store, KEY, age=age, **fields)
    if text is not None:
        store.claim_path(KEY).write_text(text)
        os.utime(store.claim_path(KEY), (time.time() - age,) * 2)
    with caplog.at_level(logging.WARNING, logger="gpvae_bench"):
        claim = store.claim(KEY, heartbeat_s=60)
    assert isinstance(claim, Claim), claim
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "taking over the claim of a dead owner" in warnings[0]
    info = store.claim_info(KEY)
    assert info.pid == os.getpid() and info.token == claim.token
    claim.release()
    assert not store.claim_path(KEY).exists()
    assert [p.name for p in store.claim_path(KEY).parent.iterdir()] == []  # nothing left behind


@pytest.mark.parametrize("case,fields", [
    ("live pid on this host", {}),
    ("fresh heartbeat on another host", {"host": "elsewhere.example", "pid": 1}),
    ("being written (unreadable), fresh", {"__text__": ""}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_live_claim_is_respected(tmp_path, case, fields):
    store = ResultsStore(tmp_path)
    text = fields.pop("__text__", None)
    write_claim(store, KEY, **fields)
    if text is not None:
        store.claim_path(KEY).write_text(text)
    before = store.claim_path(KEY).read_text()
    got = store.claim(KEY)
    assert isinstance(got, ClaimInfo) and store.live_claim(KEY) is not None
    assert store.claim_path(KEY).read_text() == before  # untouched
    assert store.run_state(KEY, "abc") == "in progress"


def test_a_killed_but_unreaped_process_is_dead():
    """In a container whose PID 1 does not reap orphans, a SIGKILLed launcher stays a zombie."""
    from benchmark.store import pid_alive

    proc = subprocess.Popen(["sleep", "30"])
    assert pid_alive(proc.pid, proc_start(proc.pid))
    proc.kill()
    time.sleep(0.2)  # not reaped yet: a zombie
    assert not pid_alive(proc.pid)
    proc.wait()
    assert not pid_alive(proc.pid)


def test_a_requeued_slurm_job_takes_over_its_earlier_incarnations_claim(tmp_path):
    store = ResultsStore(tmp_path)
    write_claim(store, KEY, host="node7", pid=4242, job="17_3")  # fresh heartbeat, other host
    assert isinstance(store.claim(KEY, job="18_0"), ClaimInfo)  # another job: live, respected
    claim = store.claim(KEY, job="17_3")  # the same array task after a requeue: ours
    assert isinstance(claim, Claim)
    claim.release()


def test_claim_is_exclusive_refreshed_and_released_only_by_its_owner(tmp_path):
    store = ResultsStore(tmp_path)
    claim = store.claim(KEY, heartbeat_s=0.05)
    assert isinstance(claim, Claim)
    other = store.claim(KEY)
    assert isinstance(other, ClaimInfo) and other.pid == os.getpid()
    first = store.claim_path(KEY).stat().st_mtime_ns
    deadline = time.time() + 5
    while store.claim_path(KEY).stat().st_mtime_ns == first and time.time() < deadline:
        time.sleep(0.02)
    assert store.claim_path(KEY).stat().st_mtime_ns > first  # the heartbeat
    assert json.loads(store.claim_path(KEY).read_text())["heartbeat"] > 0
    # taken over behind its back (judged dead): it no longer holds it and leaves the new one alone
    os.replace(store.claim_path(KEY), tmp_path / "old")
    write_claim(store, KEY, token="new")
    assert not claim.held()
    claim.release()
    assert json.loads(store.claim_path(KEY).read_text())["token"] == "new"


def test_a_claimed_run_is_in_progress_in_dry_run_and_collect_and_not_trained(capsys, tmp_path):
    first, second = smoke_tasks(tmp_path)
    store = ResultsStore(tmp_path)
    claim = store.claim(first.key)  # held by this (live) process
    try:
        rc = main(["--table", "1", "--profile", "smoke", "--dry-run", "--datasets", "mnist",
                   "--dims", "10", "--methods", "vae", "--results-dir", str(tmp_path), "-q"])
        out, err = capsys.readouterr()
        assert rc == 0 and "2 runs: 1 in progress, 1 missing; 1 to run" in err
        assert f"in progress: {first.key} (host {socket.gethostname()}, pid {os.getpid()}" in out
        assert f"would run {second.key}" in out and f"would run {first.key}" not in out
        rc, out, err = collect(capsys, tmp_path)
        assert rc == 0 and "1 in progress" in err
        assert "(2 in progress)" not in err and "pending: 2 runs have no current record yet (1 in " \
            "progress)" in err
        # a worker started anyway (another launcher planned it earlier) skips it
        result = run_one(first)
        assert result["status"] == "skipped" and "in progress" in result["reason"]
        assert not first.record_path.exists()
    finally:
        claim.release()


def test_a_run_recorded_meanwhile_is_not_trained_again(tmp_path):
    """A launcher that planned a run as missing, whose record another process wrote since, skips
    it once it holds the claim: no finished record is rewritten."""
    [task, _] = smoke_tasks(tmp_path)
    write_json_atomic(task.record_path, good_record(task, 5.0))
    before = task.record_path.stat()
    result = run_one(task)
    assert result == {"status": "skipped", "key": dataclasses.asdict(task.key),
                      "reason": "already done"}
    after = task.record_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not ResultsStore(tmp_path).claim_path(task.key).exists()
    # --force replaces a record written before its plan, not one written after it
    forced = dataclasses.replace(task, force=True, planned_at=time.time() - 60)
    assert run_one(forced)["reason"] == "already done"


def test_records_are_written_only_by_the_store():
    """No module but benchmark/store.py writes a run record or opens one for reading."""
    import re
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "benchmark"
    pattern = re.compile(r"write_json_atomic\([^)]*record|json\.loads\([^)]*record_path")
    offenders = [p.name for p in pkg.rglob("*.py") if p.name != "store.py"
                 and pattern.search(p.read_text())]
    assert offenders == []


def test_layout():
    store = ResultsStore("R")
    assert str(store.record_path(KEY)) == "R/runs/smoke/table1/mnist/d10/vae-default/s0-r0.json"
    assert store.checkpoint_path(KEY).name == "s0-r0.ckpt"
    assert store.claim_path(KEY).name == "s0-r0.claim"
    assert str(store.timings_path("quick", "table3")) == "R/runs/quick/table3/timings.json"


class _Planted:
    """Unpickled, it would create the file `marker` (a checkpoint planted to run code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_holding_code_is_said_before_launch_without_loading_it(tmp_path, caplog):
    """The launcher's check (on the console, before a worker loads anything) names a checkpoint
    whose pickle imports more than weights, runs none of it and moves nothing (its run's worker sets
    it aside); a real checkpoint passes silently."""
    import torch

    from benchmark.store import warn_unusable_checkpoint

    planted, clean = tmp_path / "planted.ckpt", tmp_path / "clean.ckpt"
    torch.save({"model": _Planted(tmp_path / "code-ran"), "tag": "x"}, planted)
    torch.save({"model": {"w": torch.zeros(3)}, "epoch": 2, "rng": torch.get_rng_state()}, clean)
    with caplog.at_level(logging.WARNING, logger="gpvae_bench"):
        warn_unusable_checkpoint(planted)
        warn_unusable_checkpoint(clean)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "planted.ckpt: it holds objects other than tensors" in warnings[0]
    assert "io.open" in warnings[0] or "builtins.open" in warnings[0], warnings[0]
    assert not (tmp_path / "code-ran").exists() and planted.exists() and clean.exists()
