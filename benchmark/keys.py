"""RunKey names one training run; its fields give the seeds (and, through benchmark.store, the
record's path)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def stable_seed(*parts) -> int:
    """A seed from a tuple of values that is the same in every process and on every machine."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True, order=True)
class RunKey:
    profile: str
    table: str
    dataset: str
    dim: int
    method: str
    variant: str
    split: int
    restart: int

    @property
    def split_seed(self) -> int:
        """Depends on (dataset, split) only: every method and dim sees the same validation split."""
        return stable_seed("split", self.dataset, self.split)

    @property
    def init_seed(self) -> int:
        """Depends on (split, restart) only: restarts differ only in initialisation."""
        return stable_seed("init", self.split, self.restart)

    @property
    def eval_seed(self) -> int:
        """Seeds the evaluation's Monte Carlo draws (IWAE, ELBO) after training."""
        return self.init_seed + 1

    def __str__(self) -> str:
        return (f"{self.table}/{self.dataset}/d{self.dim}/{self.method}-{self.variant}"
                f"/s{self.split}-r{self.restart}")
