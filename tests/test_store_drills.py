"""Drills on one results folder with real launchers (reproduce.py subprocesses, the local launcher):
two launchers started together, and a launcher SIGKILLed (or SIGTERMed) mid-sweep then rerun. Each run must be
trained exactly once (counted from the workers' "run <key>" log lines, which run_one writes only
once it holds the run's claim and the record is still to make), no finished record may be rewritten
(inode and mtime as first seen), no claim may be left behind, and no worker may outlive its
launcher. Plus a corrupt record, redone through the CLI with one warning line.

Runs are tiny (the test probe plugin on 256 MNIST images, 2 epochs, with a sleep per epoch so that
runs overlap); each drill takes well under a minute on two cores."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmark.cli import main

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
RUN_LINE = re.compile(r"^\d\d:\d\d:\d\d run (\S+)$", re.M)
SPLITS = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Overrides conftest's: the work here is in subprocesses (--threads 1)."""
    yield


def write_inputs(tmp: Path, epoch_sleep: float) -> tuple[Path, Path]:
    spec = tmp / "drill.yaml"
    spec.write_text("title: drill\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\n"
                    f"rows:\n  - {{probe: {{epoch_sleep: {epoch_sleep}}}}}\n")
    profile = tmp / "tiny.yaml"
    profile.write_text("description: drill\nepochs: 2\nbatch_size: 32\nlr: 1.0e-3\npatience: null\n"
                       f"splits: {SPLITS}\nrestarts: 1\niwae_k: 2\neval_batch_size: 128\n"
                       "train_size: 256\nval_size: 64\ntest_size: 64\n")
    return spec, profile


def launcher(spec, profile, root, results, *extra, own_group: bool = False) -> subprocess.Popen:
    """reproduce.py with the local launcher; `own_group`: in a process group of its own, as a
    terminal's foreground job is (Ctrl-C signals the whole group)."""
    env = dict(os.environ, GPVAE_BENCH_PLUGINS="probe_plugin",
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "reproduce.py", "--table", str(spec), "--profile", str(profile),
           "--data-root", str(root), "--results-dir", str(results), "--launcher", "local",
           "--jobs", "1", "--threads", "1", "--device", "cpu", "-q", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=own_group)


def records(results: Path) -> list[Path]:
    return sorted((results / "runs").rglob("s*-r*.json"))


def run_lines(results: Path) -> Counter:
    """How many times each run started training, over every worker's log."""
    counts = Counter()
    for log in (results / "submitit").rglob("*_log.out"):
        counts.update(RUN_LINE.findall(log.read_text(errors="replace")))
    return counts


