"""Tiny datasets written in the exact formats of the official files, for tests/test_datasets.py.

Each writer puts its files where the loader of benchmark/datasets.py looks (the layout a user
gets from the official archives) and returns what the test needs to check the load: the arrays
written and, where the real loader verifies published checksums, the checksums of the tiny files.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import scipy.io


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


# ------------------------------------------------------------------------- MNIST (idx, unpacked)


def write_idx_mnist_raw(root: Path, n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict:
    """ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed: big-endian
    header (magic 2051, n, 28, 28) + uint8 pixels; (magic 2049, n) + uint8 labels."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.tobytes())
        out[prefix] = images
    return out


def accept_checksums(paths, listing: Path) -> Path:
    """Write `listing` in md5sum format for `paths`: point $GPVAE_BENCH_DATA_MD5SUMS at it and the
    loaders accept these tiny files besides the published ones (MNIST's loader reads it)."""
    listing.write_text("".join(f"{md5(p)}  {p.name}\n" for p in paths))
    return listing


# ------------------------------------------------------------------------- binarized MNIST (.amat)


def write_amat(root: Path, sizes=(("train", 10), ("valid", 4), ("test", 3)), seed: int = 0) -> dict:
    """ROOT/binarized_mnist/binarized_mnist_{split}.amat: per image one line of 784 '0'/'1'
    separated by single spaces, '\\n' line ends (like the originals: 1568 bytes a line).
    Returns {split: (array (n, 784) uint8, md5 of the file)}."""
    rng = np.random.default_rng(seed)
    folder = root / "binarized_mnist"
    folder.mkdir(parents=True)
    out = {}
    for split, n in sizes:
        bits = (rng.random((n, 784)) < 0.2).astype(np.uint8)
        text = "".join(" ".join(map(str, row)) + "\n" for row in bits)
        path = folder / f"binarized_mnist_{split}.amat"
        path.write_text(text)
        out[split] = (bits, md5(path))
    return out


# ------------------------------------------------------------------------- OMNIGLOT (chardata.mat)


def write_chardata(root: Path, n_train: int = 20, n_test: int = 6, seed: int = 0) -> dict:
    """ROOT/omniglot/chardata.mat as in the IWAE repository: MATLAB v5, `data` (784, N) and
    `testdata` (784, M) float64 in [0, 1], one column per image stored column-major, plus the
    one-hot alphabet labels `target` (50, N) / `testtarget` (50, M). Returns the upright images
    (N, 28, 28) written, and the file's git blob id."""
    rng = np.random.default_rng(seed)
    folder = root / "omniglot"
    folder.mkdir(parents=True)
    out = {}
    mat = {}
    for key, tkey, n in (("data", "target", n_train), ("testdata", "testtarget", n_test)):
        images = rng.random((n, 28, 28))  # not symmetric: a transposed load would differ
        # MATLAB's image(:) is column-major: column j of the file is images[j].ravel(order="F")
        mat[key] = np.stack([img.ravel(order="F") for img in images], axis=1)
        target = np.zeros((50, n))
        target[rng.integers(0, 50, n), np.arange(n)] = 1.0
        mat[tkey] = target
        out[key] = images
    path = folder / "chardata.mat"
    scipy.io.savemat(str(path), mat, format="5")
    out["blob"] = git_blob(path)
    return out


# ------------------------------------------------------------------------- SVHN (*_32x32.mat)


def write_svhn(root: Path, n_train: int = 9, n_test: int = 4, seed: int = 0) -> dict:
    """ROOT/svhn/{train,test}_32x32.mat (MATLAB v5): `X` (32, 32, 3, N) uint8 (row, column,
    channel, image) and `y` (N, 1) uint8 labels 1..10, 10 standing for the digit 0.
    Returns {split: (images (N, 3, 32, 32), md5)}."""
    rng = np.random.default_rng(seed)
    folder = root / "svhn"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # (32, 32, 3, N)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        path = folder / f"{split}_32x32.mat"
        scipy.io.savemat(str(path), {"X": x, "y": y}, format="5")
        out[split] = (images, md5(path))
    return out


# ------------------------------------------------------------------------- CIFAR-10 (py2 pickles)


