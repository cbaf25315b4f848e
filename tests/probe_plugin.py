"""A method plugin for the harness's own tests, loaded through $GPVAE_BENCH_PLUGINS=probe_plugin
(with tests/ on PYTHONPATH), so that Slurm and local job subprocesses load it too.

`probe` is the VAE plus two knobs a test spec sets per row:
- fail: 1 -> raises at the start of epoch 2 (after one checkpoint) while the file named by
  $GPVAE_TEST_FAIL_FILE exists; delete the file and the same run succeeds on --retry-failed;
- epoch_sleep: seconds slept at the start of each epoch, so a run lasts long enough to be
  requeued mid-training; only until it is requeued (while $SLURM_RESTART_COUNT is unset or 0), so
  the resumed run finishes quickly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from methods.registry import register
from methods.vae import VAE

FAIL_FILE_ENV = "GPVAE_TEST_FAIL_FILE"


class ProbeFailure(RuntimeError):
    pass


@register("probe", label="Probe")
class Probe(VAE):
    def __init__(self, net, latent_dim, likelihood, num_train, fail: int = 0, epoch_sleep: float = 0.0):
        super().__init__(net, latent_dim, likelihood, num_train)
        self.fail, self.epoch_sleep = fail, epoch_sleep

    def on_epoch_start(self, epoch: int, num_epochs: int) -> None:
        fail_file = os.environ.get(FAIL_FILE_ENV)
        if self.fail and epoch >= 1 and fail_file and Path(fail_file).is_file():
            raise ProbeFailure(f"failing on purpose at epoch {epoch + 1} ({fail_file} exists)")
        if int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0:
            time.sleep(self.epoch_sleep)