def processes_under(path: Path) -> list[str]:
    """Command lines of live processes that name `path` (launchers, submitit controllers, workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(path) in cmd and state != "Z":
            found.append(f"{proc.name}: {cmd}")
    return found


class RecordWatch:
    """Remembers (inode, mtime) of each record the first time it is seen, polling in a thread."""

    def __init__(self, results: Path):
        self.results, self.first = results, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._stop.wait(0.05):
            self.look()

    def look(self):
        for path in records(self.results):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            self.first.setdefault(path, (st.st_ino, st.st_mtime_ns))

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.look()

    def rewritten(self) -> list[Path]:
        now = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in records(self.results)}
        return [p for p, first in self.first.items() if now.get(p) != first]


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"launcher did not finish in {timeout}s: {err[-3000:]}")
    return proc.returncode, err


def test_two_launchers_on_one_folder_train_each_run_once(mnist_root, tmp_path):
    spec, profile = write_inputs(tmp_path, epoch_sleep=1.0)
    results = tmp_path / "results"
    watch = RecordWatch(results)
    a = launcher(spec, profile, mnist_root, results)
    b = launcher(spec, profile, mnist_root, results)
    (rc_a, err_a), (rc_b, err_b) = finish(a), finish(b)
    watch.stop()
    assert rc_a == 0 and rc_b == 0, (err_a[-3000:], err_b[-3000:])
    counts = run_lines(results)
    assert len(records(results)) == SPLITS
    assert sorted(counts.values()) == [1] * SPLITS, counts  # every run trained exactly once
    assert watch.rewritten() == []  # no finished record rewritten
    assert not list((results / "runs").rglob("*.claim")) and not list((results / "runs").rglob("*.ckpt"))
    skips = (err_a + err_b).count("in progress")
    print(f"\n[drill] two launchers: {len(records(results))} records, training starts per run "
          f"{dict(counts)}, {skips} 'in progress' lines (runs the other launcher held)")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_launcher_leaves_no_worker_and_a_rerun_finishes_the_sweep(mnist_root, tmp_path,
                                                                            sig):
    spec, profile = write_inputs(tmp_path, epoch_sleep=2.0)
    results = tmp_path / "results"
    watch = RecordWatch(results)
    first = launcher(spec, profile, mnist_root, results)
    deadline = time.monotonic() + 300
    while True:  # mid-sweep: one run recorded, another one claimed (training)
        done = {p.with_suffix("") for p in records(results)}
        training = [c for c in (results / "runs").rglob("*.claim") if c.with_suffix("") not in done]
        if done and training:
            break
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.1)
    first.send_signal(sig)
    killed_at = time.monotonic()
    first.wait()  # not communicate(): the pipes stay open while any child of the launcher lives
    first.stdout.close()
    first.stderr.close()
    while processes_under(tmp_path) and time.monotonic() - killed_at < 30:
        time.sleep(0.2)
    left = processes_under(tmp_path)
    assert left == [], left  # no worker outlives its launcher
    stopped_after = time.monotonic() - killed_at
    finished_before = dict(watch.first)
    assert finished_before, "no record before the kill"

    rc, err = finish(launcher(spec, profile, mnist_root, results))
    watch.stop()
    assert rc == 0, err[-3000:]
    assert len(records(results)) == SPLITS
    counts = run_lines(results)
    interrupted = {k for k, n in counts.items() if n > 1}
    # each run trained to the end once: the one killed mid-training started once more (resuming
    # from its last checkpoint), no other run twice
    # (or, when the run killed mid-training finished within its stop window, each run once)
    assert sorted(counts.values()) in ([1] * SPLITS, sorted([1] * (SPLITS - 1) + [2])), counts
    assert all(k.endswith(training[0].stem) for k in interrupted), (interrupted, training)
    assert watch.rewritten() == []  # the records finished before the kill were not rewritten
    assert all(watch.first[p] == v for p, v in finished_before.items())
    logs = "".join(p.read_text(errors="replace") for p in (results / "submitit").rglob("*_log.out"))
    if sig == signal.SIGKILL:  # the worker saw its launcher go; SIGTERM: the launcher stopped it
        assert "launcher (pid" in logs and "is gone: stopping" in logs
    assert not list((results / "runs").rglob("*.claim"))
    print(f"\n[drill] {sig.name} mid-sweep: {len(finished_before)} record(s) before the kill, workers "
          f"gone {stopped_after:.1f}s after it; after the rerun {len(records(results))} records, "
          f"training starts per run {dict(counts)} "
          f"({'resumed' if 'resumed from checkpoint' in logs else 'restarted'})")


def test_ctrl_c_mid_sweep_says_one_line_and_releases_every_claim(mnist_root, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole foreground process group (the launcher, its
    submitit controllers, their workers). The launcher says one line, with no traceback from any
    of them; by the time it has exited every claim is released and no worker is left; every
    finished record stays as it was."""
    spec, profile = write_inputs(tmp_path, epoch_sleep=2.0)
    results = tmp_path / "results"
    watch = RecordWatch(results)
    proc = launcher(spec, profile, mnist_root, results, "--jobs", "2", own_group=True)
    deadline = time.monotonic() + 300
    while not list((results / "runs").rglob("*.claim")):  # mid-sweep: a run is training
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the sweep never got going"
        time.sleep(0.1)
    time.sleep(1.0)  # into its first epoch
    os.killpg(proc.pid, signal.SIGINT)
    pressed = time.monotonic()
    rc, err = finish(proc, timeout=120)
    took = time.monotonic() - pressed
    claims = list((results / "runs").rglob("*.claim"))  # as the command returns
    while processes_under(tmp_path) and time.monotonic() - pressed < 30:
        time.sleep(0.2)
    watch.stop()
    assert rc == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines() == ["interrupted: finished runs are recorded; rerun to "
                                        "continue"], err[-3000:]
    assert claims == [], claims
    assert processes_under(tmp_path) == []
    assert watch.rewritten() == []
    print(f"\n[drill] Ctrl-C mid-sweep: exit {rc} {took:.1f}s after it, stderr {err.strip()!r}, "
          f"{len(records(results))} record(s) kept, no claim left")