class Py2Str(bytes):
    """A Python 2 `str`: pickled as (SHORT_)BINSTRING, so Python 3 reads it as `str` under
    encoding='latin1' (what torchvision uses) and as `bytes` under encoding='bytes' (b'data')."""


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as cPickle wrote the CIFAR batches: dict keys and strings are py2 `str`, and
    the numpy arrays reduce to numpy.core.multiarray._reconstruct with py2-str raw data."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save_ndarray(self, obj):
        assert obj.dtype == np.uint8
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.write(pickle.GLOBAL + b"numpy\nndarray\n")
        self.save((0,))
        self.save(Py2Str(b"b"))
        self.write(pickle.TUPLE3 + pickle.REDUCE)
        self.write(pickle.MARK)
        self.save(1)
        self.save(obj.shape)
        self.write(pickle.GLOBAL + b"numpy\ndtype\n")
        self.save((Py2Str(b"u1"), 0, 1))
        self.write(pickle.REDUCE)
        self.save((3, Py2Str(b"|"), None, None, None, -1, -1, 0))
        self.write(pickle.BUILD)
        self.save(False)
        self.save(Py2Str(np.ascontiguousarray(obj).tobytes()))
        self.write(pickle.TUPLE + pickle.BUILD)

    dispatch[Py2Str] = save_py2str
    dispatch[np.ndarray] = save_ndarray


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def write_cifar10(root: Path, n_per_batch: int = 3, n_test: int = 4, seed: int = 0) -> dict:
    """ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: Python 2 pickles of
    dicts {'batch_label', 'labels' (list of int), 'data' ((n, 3072) uint8: 1024 red, 1024 green,
    1024 blue values, each row-major), 'filenames'}; batches.meta {'num_cases_per_batch',
    'label_names', 'num_vis'}. Returns {'train'/'test': images (N, 3, 32, 32), 'md5': {file: md5}}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [(f"data_batch_{i}", n_per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    batches.append(("test_batch", n_test, "testing batch 1 of 1"))
    out = {"train": [], "md5": {}}
    for name, n, label in batches:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        entry = {
            Py2Str(b"batch_label"): Py2Str(label.encode()),
            Py2Str(b"labels"): [int(v) for v in rng.integers(0, 10, n)],
            Py2Str(b"data"): images.reshape(n, 3072),
            Py2Str(b"filenames"): [Py2Str(f"img_{name}_{i}.png".encode()) for i in range(n)],
        }
        (folder / name).write_bytes(py2_pickle(entry))
        out["md5"][name] = md5(folder / name)
        if name == "test_batch":
            out["test"] = images
        else:
            out["train"].append(images)
    out["train"] = np.concatenate(out["train"])
    meta = {Py2Str(b"num_cases_per_batch"): 10000, Py2Str(b"num_vis"): 3072,
            Py2Str(b"label_names"): [Py2Str(c.encode()) for c in CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    out["md5"]["batches.meta"] = md5(folder / "batches.meta")
    return out


# ------------------------------------------------------------------------- CelebA

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
CELEBA_LANDMARKS = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x "
                    "leftmouth_y rightmouth_x rightmouth_y")


def write_celeba(root: Path, n: int = 20, seed: int = 0) -> dict:
    """ROOT/celeba/ as torchvision.CelebA expects it: img_align_celeba/000001.jpg... (aligned
    faces, 178 wide x 218 high JPEGs) and the five annotation files in the official layouts:
    list_eval_partition.txt ('000001.jpg 0', no header), identity_CelebA.txt ('000001.jpg 2880'),
    and list_bbox_celeba.txt / list_landmarks_align_celeba.txt / list_attr_celeba.txt with the
    count on line 1, the column names on line 2 and space-padded integer rows ('-1'/' 1' for the
    40 attributes). Returns {'filenames': [...], 'md5': {list file: md5}}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    yy, xx = np.mgrid[0:218, 0:178]
    for i, name in enumerate(names):
        # a smooth face-sized blob so the JPEG stays small; its brightness identifies the image
        blob = np.exp(-(((xx - 89) / 40.0) ** 2 + ((yy - 120) / 50.0) ** 2))
        rgb = np.stack([blob * (40 + 10 * i), blob * 120, 255 - blob * 100], axis=-1)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(images / name, quality=90)
    lines = {
        "list_eval_partition.txt": [f"{f} {p}" for f, p in
                                    zip(names, rng.integers(0, 3, n), strict=True)],
        "identity_CelebA.txt": [f"{f} {p}" for f, p in
                                zip(names, rng.integers(1, 10178, n), strict=True)],
        "list_bbox_celeba.txt": [str(n), "image_id x_1 y_1 width height"] + [
            f"{f}{x:>6d}{y:>4d}{w:>4d}{h:>4d}"
            for f, (x, y, w, h) in zip(names, rng.integers(50, 400, (n, 4)), strict=True)],
        "list_landmarks_align_celeba.txt": [str(n), CELEBA_LANDMARKS] + [
            f"{f} " + " ".join(f"{v:>4d}" for v in row)
            for f, row in zip(names, rng.integers(60, 160, (n, 10)), strict=True)],
        "list_attr_celeba.txt": [str(n), " ".join(CELEBA_ATTRS) + " "] + [
            f"{f} " + " ".join(f"{v:2d}" for v in row)
            for f, row in zip(names, rng.choice([-1, 1], (n, 40)), strict=True)],
    }
    checksums = {}
    for name, rows in lines.items():
        (folder / name).write_text("\n".join(rows) + "\n")
        checksums[name] = md5(folder / name)
    return {"filenames": names, "md5": checksums}
