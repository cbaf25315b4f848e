"""Datasets through their official files and loaders (torchvision conventions: root / download).

`load_dataset(name, root, download=False)` returns an `ImageData` holding the official training
and test images as compact tensors (uint8 where the source is 8-bit), with the scale that maps
them to floats in [0, 1]. Offline and missing, a loader raises `DatasetMissing` whose message is one
line naming the files and where they go.

Layout under the data root (ROOT) and how each split is defined (paper section 5: the official
train/test splits with 10% of the training set held out for validation, except CelebA):

- mnist: ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (torchvision.MNIST).
  60000 train / 10000 test, uint8 (N,1,28,28), gaussian, val_fraction 0.1.
- binarized_mnist: ROOT/binarized_mnist/binarized_mnist_{train,valid,test}.amat (Larochelle &
  Murray's static binarization; text, 784 space-separated 0/1 per line). `train` is the official
  train (50000) followed by the official valid (10000) set, as IWAE does, with val_fraction 1/6:
  each split holds out 10000 images (the official valid size) at random, so train/val sizes
  match the official 50000/10000 while the validation set varies with the split seed like for
  the other datasets. `train[:50000]` / `train[50000:]` are the official train / valid files.
  uint8 {0,1} (N,1,28,28), bernoulli. Published MD5s are checked every load.
- omniglot: ROOT/omniglot/chardata.mat (Burda et al.'s 28x28 OMNIGLOT from the IWAE repository;
  `data` (784, 24345) and `testdata` (784, 8070), floats in [0,1]). Each column is one image
  stored column-major (MATLAB): the image is `column.reshape(28, 28, order="F")`, which is what
  IWAE's `data.reshape((-1, 28, 28)).reshape((-1, 784), order='F')` produces before its flat
  row-major use. float32 (N,1,28,28), gaussian (real-valued, paper Table 1), val_fraction 0.1.
  The file's git blob id is checked every load.
- svhn: ROOT/svhn/{train,test}_32x32.mat (torchvision.SVHN, root=ROOT/svhn). 73257 train /
  26032 test (the "extra" set is not used), uint8 (N,3,32,32), gaussian, val_fraction 0.1.
- cifar10: ROOT/cifar-10-batches-py/ (torchvision.CIFAR10). 50000 / 10000, uint8 (N,3,32,32),
  gaussian, val_fraction 0.1.
- celeba: ROOT/celeba/ (torchvision.CelebA: img_align_celeba/*.jpg plus the five list files).
  Faces are the aligned 178x218 images center-cropped to 148x148, then resized to 64x64
  (bilinear, antialiased: torchvision CenterCrop(148) + Resize(64)). The paper's random 80/10/10
  split: a fixed permutation (numpy RandomState(CELEBA_SPLIT_SEED), stable across numpy versions)
  of all images in list_eval_partition.txt order puts round(10%) in `test`; `train` is the rest
  (90%) with val_fraction 1/9, so each split holds out 10% of all images for validation and
  trains on 80%. The official partition is not used. uint8 (N,3,64,64), gaussian.
  Decoding 202599 JPEGs takes minutes, so the decoded images are cached (see `_celeba`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .lazy import lazy_module

torch = lazy_module("torch")  # imported when a dataset is loaded: planning and --help need none

log = logging.getLogger("gpvae_bench")


class DatasetMissing(InputError, FileNotFoundError):
    """The dataset's files are not under the data root (and were not, or could not be, fetched)."""


class DatasetCorrupt(DatasetMissing):
    """A dataset file is there but unusable: its checksum differs from the published one, or it is
    truncated or not in its format. Handled like a missing dataset; the message says corrupt."""


@dataclass(frozen=True)
class ImageData:
    name: str
    train: torch.Tensor  # (N, C, H, W): the training pool (validation is held out later)
    test: torch.Tensor  # (M, C, H, W): the test set
    likelihood: str  # "gaussian" for real-valued pixels, "bernoulli" for binary ones
    scale: float = 1.0  # multiply the stored values by this to get floats in [0, 1]
    val_fraction: float = 0.1  # share of `train` each split holds out for validation

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale


