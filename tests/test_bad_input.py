"""Bad input gets one clear error line and a non-zero exit, and touches no finished record.

`CASES` is the table of bad inputs: each builds its setting (files, PATH, a monkeypatched write)
and the command line, and states the exit code (2: the command or what it names must change; 1:
the machine cannot do it now) and a piece of the one `error: ...` line. Every case runs against a
results folder that already holds a finished record, which must come out byte for byte the same.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixtures_datasets as fx  # noqa: E402

from benchmark import run as run_module  # noqa: E402
from benchmark.cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE_KEYS = ("description: x\nepochs: 1\nbatch_size: 8\nlr: 0.001\npatience: null\nsplits: 1\n"
                "restarts: 1\niwae_k: 2\neval_batch_size: 8\ntrain_size: 64\nval_size: 16\n"
                "test_size: 16\n")
ONE_RUN = ["--table", "1", "--profile", "smoke", "--datasets", "mnist", "--dims", "10",
           "--methods", "vae", "--splits", "1", "--launcher", "debug", "-q"]


def run_main(capsys, *args):
    rc = main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def fake_train_and_evaluate(task):
    """What train_and_evaluate returns, in no time: the records, plans and tables are real."""
    value = -100.0 - task.key.split - 10 * (task.key.method != "vae")
    metrics = {"val_iwae": value, "val_elbo": value - 1, "test_iwae": value, "test_elbo": value - 1,
               "mean_image_floor": -900.0, "train_seconds": 0.0, "eval_seconds": 0.0}
    return {"metrics": metrics, "diagnostics": {}, "history": [],
            "sizes": {"train": 1, "val": 1, "test": 1}}


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """A data root with a tiny MNIST (its MD5s accepted through $GPVAE_BENCH_DATA_MD5SUMS) and no
    other dataset."""
    root = tmp_path_factory.mktemp("data")
    fx.write_idx_mnist_raw(root, n_train=40, n_test=10)
    raw = root / "MNIST" / "raw"
    listing = fx.accept_checksums(sorted(raw.iterdir()), root / "MD5SUMS")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPVAE_BENCH_DATA_MD5SUMS", str(listing))
        yield root


@pytest.fixture(scope="module")
def finished(tiny_mnist, tmp_path_factory):
    """A results folder holding one finished run (table 1, smoke, MNIST d=10, VAE, split 0)."""
    results = tmp_path_factory.mktemp("finished") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_module, "train_and_evaluate", fake_train_and_evaluate)
        assert main(ONE_RUN + ["--data-root", str(tiny_mnist), "--results-dir", str(results)]) == 0
    [record] = (results / "runs").rglob("*.json")
    assert json.loads(record.read_text())["status"] == "ok"
    return results


def snapshot(results: Path) -> dict:
    runs = results / "runs"
    return {str(p.relative_to(runs)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(runs.rglob("*")) if p.is_file()} if runs.is_dir() else {}


@dataclass
class Env:
    """What a case's setup may use: scratch space, the data, the results folder, monkeypatch."""

    tmp: Path
    data: Path
    results: Path
    mp: pytest.MonkeyPatch
    kept: bytes = b""  # what a case's check compares with (a file it damaged)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return str(path)

    def folder(self, name: str) -> str:
        (self.tmp / name).mkdir()
        return str(self.tmp / name)

    def to(self, data=None, results=None) -> "Env":
        """This case's command on another data root or results folder."""
        self.data, self.results = Path(data or self.data), Path(results or self.results)
        return self

    def run(self, *args: str) -> list[str]:
        """A command on the data and results folder of this case."""
        return [*args, "--data-root", str(self.data), "--results-dir", str(self.results)]

    def profile(self, key: str, value: str) -> list[str]:
        text = PROFILE_KEYS.replace(f"\n{key}: ", f"\n{key}: {value} #", 1)
        assert text != PROFILE_KEYS or key == "description"
        return self.run("--table", "1", "--profile", self.file("p.yaml", text), "--dry-run")

    def corrupt_mnist(self, damage) -> list[str]:
        data = self.tmp / "data"
        fx.write_idx_mnist_raw(data, n_train=40, n_test=10)
        raw = data / "MNIST" / "raw"
        self.mp.setenv("GPVAE_BENCH_DATA_MD5SUMS", str(fx.accept_checksums(
            sorted(raw.iterdir()), self.tmp / "MD5SUMS")))
        damage(raw / "t10k-images-idx3-ubyte")
        self.data = data
        return self.run(*ONE_RUN, "--methods", "sa")

    def write_fails(self, err: int, after: int = 0) -> None:
        """Every write into a file opened through os.fdopen (the atomic writer's temp files)
        fails with `err` once `after` bytes are written: a full disk, simulated."""
        real = os.fdopen

        class Failing:
            def __init__(self, f):
                self.f, self.n = f, 0

            def write(self, data):
                self.n += len(data)
                if self.n > after:
                    raise OSError(err, os.strerror(err))
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        self.mp.setattr(os, "fdopen", lambda fd, *a, **k: Failing(real(fd, *a, **k)))