@pytest.mark.parametrize("damage", [
    ("metrics a string", lambda r: r | {"metrics": "lots"}),
    ("test_iwae null", lambda r: r | {"metrics": r["metrics"] | {"test_iwae": None}}),
    ("missing val_iwae", lambda r: r | {"metrics": {k: v for k, v in r["metrics"].items()
                                                    if k != "val_iwae"}}),
    ("key null", lambda r: r | {"key": None}),
], ids=lambda d: d[0])
def test_a_wrong_typed_record_is_set_aside_once_and_redone(mnist_root, tmp_path, capsys, monkeypatch,
                                                          damage):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "probe_plugin")
    spec, profile = write_inputs(tmp_path, epoch_sleep=0.0)
    results = tmp_path / "results"
    args = ["--table", str(spec), "--profile", str(profile), "--data-root", str(mnist_root),
            "--results-dir", str(results), "--launcher", "debug", "--splits", "1", "--threads", "1",
            "--device", "cpu"]  # not -q: the plan's summary line is what is checked
    assert main(args) == 0
    [path] = records(results)
    good = json.loads(path.read_text())
    path.write_text(json.dumps(damage[1](good)))
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    # one warning (the run's own info line says where the record went)
    warnings = [line for line in err.splitlines()
                if "corrupt record" in line and "set aside and redone" in line]
    assert len(warnings) == 1, err
    assert "1 corrupt; 1 to run" in err and "Traceback" not in err
    assert json.loads(path.read_text())["status"] == "ok"
    [kept] = path.parent.glob(path.name + ".corrupt*")
    assert json.loads(kept.read_text()) == damage[1](good)  # nothing is ever deleted


def debug_args(tmp_path, mnist_root, *extra) -> list[str]:
    spec, profile = write_inputs(tmp_path, epoch_sleep=0.0)
    return ["--table", str(spec), "--profile", str(profile), "--data-root", str(mnist_root),
            "--results-dir", str(tmp_path / "results"), "--launcher", "debug", "--threads", "1",
            "--device", "cpu", *extra]  # not -q: the plan's summary line is checked


def test_a_live_claim_is_skipped_and_a_dead_ones_run_is_taken_over_with_one_warning(
        mnist_root, tmp_path, capsys, monkeypatch):
    from benchmark.keys import RunKey
    from benchmark.store import ResultsStore

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "probe_plugin")
    args = debug_args(tmp_path, mnist_root, "--splits", "2")
    store = ResultsStore(tmp_path / "results")
    key = RunKey("tiny", "drill", "mnist", 10, "probe", "epoch_sleep0.0", 0, 0)
    live = store.claim(key)  # held by this process: live
    try:
        assert main(args) == 0
        err = capsys.readouterr().err
        assert "2 runs: 1 in progress, 1 missing; 1 to run" in err
        assert f"run {key}: in progress elsewhere (host" in err
        assert not store.record_path(key).exists()
        assert store.record_path(dataclasses.replace(key, split=1)).exists()
    finally:
        live.release()
    # a claim left by a process that is gone: the rerun takes it over, saying so once
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.claim_path(key).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                                 "job": None, "token": "x"}))
    assert main(args + ["-q"]) == 0  # -q: warnings only (the run's own line is info)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "dead owner" in line]
    assert len(lines) == 1 and f"pid {dead.pid} is gone" in lines[0], err
    assert store.read(key).ok and not store.claim_path(key).exists()