def _missing(message: str) -> DatasetMissing:
    """A DatasetMissing whose message is a single line (nested errors may span several)."""
    return DatasetMissing(re.sub(r"\s*\n\s*", " ", message.strip()))


# errors torchvision's loaders and download helpers raise for absent, corrupt or unfetchable files
_FETCH_ERRORS = (RuntimeError, OSError)


def _or_download(err: Exception, download: bool) -> str:
    """How a DatasetMissing message ends: the hint to pass --download, or why --download failed
    (torchvision's offline 'not found, use download=True' adds nothing, so it is left out)."""
    return f" (--download failed: {type(err).__name__}: {err})" if download else (
        ", or pass --download to fetch them")


MNIST_IMAGES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
# torchvision.datasets.MNIST.resources: the MD5s of the published .gz files
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# the same files unpacked (what torchvision leaves in MNIST/raw; widely pinned values, see
# shared/data/README.md)
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's first mirror
CHECKSUMS_ENV = "GPVAE_BENCH_DATA_MD5SUMS"
_IDX_IMAGES_MAGIC = 2051  # big-endian: 0x0000 (zeros), 0x08 (uint8), 0x03 (three dimensions)


def _extra_md5s(name: str) -> set[str]:
    """MD5s accepted for the file `name` besides the published one: those listed for it in the
    file named by $GPVAE_BENCH_DATA_MD5SUMS (`md5sum` format; a test stand-in or a copy of one's
    own). The variable is unset in normal use: then only the published checksums pass."""
    listing = os.environ.get(CHECKSUMS_ENV)
    if not listing:
        return set()
    try:
        lines = Path(listing).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetMissing(f"${CHECKSUMS_ENV}={listing}: cannot read it ({err})") from None
    return {parts[0].lower() for parts in map(str.split, lines)
            if len(parts) == 2 and Path(parts[1].lstrip("*")).name == name}


def _check_md5(path: Path, raw: bytes, published: str, fix: str) -> None:
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if md5 != published and md5 not in _extra_md5s(path.name):
        raise DatasetCorrupt(f"{path} is corrupt: MD5 {md5}, not the published {published}: {fix}")


def parse_idx_images(raw: bytes, path: Path | str, fix: str = "") -> np.ndarray:
    """(N, 28, 28) uint8 from an idx3-ubyte images file (MNIST's format: big-endian header
    magic 2051, N, 28, 28, then N*784 pixels); anything else is DatasetCorrupt."""
    fix = f": {fix}" if fix else ""
    if len(raw) < 16:
        raise DatasetCorrupt(f"{path} is corrupt: {len(raw)} bytes, shorter than the 16-byte idx "
                             f"header{fix}")
    magic, n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    if magic != _IDX_IMAGES_MAGIC:
        raise DatasetCorrupt(f"{path} is corrupt: magic number {magic}, not {_IDX_IMAGES_MAGIC} "
                             f"(not an idx3-ubyte images file){fix}")
    if (rows, cols) != (28, 28):
        raise DatasetCorrupt(f"{path} is corrupt: images of {rows}x{cols}, not 28x28{fix}")
    if len(raw) != 16 + n * 784:
        state = "truncated" if len(raw) < 16 + n * 784 else "longer than its header says"
        raise DatasetCorrupt(f"{path} is corrupt ({state}): {len(raw)} bytes, but its header "
                             f"announces {n} images ({16 + n * 784} bytes){fix}")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28)