def flip(at: int):
    def damage(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    return damage


def fake_slurm(env: Env, *, only: tuple[str, ...] | None = None) -> None:
    """Slurm's commands on PATH (and nothing else of Slurm: hermetic on a machine with or without
    it), failing as Slurm's do with its controller down; `only`: just those commands. submitit
    looks for srun before it submits anything."""
    bin_ = env.tmp / "bin"
    bin_.mkdir()
    for tool, line in (("sbatch", "sbatch: error: Batch job submission failed: Unable to contact "
                                  "slurm controller (connect failure)"),
                       ("srun", "srun: error: Unable to contact slurm controller (connect failure)"),
                       ("squeue", "slurm_load_jobs error: Unable to contact slurm controller "
                                  "(connect failure)"),
                       ("scontrol", "slurm_load_ctl_conf error: Unable to contact slurm "
                                    "controller (connect failure)"),
                       ("sinfo", "slurm_load_partitions: Unable to contact slurm controller "
                                 "(connect failure)")):
        if only is None or tool in only:
            (bin_ / tool).write_text(f"#!/bin/sh\necho '{line}' >&2\nexit 1\n")
            (bin_ / tool).chmod(0o755)
    env.mp.setenv("PATH", f"{bin_}:{without_slurm(os.environ['PATH'])}")


def without_slurm(path: str) -> str:
    """$PATH less the folders that hold one of Slurm's commands (a machine with Slurm installed)."""
    slurm = ("sbatch", "srun", "squeue", "scontrol", "sinfo", "sacct")
    return os.pathsep.join(d for d in path.split(os.pathsep)
                           if not any(os.access(os.path.join(d, t), os.X_OK) for t in slurm))


def read_only(env: Env) -> None:
    """A read-only results folder (root ignores permission bits, so the write is made to fail
    as a read-only file system fails it)."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(env.results))
    env.mp.setattr(tempfile, "TemporaryFile", refuse)


def broken_spec_row(env: Env) -> list[str]:
    spec = env.file("mine.yaml", "title: t\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\n"
                    "rows:\n  - {sa: {kk: 4}}\n")
    return env.run("--table", spec, "--profile", "smoke", "--dry-run")


def spec(env: Env, text: str | bytes) -> list[str]:
    return env.run("--table", env.file("spec.yaml", text), "--profile", "smoke", "--dry-run")


SPEC = "title: t\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\nrows: [vae]\n"


def no_cuda(env):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    return env.run(*ONE_RUN, "--device", "cuda")


def stop_run_on_full_disk(env: Env) -> list[str]:
    def full(task):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(task.checkpoint_path))
    env.mp.setattr(run_module, "train_and_evaluate", full)
    return env.run(*ONE_RUN, "--methods", "sa-k1")


def full_disk_on_tables(env: Env) -> list[str]:
    env.write_fails(errno.ENOSPC, after=100)
    return env.run(*ONE_RUN, "--collect")


# (id, setup(env) -> argv, exit code, a piece of the one error line)
CASES = [
    # command-line values
    ("no table", lambda e: [], 2, "--table is required"),
    ("option misspelt", lambda e: ["--table", "1", "--tabel", "1"], 2,
     "unrecognized arguments: --tabel 1 (reproduce.py --help lists the options)"),
    ("--jobs not a number", lambda e: ["--table", "1", "--jobs", "two"], 2,
     "argument --jobs: invalid int value: 'two'"),
    ("unknown launcher", lambda e: ["--table", "1", "--launcher", "slrum"], 2,
     "argument --launcher: invalid choice: 'slrum'"),
    ("unknown table", lambda e: ["--table", "9"], 2, "unknown table '9'; known tables: 1"),
    ("unknown profile", lambda e: ["--table", "1", "--profile", "huge"], 2, "unknown profile 'huge'"),
    ("unknown method", lambda e: ["--table", "1", "--methods", "vae,bogus"], 2,
     "unknown method 'bogus'"),
    ("unknown row id", lambda e: ["--table", "4", "--methods", "vlae-t3"], 2,
     "unknown method 'vlae-t3'"),
    ("--methods selects no row", lambda e: ["--table", "1", "--methods", "vlae"], 2,
     "--methods vlae: selects none of the rows of table1; its methods: vae, sa, iaf, hf, me, rme, "
     "gpvae"),
    ("--methods empty", lambda e: ["--table", "1", "--methods", ","], 2, "selects none of the rows"),
    ("dataset not in table", lambda e: ["--table", "1", "--datasets", "imagenet"], 2,
     "dataset 'imagenet' is not in table1"),
    ("--dims names none", lambda e: ["--table", "1", "--dims", ","], 2,
     "--dims: names none; those of table1: 10, 20, 50"),
    ("--datasets names none", lambda e: ["--table", "1", "--datasets", ","], 2,
     "--datasets: names none; those of table1: mnist, omniglot"),
    ("non-numeric dims", lambda e: ["--table", "1", "--dims", "ten"], 2,
     "--dims ten: expected comma-separated integers"),
    ("dims not in table", lambda e: ["--table", "1", "--dims", "10,7"], 2,
     "7 is not a latent size of this table"),
    ("unknown device", lambda e: ["--table", "1", "--device", "tpu"], 2,
     "--device tpu: not a torch device"),
    ("device not here", no_cuda, 2, "--device cuda: CUDA is not available"),
    ("jobs 0", lambda e: e.run(*ONE_RUN, "--jobs", "0"), 2, "--jobs must be >= 1"),
    ("threads 0", lambda e: e.run(*ONE_RUN, "--launcher", "local", "--threads", "0"), 2,
     "--threads must be >= 1"),
    ("splits beyond profile", lambda e: e.run(*ONE_RUN, "--splits", "9"), 2,
     "--splits must be between 1 and 2"),
    # profile files
    ("profile bad YAML", lambda e: ["--table", "1", "--profile", e.file("p.yaml", "epochs: [1\n")],
     2, "not valid YAML"),
    ("profile unknown key", lambda e: ["--table", "1", "--profile",
                                       e.file("p.yaml", PROFILE_KEYS + "bogus: 2\n")], 2,
     "unknown key 'bogus'"),
    ("profile wrong type", lambda e: e.profile("epochs", "two"), 2, "epochs"),
    ("profile not a mapping", lambda e: ["--table", "1", "--profile", e.file("p.yaml", "- a\n")],
     2, "expected a mapping"),
    ("profile missing key", lambda e: ["--table", "1", "--profile",
                                       e.file("p.yaml", "description: x\nepochs: 2\n")], 2,
     "missing key"),
    ("profile not UTF-8", lambda e: ["--table", "1", "--profile",
                                     e.file("p.yaml", b"description: caf\xe9\n")], 2,
     "not UTF-8 text (byte 0xe9 on line 1): save it as UTF-8"),
    ("profile is a folder", lambda e: ["--table", "1", "--profile", e.folder("d.yaml")], 2,
     "is a folder, not a YAML file"),
    *[(f"profile {key} {value}", lambda e, k=key, v=value: e.profile(k, v), 2,
       f"{key} must be >= 1") for key, value in (
        ("epochs", "0"), ("batch_size", "-1"), ("splits", "0"), ("restarts", "0"),
        ("iwae_k", "0"), ("eval_batch_size", "0"), ("patience", "0"), ("train_size", "0"),
        ("val_size", "-5"), ("test_size", "0"))],
    ("profile lr 0", lambda e: e.profile("lr", "0.0"), 2, "lr must be > 0"),
    # table specs
    ("spec unknown metric", lambda e: spec(e, SPEC.replace("test_iwae", "accuracy")), 2,
     "unknown metric 'accuracy'; known metrics: test_iwae, test_elbo, inference_ms"),
    ("spec not UTF-8", lambda e: spec(e, SPEC.encode().replace(b"title: t", b"title: \xff")), 2,
     "not UTF-8 text"),
    ("spec non-integer dims", lambda e: spec(e, SPEC.replace("[10]", "[ten]")), 2,
     "dims must be positive integers, got 'ten'"),
    ("spec no rows", lambda e: spec(e, SPEC.replace("[vae]", "[]")), 2,
     "rows must be a non-empty list"),
    ("spec missing", lambda e: ["--table", str(e.tmp / "nope.yaml")], 2, "does not exist"),
    ("spec is a folder", lambda e: ["--table", e.folder("mine.yaml")], 2,
     "mine.yaml is a folder, not a YAML file"),
    ("spec lists a row twice", lambda e: spec(e, SPEC.replace("[vae]", "[vae, vae]")), 2,
     "rows lists vae-default twice"),
    ("spec lists a dataset twice", lambda e: spec(e, SPEC.replace("[mnist]", "[mnist, mnist]")), 2,
     "datasets lists mnist twice"),
    ("spec row whose method has no plugin", lambda e: spec(e, SPEC.replace("[vae]", "[vae, vea]")),
     2, "row vea-default of spec names method 'vea', which has no plugin; known methods: "),
    ("row parameter the plugin does not take", broken_spec_row, 2,
     "method 'sa' takes no parameter 'kk'"),
    # plugins
    ("plugin from the environment fails to import",
     lambda e: e.mp.setenv("GPVAE_BENCH_PLUGINS", "no_such_plugin_module") or ["--table", "1"], 2,
     "cannot import plugin module 'no_such_plugin_module': ModuleNotFoundError"),
    # data
    ("data missing offline", lambda e: e.to(data=e.tmp / "nowhere").run(*ONE_RUN, "--methods", "sa"),
     2, "MNIST not found under"),
    ("MNIST flipped byte", lambda e: e.corrupt_mnist(flip(5000)), 2,
     "t10k-images-idx3-ubyte is corrupt: MD5"),
    ("MNIST truncated", lambda e: e.corrupt_mnist(lambda p: p.write_bytes(p.read_bytes()[:3000])),
     2, "t10k-images-idx3-ubyte is corrupt (truncated): 3000 bytes"),
    ("MNIST bad magic", lambda e: e.corrupt_mnist(flip(3)), 2,
     "is corrupt: magic number 2300, not 2051"),
    ("MNIST tiny files against the published checksums",
     lambda e: e.corrupt_mnist(lambda p: e.mp.delenv("GPVAE_BENCH_DATA_MD5SUMS")), 2,
     "train-images-idx3-ubyte is corrupt: MD5"),
    # the results folder
    ("results folder is a file", lambda e: e.to(results=e.file("f", "x")).run(*ONE_RUN), 1,
     "is a file, not a folder"),
    ("results folder under a file",
     lambda e: e.to(results=e.file("f", "x") + "/results").run(*ONE_RUN), 1,
     "/results: Not a directory: a file is in the way of a folder"),
    ("results folder read-only", lambda e: read_only(e) or e.run(*ONE_RUN, "--collect"), 1,
     "Read-only file system: choose a writable --results-dir"),
    ("disk full writing the tables", full_disk_on_tables, 1,
     "No space left on device: free some space"),
    ("disk full in a run", stop_run_on_full_disk, 1,
     ".ckpt: No space left on device: free some space"),
    # Slurm
    ("slurm: no sbatch", lambda e: e.mp.setenv("PATH", str(e.tmp)) or e.run(
        *ONE_RUN, "--methods", "sa-k1", "--launcher", "slurm", "--cluster",
        str(REPO / "slurm" / "local.yaml")), 2,
     "'sbatch' is not on PATH"),
    ("slurm: no srun", lambda e: fake_slurm(e, only=("sbatch",)) or e.run(
        *ONE_RUN, "--methods", "sa-k1", "--launcher", "slurm", "--cluster",
        str(REPO / "slurm" / "local.yaml")), 2,
     "'srun' is not on PATH"),
    ("slurm: controller down", lambda e: fake_slurm(e) or e.run(
        *ONE_RUN, "--methods", "sa-k1", "--launcher", "slurm", "--cluster",
        str(REPO / "slurm" / "local.yaml")), 1,
     "Unable to contact slurm controller"),
]

# what submitit writes for a submission before sbatch accepts it: gone once sbatch refused it
PENDING_SUBMISSION = re.compile(r"\.submission_file_[0-9a-f]{32}\.sh|[0-9a-f]{32}\.pkl")


@pytest.mark.parametrize("setup,code,needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(capsys, tmp_path, monkeypatch, tiny_mnist, finished, setup, code, needle):
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    before = snapshot(results)
    env = Env(tmp_path, tiny_mnist, results, monkeypatch)
    argv = setup(env)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's own errors (reproduce.py exits the same way)
        rc = exit_.code
    monkeypatch.undo()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert "usage:" not in err
    assert "Traceback" not in err
    assert rc == code and len(errors) == 1 and needle in errors[0], (rc, err)
    assert snapshot(results) == before  # no finished record touched
    assert not [p for p in results.rglob("*.tmp")], "a temp file was left behind"
    assert not [p for p in results.rglob("*") if PENDING_SUBMISSION.fullmatch(p.name)]


# ------------------------------------------------------------------ warned once, then carried on


def pending_checkpoint(env: Env) -> Path:
    """Where the checkpoint of the run the finished record's sweep has left (VAE split 1) goes."""
    [record] = (env.results / "runs").rglob("s0-r0.json")
    return record.with_name("s1-r0.ckpt")


def cut_short_checkpoint(env: Env) -> list[str]:
    path = pending_checkpoint(env)
    torch.save({"w": torch.zeros(1000)}, path)  # a real checkpoint archive...
    path.write_bytes(path.read_bytes()[:1500])  # ...cut short, as a killed copy leaves it
    env.kept = path.read_bytes()
    return env.run(*ONE_RUN, "--splits", "2")


def restarted_from_scratch(env: Env, out: str) -> None:
    """The run trained from its first epoch and is recorded ok (not failed: nothing left stuck for
    --retry-failed), its bad checkpoint kept beside it byte for byte."""
    ckpt = pending_checkpoint(env)
    record = json.loads(ckpt.with_suffix(".json").read_text())
    assert record["status"] == "ok" and record["metrics"]["resumed_from_epoch"] is None
    assert not ckpt.exists() and ckpt.with_name(ckpt.name + ".corrupt").read_bytes() == env.kept


class Planted:
    """Unpickled, it creates the file `marker`: a .ckpt planted to run code when a run resumes."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def planted_checkpoint(env: Env) -> list[str]:
    torch.save({"model": Planted(env.tmp / "code-ran"), "tag": "x"}, pending_checkpoint(env))
    env.kept = pending_checkpoint(env).read_bytes()
    return env.run(*ONE_RUN, "--splits", "2")


def no_code_ran(env: Env, out: str) -> None:
    assert not (env.tmp / "code-ran").exists()
    restarted_from_scratch(env, out)


def many_jobs(env: Env) -> list[str]:
    env.mp.setattr(os, "cpu_count", lambda: 2)  # the project's VM, whatever runs the test
    return env.run(*ONE_RUN, "--launcher", "local", "--jobs", "1000", "--methods", "vae,sa-k1",
                   "--splits", "2", "--device", "cpu", "--dry-run")


def shared_cores_estimated(env: Env, out: str) -> None:
    """The estimate runs the 3 pending runs at once on 2 cores, as the launcher will start them."""
    assert "3 at once (--jobs) sharing 2 cores" in out, out


# (id, setup(env) -> argv, exit code, a piece of the one warning line, check(env, stdout))
WARNED = [
    ("checkpoint cut short: set aside, the run restarted", cut_short_checkpoint, 0,
     "s1-r0.ckpt: unreadable (cut short or damaged", restarted_from_scratch),
    ("checkpoint that would run code: not loaded, set aside", planted_checkpoint, 0,
     "s1-r0.ckpt: it holds objects other than tensors, numbers and strings", no_code_ran),
    ("--jobs above the cores: runs share them", many_jobs, 0,
     "--jobs 1000: more runs at once than this machine's 2 CPU cores", shared_cores_estimated),
    ("--methods leaves out the row without a plugin",
     lambda e: spec(e, SPEC.replace("[vae]", "[vae, vea]")) + ["--methods", "vae"], 0,
     "row VEA: no plugin registered for method 'vea'", lambda e, out: None),
]


@pytest.mark.parametrize("setup,code,needle,check", [c[1:] for c in WARNED],
                         ids=[c[0] for c in WARNED])
def test_warned_once(capsys, tmp_path, monkeypatch, tiny_mnist, finished, setup, code, needle,
                     check):
    """Input that is not an error but must be said: one warning line, then the command carries on;
    no finished record touched."""
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    before = snapshot(results)
    env = Env(tmp_path, tiny_mnist, results, monkeypatch)
    argv = setup(env)
    capsys.readouterr()
    rc = main(argv)
    monkeypatch.undo()
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if needle in line]
    assert "Traceback" not in err and "error:" not in err
    assert rc == code and len(said) == 1, (rc, err)
    after = snapshot(results)
    assert {name: after.get(name) for name in before} == before  # no finished record touched
    check(env, out)


def test_nan_loss_is_recorded_and_exits_nonzero(capsys, tmp_path, mnist_root, monkeypatch):
    from methods.vae import VAE

    monkeypatch.setattr(VAE, "loss", lambda self, x: torch.tensor(float("nan"), requires_grad=True))
    rc, err = run_main(capsys, "--table", "1", "--profile", "smoke", "--datasets", "mnist",
                       "--dims", "10", "--methods", "vae", "--data-root", str(mnist_root),
                       "--results-dir", str(tmp_path), "--launcher", "debug", "-q")
    assert rc == 1
    failed = [line for line in err if line.startswith("failed:")]
    assert len(failed) == 2 and all("NonFiniteLoss" in line for line in failed)
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2  # recorded, not lost


def test_a_multi_line_error_is_one_line_in_the_record_and_the_listing(capsys, tmp_path, mnist_root,
                                                                     monkeypatch):
    from methods.vae import VAE

    def loss(self, x):  # as torch.distributions' argument validation words it
        raise ValueError("Expected parameter precision_matrix to satisfy the constraint "
                         "PositiveDefinite(), but found invalid values:\ntensor([[1.0, 2.0],\n [3.0, 4.0]])")

    monkeypatch.setattr(VAE, "loss", loss)
    rc = main(["--table", "1", "--profile", "smoke", "--datasets", "mnist", "--dims", "10",
               "--methods", "vae", "--splits", "1", "--data-root", str(mnist_root),
               "--results-dir", str(tmp_path), "--launcher", "debug", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "tensor(" not in err
    [failed] = [line for line in err.splitlines() if line.startswith("failed:")]
    assert "ValueError: Expected parameter precision_matrix" in failed and "invalid values:" in failed
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("*.json")]
    assert "\n" not in record["error"] and "tensor([[1.0, 2.0]" in record["traceback"]


def test_error_summary_cuts_long_messages():
    from benchmark.run import error_summary

    assert error_summary(RuntimeError("x" * 1000), limit=50) == "RuntimeError: " + "x" * 33 + "..."
    assert error_summary(KeyError()) == "KeyError"


def test_cli_help_and_list():
    out = subprocess.run([sys.executable, "reproduce.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    for option in ("--table", "--profile", "--data-root", "--launcher", "--jobs", "--force",
                   "--paired", "--list", "--dry-run", "--collect"):
        assert option in out
    listing = subprocess.run([sys.executable, "reproduce.py", "--list"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    for word in ("tables:", "methods:", "profiles:", "vae", "gpvae", "smoke", "quick", "paper"):
        assert word in listing


def test_a_checkpoint_on_a_full_disk_leaves_no_temp_file_and_says_where(tmp_path, monkeypatch):
    from benchmark.train import save_atomic  # the checkpoint writer training uses

    path = tmp_path / "s0-r0.ckpt"
    save_atomic(path, {"w": torch.zeros(3)})
    before = path.read_bytes()
    env = Env(tmp_path, tmp_path, tmp_path, monkeypatch)
    env.write_fails(errno.ENOSPC, after=200)  # torch.save writes more than this
    with pytest.raises(OSError) as info:
        save_atomic(path, {"w": torch.randn(10_000)})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0-r0.ckpt"]  # no .ckpt.*.tmp
    assert path.read_bytes() == before  # the last good checkpoint is still there


def test_a_record_path_that_is_a_folder_is_one_error_line_and_left_alone(capsys, tmp_path,
                                                                        tiny_mnist, finished):
    results = tmp_path / "results"
    shutil.copytree(finished, results)
    [record] = (results / "runs").rglob("*.json")
    folder = record.with_name("s1-r0.json")
    (folder / "inside").mkdir(parents=True)
    rc = main(ONE_RUN + ["--splits", "2", "--collect", "--data-root", str(tiny_mnist),
                         "--results-dir", str(results)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and "Traceback" not in err and len(errors) == 1, err
    assert f"{folder} is a folder where the record of run" in errors[0]
    assert (folder / "inside").is_dir()  # nothing moved
    before = {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json") if p.is_file()}
    rc = main(ONE_RUN + ["--splits", "2", "--data-root", str(tiny_mnist),  # a real run: the same
                         "--results-dir", str(results)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and (folder / "inside").is_dir(), err
    after = {p: p.stat().st_mtime_ns for p in (results / "runs").rglob("*.json") if p.is_file()}
    assert after == before  # the finished record untouched, nothing trained


BROKEN_PLUGIN = "import torch\nraise RuntimeError('boom: this plugin is broken')\n"


def test_a_plugin_in_methods_that_fails_to_import(tmp_path):
    """A copy of the methods package with one broken module: --list lists it as broken and the
    other methods; a run that needs it fails in one line; a run that does not, works."""
    shutil.copytree(REPO / "methods", tmp_path / "methods",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "methods" / "broken.py").write_text(BROKEN_PLUGIN)
    spec = tmp_path / "mine.yaml"
    spec.write_text("title: t\nmetric: test_iwae\ndatasets: [mnist]\ndims: [10]\n"
                    "rows: [vae, broken]\n")

    def cli(*args):
        code = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(REPO)!r}]; "
                "from benchmark.cli import main; sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    listing = cli("--list")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert ("broken: methods.broken failed to import (RuntimeError: boom: this plugin is broken)"
            in listing.stdout)
    assert "  vae: VAE = vae-default" in listing.stdout
    needs = cli("--table", str(spec), "--profile", "smoke", "--dry-run")
    errors = [line for line in needs.stderr.splitlines() if line.startswith("error:")]
    assert needs.returncode == 2 and "Traceback" not in needs.stderr and len(errors) == 1
    assert "needs method 'broken', which is not registered" in errors[0]
    assert "methods.broken (RuntimeError: boom: this plugin is broken)" in errors[0]
    fine = cli("--table", str(spec), "--methods", "vae", "--profile", "smoke", "--dry-run")
    assert fine.returncode == 0 and "1 to run" not in fine.stderr and "2 to run" in fine.stderr


def test_list_survives_a_broken_plugin_from_the_environment(monkeypatch, tmp_path, capsys):
    (tmp_path / "badplugin.py").write_text(BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GPVAE_BENCH_PLUGINS", "badplugin")
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "broken: badplugin failed to import (RuntimeError: boom" in out and "gpvae:" in out


# ------------------------------------------------------------------ reruns keep their promise


def test_reruns_keep_their_promise(capsys, tmp_path, monkeypatch, tiny_mnist):
    """Table 1 (MNIST and OMNIGLOT) with OMNIGLOT absent: the first run trains MNIST and skips
    OMNIGLOT; the identical rerun re-renders with a warning and exit 0; a run of another row keeps
    VAE's numbers in the table; --collect keeps the '(data missing)' reason."""
    monkeypatch.setattr(run_module, "train_and_evaluate", fake_train_and_evaluate)
    cmd = ["--table", "1", "--profile", "smoke", "--dims", "10", "--methods", "vae",
           "--launcher", "debug", "--data-root", str(tiny_mnist),  # not -q: "trained 2 runs" is said
           "--results-dir", str(tmp_path)]
    table = tmp_path / "tables" / "table1.md"

    def vae_row() -> str:
        return next(line for line in table.read_text().splitlines() if line.startswith("| VAE "))

    assert main(cmd) == 0
    first = capsys.readouterr().err
    assert "skipping omniglot" in first and "trained 2 runs" in first
    assert "-101.0" in vae_row() or "-100.5" in vae_row(), vae_row()
    mnist_vae = vae_row().split("|")[2]

    assert main(cmd) == 0  # identical rerun: nothing to train but the missing column
    err = capsys.readouterr().err
    assert "error:" not in err and "skipping omniglot" in err and "trained" not in err
    assert vae_row().split("|")[2] == mnist_vae and "not run (data missing)" in vae_row()

    assert main([*cmd, "--methods", "sa-k1"]) == 0  # another row only
    capsys.readouterr()
    sa_row = next(line for line in table.read_text().splitlines() if line.startswith("| SA(1) "))
    assert vae_row().split("|")[2] == mnist_vae, "a filtered run hid VAE's results"
    assert sa_row.split("|")[2].strip() not in ("not run", "")

    assert main([*cmd, "--collect"]) == 0
    capsys.readouterr()
    assert vae_row().split("|")[2] == mnist_vae and "not run (data missing)" in vae_row()
    assert "not run (data missing)" in sa_row


def test_a_table_whose_only_dataset_is_missing_is_still_an_error(capsys, tmp_path):
    rc = main(["--table", "1", "--profile", "smoke", "--datasets", "omniglot", "--dims", "10",
               "--methods", "vae", "--launcher", "debug", "-q", "--data-root", str(tmp_path),
               "--results-dir", str(tmp_path / "results")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "chardata.mat" in errors[0]
