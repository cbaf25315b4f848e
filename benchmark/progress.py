"""The console while runs train: a bar over the sweep's estimated work with an ETA, and each run's
log path as it starts. The launcher (benchmark.launch) calls `started` and `finished`.

The bar counts runs, but fills by each run's estimated seconds (benchmark.estimate), so a finished
GPVAE run moves it further than a VAE run. Until a run finishes the remaining time is the
estimate; after that it is the estimate of the runs left scaled by how long the finished ones
really took against their estimates (tqdm's rate), i.e. measured on this machine in this sweep.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

from .estimate import duration

log = logging.getLogger("gpvae_bench")


class RunProgress:
    def __init__(self, tasks, estimates: dict | None = None, *, workers: int = 1,
                 quiet: bool = False):
        estimates = estimates or {}
        known = [s for s in estimates.values() if s]
        default = sum(known) / len(known) if known else 1.0  # a run without one: an average run
        self.weight = {t.key: estimates.get(t.key) or default for t in tasks}
        self.total = len(tasks)
        self.done = 0
        self.quiet = quiet
        self.start = time.perf_counter()
        self.estimated = sum(self.weight.values()) / max(1, workers) if known else None
        self.bar = tqdm(total=sum(self.weight.values()), disable=quiet or not tasks,
                        file=sys.stderr, bar_format="{desc} |{bar}| {percentage:3.0f}% "
                        "[{elapsed}<{remaining}]{postfix}", desc=f"runs 0/{len(tasks)}")
        if self.estimated is not None:
            self.bar.set_postfix_str(f"estimate {duration(self.estimated)} (--dry-run says how), "
                                     "refined as runs finish")

    def started(self, task, log_file=None) -> None:
        """A run begins; where its log goes (None: this process's console, --launcher debug)."""
        where = f": log {log_file}" if log_file else ""
        log.info("start %s%s", task.key, where)

    def finished(self, tasks) -> None:
        self.done += len(tasks)
        self.bar.set_description_str(f"runs {self.done}/{self.total}", refresh=False)
        self.bar.set_postfix_str("ETA from the runs finished so far", refresh=False)
        work = sum(self.weight.get(t.key, 0.0) for t in tasks)
        self.bar.update(min(work, self.bar.total - self.bar.n))  # float sums: never past the end

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