def _read_mnist_images(raw_dir: Path, name: str) -> np.ndarray | None:
    """The images of ROOT/MNIST/raw/`name` (or `name`.gz), checked; None if neither file is there."""
    path, gz = raw_dir / name, raw_dir / f"{name}.gz"
    fix = f"replace it with the original from {MNIST_URL} (or delete it and pass --download)"
    if path.is_file():
        raw = path.read_bytes()
        images = parse_idx_images(raw, path, fix)
        _check_md5(path, raw, MNIST_MD5[name], fix)
        return images
    if gz.is_file():
        import gzip
        import zlib

        packed = gz.read_bytes()
        _check_md5(gz, packed, MNIST_GZ_MD5[gz.name], fix)
        try:
            raw = gzip.decompress(packed)
        except (OSError, EOFError, zlib.error) as err:
            raise DatasetCorrupt(f"{gz} is corrupt ({err}): {fix}") from None
        return parse_idx_images(raw, gz, fix)
    return None


def _mnist(root: Path, download: bool) -> ImageData:
    """MNIST's idx files, read here (torchvision only downloads them): each is checked against its
    published MD5 (the unpacked file's, or torchvision's for a .gz), and a truncated file or one
    with a wrong header is DatasetCorrupt. Only the images are used (the labels are not)."""
    raw_dir = root / "MNIST" / "raw"
    absent = [n for n in MNIST_IMAGES.values()
              if not (raw_dir / n).is_file() and not (raw_dir / f"{n}.gz").is_file()]
    if absent and download:
        from torchvision.datasets import MNIST

        try:
            for train in (True, False):
                MNIST(str(root), train=train, download=True)
        except _FETCH_ERRORS as err:
            raise _missing(
                f"MNIST not found under {raw_dir} and the download failed "
                f"({type(err).__name__}: {err}): put {', '.join(MNIST_FILES)} (or their .gz) there"
            ) from None
    images = {split: _read_mnist_images(raw_dir, name) for split, name in MNIST_IMAGES.items()}
    if any(a is None for a in images.values()):
        missing = [name for split, name in MNIST_IMAGES.items() if images[split] is None]
        raise _missing(
            f"MNIST not found under {raw_dir} (missing {', '.join(missing)}): put "
            f"{', '.join(MNIST_FILES)} (or their .gz, from {MNIST_URL}) there, or pass --download "
            "to fetch them"
        )
    train, test = (torch.from_numpy(images[s].copy()).unsqueeze(1) for s in ("train", "test"))
    return ImageData("mnist", train, test, likelihood="gaussian", scale=1 / 255)


# ---------------------------------------------------------------------------- binarized MNIST

BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
# published checksums (tensorflow/datasets url_checksums/binarized_mnist.txt gives the SHA256s;
# the MD5s are those of the same bytes, see shared/data/README.md)
BINARIZED_MNIST_MD5 = {
    "train": "db28b1a6ae0fe70cbd3da91acf46e477",
    "valid": "bf37822a04e94123630de6a7dfd9c9ef",
    "test": "14e41ae11040adba6ab8cb291eda0dd8",
}
_AMAT_LINE = 784 * 2  # "0 1 0 ... 1\n": one digit and one separator per pixel


def parse_amat(raw: bytes) -> np.ndarray:
    """(N, 784) uint8 {0,1} from the text of a binarized MNIST .amat file.

    The official files are exactly 1568 bytes a line (784 digits each followed by a space, the
    last by a newline), so the digits are every other byte: no text parsing needed. Anything
    else (CRLF line ends, extra spaces) goes through a slower token parser.
    """
    buf = np.frombuffer(raw, np.uint8)
    if buf.size and buf.size % _AMAT_LINE == 0:
        rows = buf.reshape(-1, _AMAT_LINE)
        digits, seps = rows[:, 0::2] - ord("0"), rows[:, 1::2]
        if (
            (digits <= 1).all()
            and (seps[:, :-1] == ord(" ")).all()
            and (seps[:, -1] == ord("\n")).all()
        ):
            return digits.copy()
    lines = [line.split() for line in raw.splitlines() if line.strip()]
    bad = [i for i, tokens in enumerate(lines) if len(tokens) != 784]
    if bad or not lines:
        where = f"line {bad[0] + 1} has {len(lines[bad[0]])} values" if bad else "no lines"
        raise ValueError(f"not a binarized MNIST .amat file (784 values a line): {where}")
    tokens = [t for tokens in lines for t in tokens]
    if not set(tokens) <= {b"0", b"1"}:
        raise ValueError("not a binarized MNIST .amat file: values other than 0 and 1")
    return (np.frombuffer(b"".join(tokens), np.uint8) - ord("0")).reshape(len(lines), 784)


