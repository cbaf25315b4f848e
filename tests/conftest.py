import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """A tiny MNIST in the official idx format, unpacked as torchvision's raw layout holds it."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        # blurry strokes rather than pure noise, so a VAE has structure to learn
        images = np.zeros((n, 28, 28), np.uint8)
        for img in images:
            r, c = rng.integers(6, 22, size=2)
            img[r - 5 : r + 5, c - 2 : c + 2] = 255
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """Real MNIST from ../shared/data when it is there, else a tiny idx-format stand-in, whose
    checksums $GPVAE_BENCH_DATA_MD5SUMS then lists (inherited by job subprocesses) so the loader,
    which checks the published MD5s, accepts it."""
    if (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        yield SHARED_DATA
        return
    root = write_idx_mnist(tmp_path_factory.mktemp("mnist"))
    raw = root / "MNIST" / "raw"
    listing = root / "MD5SUMS"
    listing.write_text("".join(
        f"{hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()}  {p.name}\n"
        for p in sorted(raw.iterdir())))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPVAE_BENCH_DATA_MD5SUMS", str(listing))
        yield root


@pytest.fixture(scope="session")
def real_mnist_root() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip(f"real MNIST not found under {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Single-threaded torch in the test process: on 2 shared cores, intra-op threads of concurrent
    processes spin against each other (tiny training loops ran 100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def reference_machine_speed(monkeypatch):
    """Estimates and budget plans made in the test process are priced at the reference VM's speed
    (benchmark/estimate.py's fallback table), whatever CPU runs the tests: the speed probe
    (benchmark/speed_probe.py) reports the table's own VAE figure, scale 1. Tests of the probe's
    effect set it themselves; tests/test_speed_probe.py times the real one."""
    from benchmark import estimate, speed_probe

    monkeypatch.setattr(speed_probe, "vae_ms_per_image",
                        lambda: estimate.FALLBACK_TRAIN_MS["vae"])


def pytest_terminal_summary(terminalreporter):
    """The Slurm tests' job ids and sacct states (tests/slurm_helpers.log), passed or not."""
    from slurm_helpers import LOGGED

    if LOGGED:
        terminalreporter.section("slurm jobs")
        for line in LOGGED:
            terminalreporter.write_line(line)
