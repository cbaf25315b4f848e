"""How fast this CPU trains, measured in a few seconds, for a machine that has no records yet.

benchmark.estimate prices CPU runs from a table of per-image costs measured on one 2-core VM and
scales it to another machine by that machine's own records (estimate.machine_scale). From an empty
results folder there are none, and a budget planned on the reference VM's speed overruns on a
slower CPU (a 45-minute plan took 85 minutes on a CPU 2.1x slower: docs/claims.md). This module
times the reference row itself: the VAE on MNIST's network (specs/datasets.yaml) at d=10, batch 64,
one thread, fused Adam, on random images in [0, 1], PROBE_STEPS steps after PROBE_WARMUP, and
returns the median step's ms per image against estimate.FALLBACK_TRAIN_MS["vae"] (which also holds
the epoch's validation share, so the ratio is a step-for-step one only to within that share).
On the 2-core AMD VM of December 2026 the probe said x2.55 (three readings 2.51-2.55 on a quiet
machine; 12 steps once read 3.02) where that machine's records said x2.1-2.3: the probe errs on the
slow side, so a plan it prices tends to finish early rather than late.

Our choice, not the paper's: the row and the step counts. The probe runs once per process, only
for a CPU estimate that has no record of this machine to scale by: a `--dry-run`'s estimate, the
progress bar's, and `--claims --budget`'s plan; each says "scaled xS to this machine by N timed VAE
steps". The tests pin it to the reference VM's speed (tests/conftest.py), so their plans and
estimates do not depend on the CPU that runs them.
"""

from __future__ import annotations

import functools
import statistics
import time

PROBE_STEPS = 24
PROBE_WARMUP = 8
PROBE_BATCH = 64
PROBE_DIM = 10
PROBE_DATASET = "mnist"


@functools.lru_cache(maxsize=1)
def vae_ms_per_image() -> float:
    """The median ms per training image of a VAE step on one thread of this CPU (module docstring)."""
    import torch

    from .factory import build_model
    from .specs import load_dataset_settings
    from .train import make_optimizer

    threads = torch.get_num_threads()
    flushed = torch.set_flush_denormal(True)  # as training runs
    torch.set_num_threads(1)
    rng_state = torch.get_rng_state()
    try:
        settings = load_dataset_settings(PROBE_DATASET)
        shape = (1, 28, 28)  # MNIST
        model, _ = build_model("vae", {}, settings=settings, image_shape=shape,
                               likelihood="gaussian", latent_dim=PROBE_DIM,
                               num_train=50000, seed=0)
        model.train()
        opt = make_optimizer(model, 1e-3)
        x = torch.rand((PROBE_BATCH, *shape), generator=torch.Generator().manual_seed(0))
        times = []
        for i in range(PROBE_WARMUP + PROBE_STEPS):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model.loss(x).backward()
            opt.step()
            if i >= PROBE_WARMUP:
                times.append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(rng_state)
        torch.set_num_threads(threads)
        if not flushed:
            torch.set_flush_denormal(False)
    return 1e3 * statistics.median(times) / PROBE_BATCH