def _binarized_mnist(root: Path, download: bool) -> ImageData:
    folder = root / "binarized_mnist"
    files = {split: folder / f"binarized_mnist_{split}.amat" for split in BINARIZED_MNIST_MD5}
    names = ", ".join(p.name for p in files.values())
    if download:
        from torchvision.datasets.utils import download_url

        try:
            for split, path in files.items():
                download_url(BINARIZED_MNIST_URL + path.name, str(folder), path.name,
                             BINARIZED_MNIST_MD5[split])
        except _FETCH_ERRORS as err:
            raise _missing(
                f"binarized MNIST not found under {folder} and the download from "
                f"{BINARIZED_MNIST_URL} failed ({type(err).__name__}: {err}): put {names} there"
            ) from None
    absent = [p.name for p in files.values() if not p.is_file()]
    if absent:
        raise _missing(
            f"binarized MNIST not found under {folder} (missing {', '.join(absent)}): put {names} "
            f"(Larochelle's static binarization, {BINARIZED_MNIST_URL}) there, or pass --download "
            "to fetch them"
        )
    arrays = {}
    for split, path in files.items():
        raw = path.read_bytes()
        md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        if md5 != BINARIZED_MNIST_MD5[split]:
            raise DatasetCorrupt(
                f"{path} is corrupt: MD5 {md5}, not the published {BINARIZED_MNIST_MD5[split]}: replace "
                f"it with the original from {BINARIZED_MNIST_URL} (or delete it and pass "
                "--download)"
            )
        try:
            arrays[split] = parse_amat(raw)
        except ValueError as err:
            raise DatasetCorrupt(f"{path} is corrupt: {err}") from None
    train = np.concatenate([arrays["train"], arrays["valid"]])
    n_valid = len(arrays["valid"])

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).reshape(-1, 1, 28, 28)

    return ImageData("binarized_mnist", images(train), images(arrays["test"]),
                     likelihood="bernoulli", scale=1.0, val_fraction=n_valid / len(train))


# ---------------------------------------------------------------------------- OMNIGLOT

OMNIGLOT_URL = "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat"
OMNIGLOT_BLOB = "016a3536ffe5e1d38e42563a18d7a78bfaf643ec"  # yburda/iwae @78a6075 chardata.mat


