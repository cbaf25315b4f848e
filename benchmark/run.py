"""run_one: load a split -> build the method -> train -> evaluate -> write the record.

This is the only function the launchers execute, in-process, in a local subprocess or as a Slurm
task, so every path produces the same record for the same task.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from methods import NetConfig, get_method
from methods.likelihoods import make_likelihood

from . import datasets
from .evaluate import evaluate, mean_image_log_likelihood
from .keys import RunKey
from .profiles import Profile
from .records import write_json_atomic
from .specs import DatasetSettings
from .train import train

log = logging.getLogger("gpvae_bench")
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunTask:
    """Everything one run needs; small and picklable, so it can travel to a Slurm node."""

    key: RunKey
    params: tuple[tuple[str, object], ...]
    profile: Profile
    settings: DatasetSettings
    data_root: str
    results_dir: str
    device: str = "cpu"
    threads: int | None = None
    download: bool = False

    @property
    def record_path(self) -> Path:
        return self.key.record_path(Path(self.results_dir))

    @property
    def data_name(self) -> str:
        """The loader in benchmark.datasets: the column's dataset unless its settings name one."""
        return self.settings.data or self.key.dataset

    @property
    def checkpoint_path(self) -> Path:
        return self.record_path.with_suffix(".ckpt")

    def config(self) -> dict:
        """What determines the result; its hash tells a stale record from a current one."""
        return {
            "key": dataclasses.asdict(self.key),
            "params": dict(self.params),
            # how many splits/restarts a sweep has does not change any one run's result
            "profile": {k: v for k, v in self.profile.as_dict().items()
                        if k not in ("description", "splits", "restarts")},
            "settings": self.settings.as_config(),
        }

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:16]


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
    except RuntimeError as err:  # provenance must never lose the run's record
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


def _first(t: torch.Tensor, n: int | None) -> torch.Tensor:
    return t if n is None else t[:n]


def train_and_evaluate(task: RunTask) -> dict:
    key, prof = task.key, task.profile
    device = torch.device(task.device)
    data = _load(task.data_name, task.data_root, task.download)
    train_idx, val_idx = split_indices(len(data.train), data.val_fraction, key.split_seed)
    train_images = data.train[_first(train_idx, prof.train_size)]
    val_images = data.train[_first(val_idx, prof.val_size)]
    test_images = _first(data.test, prof.test_size)

    def to_input(images: torch.Tensor) -> torch.Tensor:
        return data.to_float(images).to(device)

    net = NetConfig(data.image_shape, task.settings.num_conv, task.settings.hidden,
                    task.settings.network)
    likelihood = make_likelihood(data.likelihood, task.settings.sigma_x)
    torch.manual_seed(key.init_seed)
    model = get_method(key.method).build(
        dict(task.params), net=net, latent_dim=key.dim, likelihood=likelihood,
        num_train=len(train_images),
    ).to(device)

    start = time.perf_counter()
    fit = train(model, train_images, val_images, to_input=to_input, epochs=prof.epochs,
                batch_size=prof.batch_size, lr=prof.lr, eval_batch_size=prof.eval_batch_size,
                patience=prof.patience, seed=key.init_seed, checkpoint=task.checkpoint_path,
                checkpoint_tag=task.config_hash())
    train_seconds = time.perf_counter() - start

    torch.manual_seed(key.init_seed + 1)
    ev = dict(k=prof.iwae_k, batch_size=prof.eval_batch_size, to_input=to_input)
    val = evaluate(model, val_images, **ev)
    test = evaluate(model, test_images, **ev)
    train_mean = to_input(train_images).mean(0)
    floor = mean_image_log_likelihood(likelihood.to(device), train_mean, test_images,
                                      prof.eval_batch_size, to_input)
    return {
        "metrics": {
            "val_iwae": val["iwae"], "val_elbo": val["elbo"],
            "test_iwae": test["iwae"], "test_elbo": test["elbo"],
            "mean_image_floor": floor,
            "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - start
            - train_seconds,
            **{k: v for k, v in fit.items() if k != "history"},
        },
        "history": fit["history"],
        "sizes": {"train": len(train_images), "val": len(val_images), "test": len(test_images)},
    }


def _job_log_file() -> str | None:
    """The submitit log this run writes to, when it runs as a submitit job."""
    import submitit

    try:
        env = submitit.JobEnvironment()
        return str(env.paths.stdout) if env.activated() else None
    except (RuntimeError, KeyError):  # the debug executor has no log files of its own
        return None


def _ensure_logging() -> None:
    """In a job subprocess nobody configured logging: send the per-epoch lines to stdout."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def run_one(task: RunTask) -> dict:
    """Run one task and write its record; a failure is recorded (status 'failed'), not raised."""
    _ensure_logging()
    if task.threads:
        torch.set_num_threads(task.threads)
    key = task.key
    record = {"key": dataclasses.asdict(key), "config": task.config(),
              "config_hash": task.config_hash(), "seeds": {"split": key.split_seed,
                                                           "init": key.init_seed}}
    start = time.perf_counter()
    log.info("run %s", key)
    try:
        record.update(train_and_evaluate(task), status="ok")
    except Exception as err:  # recorded, so one failing run never stops the others
        log.error("run %s failed: %s: %s", key, type(err).__name__, err)
        record.update(status="failed", error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc()[-4000:])
    record["wall_seconds"] = time.perf_counter() - start
    record["provenance"] = _provenance(torch.device(task.device))
    record["log_file"] = _job_log_file()
    write_json_atomic(task.record_path, record)
    if record["status"] == "ok":
        task.checkpoint_path.unlink(missing_ok=True)
    return record
