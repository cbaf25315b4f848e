"""Dataset loaders on tiny files in the official formats (fast), and on the real copies in
../shared/data when they are there.

torchvision's SVHN, CIFAR10 and CelebA check the published MD5s of their files, and the
binarized MNIST / OMNIGLOT loaders check theirs (MD5s, git blob id): tiny stand-ins cannot match,
so the tests monkeypatch those checksum tables (the class attributes `SVHN.split_list`,
`CIFAR10.train_list` / `test_list` / `meta`, `CelebA.file_list`, and
`datasets.BINARIZED_MNIST_MD5` / `datasets.OMNIGLOT_BLOB`) to the tiny files' own checksums.
Everything else (file discovery, checksum verification, parsing) is the real loader code.
"""

from __future__ import annotations

import gzip
import io
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fixtures_datasets as fx  # noqa: E402

from benchmark import datasets  # noqa: E402
from benchmark.datasets import DatasetMissing, ImageData, load_dataset  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def held_out(data: ImageData) -> int:
    """How many training images the harness holds out for validation (benchmark/run.py)."""
    return round(len(data.train) * data.val_fraction)


def assert_missing_message(err: DatasetMissing, *names: str) -> str:
    message = str(err)
    assert "\n" not in message and message.strip() == message, message
    for name in names:
        assert name in message, (name, message)
    return message


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    """Keep the CelebA fallback cache out of the real ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


@pytest.fixture
def offline(monkeypatch):
    """No network: every urlopen fails as it does without a route to the host."""
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Fake network serving `files` by URL (what torchvision's download_url reads)."""
    fetched = []

    class Response(io.BytesIO):
        def __init__(self, url, data):
            super().__init__(data)
            self.url, self.length = url, len(data)

    def urlopen(request, *args, **kwargs):
        url = request.full_url if hasattr(request, "full_url") else request
        if url not in files:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        fetched.append(url)
        return Response(url, files[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return fetched


def test_names():
    assert datasets.dataset_names() == sorted(
        ["mnist", "binarized_mnist", "omniglot", "svhn", "cifar10", "celeba"])
    with pytest.raises(KeyError, match="known datasets"):
        load_dataset("imagenet", "unused")


# ------------------------------------------------------------------------- missing datasets

MISSING_FILES = {
    "mnist": ["MNIST", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    "binarized_mnist": ["binarized_mnist_train.amat", "binarized_mnist_valid.amat",
                        "binarized_mnist_test.amat"],
    "omniglot": ["chardata.mat"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
    "cifar10": ["cifar-10-batches-py", "data_batch_1", "test_batch", "batches.meta"],
    "celeba": ["img_align_celeba", "list_eval_partition.txt", "list_attr_celeba.txt",
               "identity_CelebA.txt", "list_bbox_celeba.txt", "list_landmarks_align_celeba.txt"],
}


@pytest.mark.parametrize("name", sorted(MISSING_FILES))
def test_missing_dataset_is_one_line_naming_the_files(tmp_path, name):
    root = tmp_path / "empty"
    with pytest.raises(DatasetMissing) as info:
        load_dataset(name, root)
    message = assert_missing_message(info.value, str(root), *MISSING_FILES[name])
    assert "--download" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["binarized_mnist", "omniglot", "svhn", "cifar10", "celeba"])
def test_failed_download_is_dataset_missing(tmp_path, offline, name):
    with pytest.raises(DatasetMissing) as info:
        load_dataset(name, tmp_path, download=True)
    message = assert_missing_message(info.value, *MISSING_FILES[name][:1])
    assert "download" in message
    assert not list(tmp_path.rglob("*.part"))


def test_load_columns_skips_a_missing_column_unless_named_or_alone(tmp_path, caplog, monkeypatch):
    fx.write_idx_mnist_raw(tmp_path)  # MNIST present, SVHN absent
    accept_tiny_mnist(tmp_path, monkeypatch)
    columns = {"mnist": "mnist", "mnist_fc": "mnist", "svhn": "svhn"}
    loaded, missing = datasets.load_columns(columns, tmp_path)
    assert sorted(loaded) == ["mnist", "mnist_fc"] and loaded["mnist"] is loaded["mnist_fc"]
    assert list(missing) == ["svhn"] and "train_32x32.mat" in missing["svhn"]
    assert "skipping svhn" in caplog.text
    with pytest.raises(DatasetMissing, match="train_32x32.mat"):
        datasets.load_columns(columns, tmp_path, named={"mnist", "svhn"})
    with pytest.raises(DatasetMissing, match="train_32x32.mat"):
        datasets.load_columns({"svhn": "svhn"}, tmp_path)


# ------------------------------------------------------------------------- MNIST


def accept_tiny_mnist(root: Path, monkeypatch) -> None:
    raw = root / "MNIST" / "raw"
    listing = fx.accept_checksums(sorted(raw.iterdir()), root / "MD5SUMS")
    monkeypatch.setenv(datasets.CHECKSUMS_ENV, str(listing))


def test_mnist_tiny_idx(tmp_path, monkeypatch):
    written = fx.write_idx_mnist_raw(tmp_path, n_train=12, n_test=5)
    accept_tiny_mnist(tmp_path, monkeypatch)
    data = load_dataset("mnist", tmp_path)
    assert data.train.shape == (12, 1, 28, 28) and data.test.shape == (5, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and data.likelihood == "gaussian"
    assert torch.equal(data.train[:, 0], torch.from_numpy(written["train"]))
    assert torch.equal(data.test[:, 0], torch.from_numpy(written["t10k"]))
    x = data.to_float(data.train)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.99


def test_mnist_tiny_gz(tmp_path, monkeypatch):
    written = fx.write_idx_mnist_raw(tmp_path, n_train=12, n_test=5)
    raw = tmp_path / "MNIST" / "raw"
    for path in list(raw.iterdir()):
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    accept_tiny_mnist(tmp_path, monkeypatch)
    data = load_dataset("mnist", tmp_path)
    assert torch.equal(data.test[:, 0], torch.from_numpy(written["t10k"]))


def test_mnist_checksums_are_the_published_ones():
    from torchvision.datasets import MNIST

    assert dict(MNIST.resources) == datasets.MNIST_GZ_MD5
    if (SHARED_DATA / "MD5SUMS").is_file():  # shared/data lists the unpacked files' MD5s too
        listed = dict(reversed(line.split()) for line in (SHARED_DATA / "MD5SUMS").read_text()
                      .splitlines() if "MNIST/raw/" in line)
        for name, md5 in {**datasets.MNIST_MD5, **datasets.MNIST_GZ_MD5}.items():
            assert listed[f"./MNIST/raw/{name}"] == md5


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,words", [
    (lambda p: flip_byte(p, 1000), ["is corrupt: MD5", datasets.MNIST_MD5["t10k-images-idx3-ubyte"],
                                    "replace it with the original"]),
    (lambda p: p.write_bytes(p.read_bytes()[:3000]), ["is corrupt (truncated)", "3000 bytes",
                                                      "announces 5 images"]),
    (lambda p: p.write_bytes(p.read_bytes()[:10]), ["is corrupt", "shorter than the 16-byte"]),
    (lambda p: flip_byte(p, 3), ["is corrupt: magic number 2300, not 2051"]),
    (lambda p: p.write_bytes(b"<html>404 not found</html>" * 40), ["is corrupt: magic number"]),
])
def test_mnist_corrupt_file(tmp_path, monkeypatch, damage, words):
    fx.write_idx_mnist_raw(tmp_path, n_train=12, n_test=5)
    accept_tiny_mnist(tmp_path, monkeypatch)  # the undamaged tiny files pass
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    damage(path)
    with pytest.raises(datasets.DatasetCorrupt) as info:
        load_dataset("mnist", tmp_path)
    assert_missing_message(info.value, str(path), *words)
    assert "not found" not in str(info.value)


def test_mnist_corrupt_gz(tmp_path, monkeypatch):
    fx.write_idx_mnist_raw(tmp_path, n_train=12, n_test=5)
    raw = tmp_path / "MNIST" / "raw"
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress((raw / "train-images-idx3-ubyte").read_bytes())[:-40])
    (raw / "train-images-idx3-ubyte").unlink()
    accept_tiny_mnist(tmp_path, monkeypatch)
    with pytest.raises(datasets.DatasetCorrupt) as info:
        load_dataset("mnist", tmp_path)
    assert_missing_message(info.value, str(gz), "is corrupt")


def test_mnist_tiny_files_fail_the_published_checksums(tmp_path):
    fx.write_idx_mnist_raw(tmp_path, n_train=12, n_test=5)
    with pytest.raises(datasets.DatasetCorrupt, match="is corrupt: MD5"):
        load_dataset("mnist", tmp_path)


def test_real_mnist():
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST not found under {SHARED_DATA}")
    data = load_dataset("mnist", SHARED_DATA)
    assert data.train.shape == (60000, 1, 28, 28) and data.test.shape == (10000, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and held_out(data) == 6000


# ------------------------------------------------------------------------- binarized MNIST


def test_binarized_mnist_tiny(tmp_path, monkeypatch):
    written = fx.write_amat(tmp_path)
    monkeypatch.setattr(datasets, "BINARIZED_MNIST_MD5", {s: m for s, (_, m) in written.items()})
    data = load_dataset("binarized_mnist", tmp_path)
    assert data.likelihood == "bernoulli" and data.scale == 1.0
    assert data.train.shape == (14, 1, 28, 28) and data.test.shape == (3, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and set(data.train.unique().tolist()) == {0, 1}
    # the training pool is the official train file followed by the official valid file, and the
    # harness holds out as many images as the valid file has
    expected = np.concatenate([written["train"][0], written["valid"][0]])
    assert torch.equal(data.train.reshape(14, 784), torch.from_numpy(expected))
    assert torch.equal(data.test.reshape(3, 784), torch.from_numpy(written["test"][0]))
    assert held_out(data) == 4


def test_binarized_mnist_wrong_checksum(tmp_path):
    fx.write_amat(tmp_path)  # tiny files cannot have the published MD5s
    with pytest.raises(datasets.DatasetCorrupt) as info:
        load_dataset("binarized_mnist", tmp_path)
    assert_missing_message(info.value, "binarized_mnist_train.amat", "is corrupt: MD5",
                           datasets.BINARIZED_MNIST_MD5["train"])


def test_binarized_mnist_download(tmp_path, monkeypatch):
    source = fx.write_amat(tmp_path / "server")
    monkeypatch.setattr(datasets, "BINARIZED_MNIST_MD5", {s: m for s, (_, m) in source.items()})
    files = {datasets.BINARIZED_MNIST_URL + p.name: p.read_bytes()
             for p in (tmp_path / "server" / "binarized_mnist").iterdir()}
    fetched = serve(monkeypatch, files)
    data = load_dataset("binarized_mnist", tmp_path / "root", download=True)
    assert data.train.shape == (14, 1, 28, 28) and set(fetched) == set(files)
    assert (tmp_path / "root" / "binarized_mnist" / "binarized_mnist_valid.amat").is_file()


def test_parse_amat_fast_and_fallback():
    bits = (np.random.default_rng(1).random((3, 784)) < 0.5).astype(np.uint8)
    official = "".join(" ".join(map(str, r)) + "\n" for r in bits).encode()
    assert np.array_equal(datasets.parse_amat(official), bits)
    crlf = official.replace(b"\n", b" \r\n")  # off the fast path: the token parser
    assert np.array_equal(datasets.parse_amat(crlf), bits)
    with pytest.raises(ValueError, match="784"):
        datasets.parse_amat(official[:-4] + b"\n")
    with pytest.raises(ValueError, match="0 and 1"):
        datasets.parse_amat(official.replace(b"1", b"2", 1))


def test_real_binarized_mnist():
    if not (SHARED_DATA / "binarized_mnist" / "binarized_mnist_train.amat").is_file():
        pytest.skip(f"real binarized MNIST not found under {SHARED_DATA}")
    data = load_dataset("binarized_mnist", SHARED_DATA)
    assert data.train.shape == (60000, 1, 28, 28) and data.test.shape == (10000, 1, 28, 28)
    assert data.train.dtype == torch.uint8 and data.train.max() == 1
    assert held_out(data) == 10000 and data.likelihood == "bernoulli"
    npz = SHARED_DATA / "binarized_mnist" / "binarized_mnist.npz"
    if npz.is_file():  # an independent copy of the same bits
        ref = np.load(npz)
        assert np.array_equal(data.train[50000:].reshape(-1, 784).numpy(), ref["valid"])
        assert np.array_equal(data.test.reshape(-1, 784).numpy(), ref["test"])


# ------------------------------------------------------------------------- OMNIGLOT


def test_omniglot_tiny(tmp_path, monkeypatch):
    written = fx.write_chardata(tmp_path, n_train=20, n_test=6)
    monkeypatch.setattr(datasets, "OMNIGLOT_BLOB", written["blob"])
    assert datasets.git_blob_id(tmp_path / "omniglot" / "chardata.mat") == written["blob"]
    data = load_dataset("omniglot", tmp_path)
    assert data.train.shape == (20, 1, 28, 28) and data.test.shape == (6, 1, 28, 28)
    assert data.train.dtype == torch.float32 and data.likelihood == "gaussian"
    assert 0 <= data.train.min() and data.train.max() <= 1 and data.scale == 1.0
    # upright images: column j of `data` is image j in column-major order (IWAE's reshape)
    assert torch.allclose(data.train[:, 0], torch.from_numpy(written["data"]).float())
    assert torch.allclose(data.test[:, 0], torch.from_numpy(written["testdata"]).float())
    assert held_out(data) == 2


def test_omniglot_wrong_blob(tmp_path):
    fx.write_chardata(tmp_path)
    with pytest.raises(DatasetMissing) as info:
        load_dataset("omniglot", tmp_path)
    assert_missing_message(info.value, "chardata.mat", "git blob", datasets.OMNIGLOT_BLOB)


def test_omniglot_download(tmp_path, monkeypatch):
    written = fx.write_chardata(tmp_path / "server")
    monkeypatch.setattr(datasets, "OMNIGLOT_BLOB", written["blob"])
    fetched = serve(monkeypatch, {
        datasets.OMNIGLOT_URL: (tmp_path / "server" / "omniglot" / "chardata.mat").read_bytes()})
    data = load_dataset("omniglot", tmp_path / "root", download=True)
    assert data.train.shape == (20, 1, 28, 28) and fetched
    assert [p.name for p in (tmp_path / "root" / "omniglot").iterdir()] == ["chardata.mat"]


# ------------------------------------------------------------------------- SVHN, CIFAR-10


def test_svhn_tiny(tmp_path, monkeypatch):
    from torchvision.datasets import SVHN

    written = fx.write_svhn(tmp_path, n_train=9, n_test=4)
    split_list = {k: list(v) for k, v in SVHN.split_list.items()}
    for split, (_, md5) in written.items():
        split_list[split][2] = md5
    monkeypatch.setattr(SVHN, "split_list", split_list)
    data = load_dataset("svhn", tmp_path)
    assert data.train.shape == (9, 3, 32, 32) and data.test.shape == (4, 3, 32, 32)
    assert data.train.dtype == torch.uint8 and data.likelihood == "gaussian"
    assert data.scale == pytest.approx(1 / 255)
    assert torch.equal(data.train, torch.from_numpy(written["train"][0]))
    assert torch.equal(data.test, torch.from_numpy(written["test"][0]))
    assert held_out(data) == 1


def test_cifar10_tiny(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    written = fx.write_cifar10(tmp_path, n_per_batch=3, n_test=4)
    md5 = written["md5"]
    monkeypatch.setattr(CIFAR10, "train_list", [[f, md5[f]] for f, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[f, md5[f]] for f, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    data = load_dataset("cifar10", tmp_path)
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (4, 3, 32, 32)
    assert data.train.dtype == torch.uint8 and data.likelihood == "gaussian"
    assert data.scale == pytest.approx(1 / 255)
    assert torch.equal(data.train, torch.from_numpy(written["train"]))
    assert torch.equal(data.test, torch.from_numpy(written["test"]))
    assert held_out(data) == 2


def test_cifar10_real_checksums_reject_tiny_files(tmp_path):
    fx.write_cifar10(tmp_path)
    with pytest.raises(DatasetMissing) as info:
        load_dataset("cifar10", tmp_path)
    assert_missing_message(info.value, "corrupted", "data_batch_1")


# ------------------------------------------------------------------------- CelebA


@pytest.fixture
def celeba_root(tmp_path, monkeypatch):
    from torchvision.datasets import CelebA

    written = fx.write_celeba(tmp_path / "data", n=20)
    file_list = [(fid, written["md5"].get(name, md5), name) for fid, md5, name in CelebA.file_list]
    monkeypatch.setattr(CelebA, "file_list", file_list)
    return tmp_path / "data"


def expected_celeba_image(path: Path) -> torch.Tensor:
    """The documented preprocessing, done by hand: center 148x148 crop, bilinear resize to 64."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    left, top = round((w - 148) / 2), round((h - 148) / 2)
    img = img.crop((left, top, left + 148, top + 148)).resize((64, 64), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def test_celeba_tiny_split_and_cache(celeba_root):
    data = load_dataset("celeba", celeba_root)
    # 20 images: 10% test, 90% training pool of which the harness holds out 1/9 (10% of all)
    assert data.train.shape == (18, 3, 64, 64) and data.test.shape == (2, 3, 64, 64)
    assert held_out(data) == 2 and data.val_fraction == pytest.approx(1 / 9)
    assert data.train.dtype == torch.uint8 and data.likelihood == "gaussian"
    assert data.scale == pytest.approx(1 / 255)
    train_idx, test_idx = datasets.celeba_split(20)
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(20))
    jpgs = sorted((celeba_root / "celeba" / "img_align_celeba").iterdir())
    for images, idx in ((data.train, train_idx), (data.test, test_idx)):
        for row, i in ((0, idx[0]), (-1, idx[-1])):
            diff = (images[row].int() - expected_celeba_image(jpgs[i]).int()).abs()
            assert diff.max() <= 1, diff.max()  # same crop and resize (rounding aside)

    cache = celeba_root / "celeba" / datasets.CELEBA_CACHE_NAME
    assert cache.is_file()
    for jpg in jpgs:  # a second load reads the cache, not the JPEGs
        jpg.unlink()
    again = load_dataset("celeba", celeba_root)
    assert torch.equal(again.train, data.train) and torch.equal(again.test, data.test)


def test_celeba_cache_outside_read_only_root(celeba_root, monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "_writable", lambda folder: folder != celeba_root / "celeba")
    data = load_dataset("celeba", celeba_root)
    assert not (celeba_root / "celeba" / datasets.CELEBA_CACHE_NAME).exists()
    user_cache = datasets.celeba_cache_paths(celeba_root)[1]
    assert user_cache.is_file() and tmp_path / "user-cache" in user_cache.parents
    shutil.rmtree(celeba_root / "celeba" / "img_align_celeba")
    (celeba_root / "celeba" / "img_align_celeba").mkdir()
    assert torch.equal(load_dataset("celeba", celeba_root).test, data.test)


def test_celeba_missing_images_and_stale_cache(celeba_root, monkeypatch):
    from torchvision.datasets import CelebA

    folder = celeba_root / "celeba"
    load_dataset("celeba", celeba_root)
    # list a 21st image in every annotation file but give no JPEG: the cache (20 images) is
    # stale, and the missing JPEG is one clear error
    rows = {"list_eval_partition.txt": " 0", "identity_CelebA.txt": " 7",
            "list_bbox_celeba.txt": "  1  2  3  4", "list_landmarks_align_celeba.txt": " 1" * 10,
            "list_attr_celeba.txt": " 1" * 40}
    for name, row in rows.items():
        path = folder / name
        path.write_text(path.read_text() + f"000021.jpg{row}\n")
    monkeypatch.setattr(CelebA, "file_list", [
        (fid, fx.md5(folder / name) if name in rows else md5, name)
        for fid, md5, name in CelebA.file_list])
    with pytest.raises(DatasetMissing) as info:
        load_dataset("celeba", celeba_root)
    assert_missing_message(info.value, "000021.jpg", "img_align_celeba")


def test_celeba_split_sizes_at_full_scale():
    n = 202599
    train_idx, test_idx = datasets.celeba_split(n)
    assert len(test_idx) == 20260 and len(train_idx) == 182339
    assert round(len(train_idx) / 9) == 20260  # validation: 10% of all, training: 80%
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert np.array_equal(datasets.celeba_split(n)[1], test_idx)  # fixed