def git_blob_id(path: Path) -> str:
    """What `git hash-object path` prints: sha1 of b"blob <size>\\0" + content."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _omniglot(root: Path, download: bool) -> ImageData:
    import scipy.io

    folder = root / "omniglot"
    path = folder / "chardata.mat"
    if download and not (path.is_file() and git_blob_id(path) == OMNIGLOT_BLOB):
        from torchvision.datasets.utils import download_url

        part = path.with_name(path.name + ".part")
        try:
            download_url(OMNIGLOT_URL, str(folder), part.name)
        except _FETCH_ERRORS as err:
            part.unlink(missing_ok=True)
            raise _missing(
                f"OMNIGLOT not found under {folder} and the download from {OMNIGLOT_URL} failed "
                f"({type(err).__name__}: {err}): put chardata.mat there"
            ) from None
        blob = git_blob_id(part)
        if blob != OMNIGLOT_BLOB:
            part.unlink()
            raise _missing(f"the download from {OMNIGLOT_URL} has git blob id {blob}, not "
                           f"{OMNIGLOT_BLOB}: put the IWAE chardata.mat under {folder} by hand")
        os.replace(part, path)
    if not path.is_file():
        raise _missing(
            f"OMNIGLOT not found under {folder}: put chardata.mat (the 28x28 OMNIGLOT of the IWAE "
            f"repository, {OMNIGLOT_URL}) there, or pass --download to fetch it"
        )
    blob = git_blob_id(path)
    if blob != OMNIGLOT_BLOB:
        raise DatasetCorrupt(
            f"{path} is corrupt: git blob id {blob}, not {OMNIGLOT_BLOB} (IWAE's chardata.mat): replace it "
            f"with the original from {OMNIGLOT_URL} (or delete it and pass --download)"
        )
    mat = scipy.io.loadmat(str(path), variable_names=["data", "testdata"])

    def images(key: str) -> torch.Tensor:
        a = mat.get(key)
        if a is None or a.ndim != 2 or a.shape[0] != 784:
            got = "absent" if a is None else f"shape {a.shape}"
            raise DatasetCorrupt(f"{path} is corrupt: '{key}' should be a (784, N) array, got {got}")
        # each column is one image in column-major (MATLAB) order; (N, 28, 28) upright images
        a = np.ascontiguousarray(a.T.reshape(-1, 28, 28).transpose(0, 2, 1), dtype=np.float32)
        if a.size and not (a.min() >= 0 and a.max() <= 1):
            raise DatasetCorrupt(f"{path} is corrupt: '{key}' has values outside [0, 1]")
        return torch.from_numpy(a).unsqueeze(1)

    return ImageData("omniglot", images("data"), images("testdata"), likelihood="gaussian",
                     scale=1.0)


# ---------------------------------------------------------------------------- SVHN, CIFAR-10


def _svhn(root: Path, download: bool) -> ImageData:
    from torchvision.datasets import SVHN

    folder = root / "svhn"
    try:
        splits = [SVHN(str(folder), split=s, download=download) for s in ("train", "test")]
    except _FETCH_ERRORS as err:
        raise _missing(
            f"SVHN not found or corrupted under {folder}: put train_32x32.mat and test_32x32.mat "
            "(cropped digits, http://ufldl.stanford.edu/housenumbers/) there"
            f"{_or_download(err, download)}"
        ) from None
    # torchvision gives data as (N, 3, 32, 32) uint8 (transposed from the file's (32, 32, 3, N))
    train, test = (torch.from_numpy(np.ascontiguousarray(s.data)) for s in splits)
    return ImageData("svhn", train, test, likelihood="gaussian", scale=1 / 255)


def _cifar10(root: Path, download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    try:
        splits = [CIFAR10(str(root), train=t, download=download) for t in (True, False)]
    except _FETCH_ERRORS as err:
        raise _missing(
            f"CIFAR-10 not found or corrupted under {folder}: put data_batch_1..data_batch_5, "
            f"test_batch and batches.meta (cifar-10-python.tar.gz extracted) there"
            f"{_or_download(err, download)}"
        ) from None
    # torchvision gives data as (N, 32, 32, 3) uint8
    train, test = (torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous() for s in splits)
    return ImageData("cifar10", train, test, likelihood="gaussian", scale=1 / 255)


# ---------------------------------------------------------------------------- CelebA

CELEBA_CROP = 148  # center crop of the aligned 178x218 faces ...
CELEBA_SIZE = 64  # ... resized to 64x64
CELEBA_SPLIT_SEED = 0
CELEBA_TEST_FRACTION = 0.1
CELEBA_CACHE_NAME = f"gpvae_bench_celeba{CELEBA_SIZE}_crop{CELEBA_CROP}_uint8.pt"
_CELEBA_FORMAT = (f"img_align_celeba, CenterCrop({CELEBA_CROP}), Resize({CELEBA_SIZE}) bilinear "
                  "antialias, uint8 NCHW, list_eval_partition.txt order, v1")
_CELEBA_LISTS = ("list_eval_partition.txt", "list_attr_celeba.txt", "identity_CelebA.txt",
                 "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt")


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpvae-bench"


def _writable(folder: Path) -> bool:
    """A folder we may write into: permission bits allow it (also for root) and access(2) agrees."""
    try:
        return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        return False


def celeba_cache_paths(root: Path) -> list[Path]:
    """Where the decoded CelebA may be cached, in order of preference: next to the images, then a
    per-root file in the user cache dir ($XDG_CACHE_HOME or ~/.cache, under gpvae-bench/)."""
    key = hashlib.sha1(str(root.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    return [root / "celeba" / CELEBA_CACHE_NAME,
            _user_cache_dir() / f"{Path(CELEBA_CACHE_NAME).stem}-{key}.pt"]


def _collate_images(batch):
    return torch.stack([image for image, _ in batch])


def _decode_celeba(dataset) -> torch.Tensor:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    n = len(dataset)
    images = torch.empty((n, 3, CELEBA_SIZE, CELEBA_SIZE), dtype=torch.uint8)
    many = n >= 2000
    workers = min(8, len(os.sched_getaffinity(0))) if many else 0
    loader = DataLoader(dataset, batch_size=256, num_workers=workers,
                        collate_fn=_collate_images)
    at = 0
    with tqdm(total=n, desc="decoding CelebA", unit="img", disable=not many) as bar:
        for batch in loader:
            images[at:at + len(batch)] = batch
            at += len(batch)
            bar.update(len(batch))
    return images


def _read_celeba_cache(root: Path, filenames: list[str]) -> torch.Tensor | None:
    for path in celeba_cache_paths(root):
        if not path.is_file():
            continue
        try:
            cache = torch.load(path, mmap=True, weights_only=True)
            if cache.get("format") == _CELEBA_FORMAT and cache.get("filenames") == filenames:
                return cache["images"]
        except Exception as err:  # noqa: BLE001 - an unreadable cache is rebuilt, never fatal
            log.warning("ignoring unreadable CelebA cache %s (%s)", path, err)
            continue
        log.warning("ignoring stale CelebA cache %s (other images or preprocessing)", path)
    return None


def _write_celeba_cache(root: Path, filenames: list[str], images: torch.Tensor) -> Path | None:
    for path in celeba_cache_paths(root):
        folder = path.parent
        if folder != root / "celeba":
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue
        if not _writable(folder):
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            torch.save({"format": _CELEBA_FORMAT, "filenames": filenames, "images": images}, tmp)
            os.replace(tmp, path)  # atomic: concurrent loaders never see a partial file
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("could not write the CelebA cache %s (%s)", path, err)
            continue
        log.info("cached the decoded CelebA images (%.1f GB) in %s; delete it to rebuild",
                 images.numel() / 1e9, path)
        return path
    log.warning("CelebA cache not written (no writable place): every load decodes the JPEGs")
    return None


def celeba_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into the images in list_eval_partition.txt order: a fixed random 10%
    is the test set, the remaining 90% the training pool (sorted)."""
    perm = np.random.RandomState(CELEBA_SPLIT_SEED).permutation(n)
    n_test = round(n * CELEBA_TEST_FRACTION)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _celeba(root: Path, download: bool) -> ImageData:
    """CelebA through torchvision.datasets.CelebA (which checks the MD5s of the five list files
    and that img_align_celeba/ exists), cropped and resized with torchvision transforms.

    The first load decodes every JPEG (minutes; a progress bar shows) and caches the uint8
    tensor (2.5 GB) as ROOT/celeba/gpvae_bench_celeba64_crop148_uint8.pt, written into the data
    root only if that folder is writable; otherwise in the user cache dir (see
    `celeba_cache_paths`). Later loads memory-map it. The cache records the crop/resize and the
    file list, and is rebuilt when either changes.
    """
    from torchvision import transforms
    from torchvision.datasets import CelebA

    folder = root / CelebA.base_folder
    transform = transforms.Compose([
        transforms.CenterCrop(CELEBA_CROP),
        transforms.Resize(CELEBA_SIZE),
        transforms.PILToTensor(),
    ])
    try:
        dataset = CelebA(str(root), split="all", target_type=[], transform=transform,
                         download=download)
    except _FETCH_ERRORS as err:
        raise _missing(
            f"CelebA not found or corrupted under {folder}: put img_align_celeba/ (the 202599 "
            f"aligned JPEGs of img_align_celeba.zip) and {', '.join(_CELEBA_LISTS)} there"
            f"{_or_download(err, download)} (download needs gdown; Google Drive may refuse)"
        ) from None
    filenames = list(dataset.filename)
    images = _read_celeba_cache(root, filenames)
    if images is None:
        absent = [f for f in filenames if not (folder / "img_align_celeba" / f).is_file()]
        if absent:
            raise _missing(
                f"CelebA incomplete under {folder}: {len(absent)} of the {len(filenames)} images "
                f"in list_eval_partition.txt are not in img_align_celeba/ (first: {absent[0]}); "
                "extract img_align_celeba.zip there"
            )
        images = _decode_celeba(dataset)
        _write_celeba_cache(root, filenames, images)
    train_idx, test_idx = celeba_split(len(filenames))
    train = images[torch.from_numpy(train_idx)]
    test = images[torch.from_numpy(test_idx)]
    return ImageData("celeba", train, test, likelihood="gaussian", scale=1 / 255,
                     val_fraction=1 / 9)


LOADERS: dict[str, Callable[[Path, bool], ImageData]] = {
    "mnist": _mnist,
    "binarized_mnist": _binarized_mnist,
    "omniglot": _omniglot,
    "svhn": _svhn,
    "cifar10": _cifar10,
    "celeba": _celeba,
}


def dataset_names() -> list[str]:
    return sorted(LOADERS)


# what each loader needs under the data root, each entry a set of alternatives: a cheap look for
# the files (nothing is read or checked), to say why a column without records was not run
_REQUIRED = {
    "mnist": [{f"MNIST/raw/{n}", f"MNIST/raw/{n}.gz"} for n in MNIST_IMAGES.values()],
    "binarized_mnist": [{f"binarized_mnist/binarized_mnist_{s}.amat"} for s in BINARIZED_MNIST_MD5],
    "omniglot": [{"omniglot/chardata.mat"}],
    "svhn": [{"svhn/train_32x32.mat"}, {"svhn/test_32x32.mat"}],
    "cifar10": [{f"cifar-10-batches-py/{f}"} for f in ("data_batch_1", "test_batch")],
    "celeba": [{"celeba/img_align_celeba"}, {"celeba/list_eval_partition.txt"}],
}


def files_present(name: str, root: str | Path) -> bool:
    """Whether the dataset's files are under `root` (looked for, not loaded or verified)."""
    return all(any((Path(root) / alt).exists() for alt in alts) for alts in _REQUIRED[name])


def load_dataset(name: str, root: str | Path, download: bool = False) -> ImageData:
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return LOADERS[name](Path(root), download)


def load_columns(loaders: dict[str, str], root: str | Path, download: bool = False,
                 named: set[str] | None = None, others: bool = False,
                 ) -> tuple[dict[str, ImageData], dict[str, str]]:
    """Load the data of a table's columns, `{column: loader name}`, each loader once.

    Returns ({column: data}, {column: why missing}). A column whose files are missing is skipped
    with a warning so that the rest of the table still runs; it is an error (DatasetMissing) when
    the user named that column or when no column is left (and not `others`: the table has
    something else to show, such as finished runs). The data are loaded in full, not just
    looked for, so that a corrupt file (checksums are verified on load) is one error here rather
    than a failure in every run that uses it.
    """
    loaded, errors = {}, {}
    for loader in sorted(set(loaders.values())):
        try:
            loaded[loader] = load_dataset(loader, root, download)
        except DatasetMissing as err:
            errors[loader] = str(err)
    missing = {col: errors[loader] for col, loader in loaders.items() if loader in errors}
    named_missing = [col for col in missing if named and col in named]
    if named_missing or (missing and len(missing) == len(loaders) and not others):
        raise DatasetMissing(missing[(named_missing or list(missing))[0]])
    for col, why in missing.items():
        log.warning("skipping %s: %s", col, why)
    return {col: loaded[loader] for col, loader in loaders.items() if loader in loaded}, missing
