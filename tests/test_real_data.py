"""Real-data loading: IDX parsing, checksums, error messages, splits and wine preprocessing.

Tests on the bundled files skip when the shared data directory is absent; the rest build
their own tiny files in tmp_path.
"""
from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from groklab.data.real import (
    ENV_VAR,
    MNIST_FILES,
    WINE_FILES,
    DataError,
    download_mnist,
    load_mnist,
    load_wine,
    quality_classes,
    read_idx,
    resolve_data_dir,
    standardize,
    subset_split,
    verify_md5,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "mnist").is_dir() or not (DATA / "winequality").is_dir(),
                                reason=f"shared data not found at {DATA}")

T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def write_idx(path: Path, arr: np.ndarray, type_code: int = 0x08, compress: bool = False,
              cut: int = 0) -> Path:
    """Write arr as an IDX file (big-endian), optionally gzipped and missing its last `cut` bytes."""
    big = arr.astype(arr.dtype.newbyteorder(">"))
    raw = struct.pack(">HBB", 0, type_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()
    raw = raw[: len(raw) - cut]
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def copy_mnist(dst: Path, names=("test_images", "test_labels")) -> Path:
    (dst / "mnist").mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(DATA / "mnist" / MNIST_FILES[n][0], dst / "mnist" / MNIST_FILES[n][0])
    return dst


# --------------------------------------------------------------------------- data directory

def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_data_dir(None) == tmp_path.resolve() / "data"
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path.resolve() / "env"
    assert resolve_data_dir("") == tmp_path.resolve() / "env"   # empty config field = unset
    assert resolve_data_dir(tmp_path / "arg") == tmp_path.resolve() / "arg"


# --------------------------------------------------------------------------- IDX

@needs_data
def test_read_real_t10k():
    images = read_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert images.mean() == pytest.approx(33.7912, abs=1e-4)
    assert labels.shape == (10000,)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(labels, minlength=10).tolist() == T10K_COUNTS
    train_labels = read_idx(DATA / "mnist" / "train-labels-idx1-ubyte.gz")
    assert np.bincount(train_labels, minlength=10).tolist() == TRAIN_COUNTS


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)])
def test_read_tiny_idx(tmp_path, dtype, code, compress):
    arr = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "tiny.idx", arr, code, compress))
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable, native order


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(struct.pack(">I", 0x12345678) + b"\0" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)
    path.write_bytes(struct.pack(">HBB", 0, 0x07, 1) + struct.pack(">I", 1) + b"\0")  # unknown type
    with pytest.raises(DataError, match="bad magic"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_truncated(tmp_path, compress):
    path = write_idx(tmp_path / "cut.idx", np.zeros((5, 4), np.uint8), compress=compress, cut=3)
    with pytest.raises(DataError, match="truncated") as e:
        read_idx(path)
    assert "cut.idx" in str(e.value)
    path.write_bytes(b"\0\0")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(struct.pack(">HBB", 0, 8, 3) + b"\0\0\0\1")  # header cut short
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_read_idx_rejects_trailing_and_broken_gzip(tmp_path):
    path = write_idx(tmp_path / "long.idx", np.zeros(4, np.uint8))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer"):
        read_idx(path)
    good = gzip.compress(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 1000) + bytes(1000))
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


# --------------------------------------------------------------------------- checksums and errors

@needs_data
def test_checksum_failure_names_file(tmp_path):
    root = copy_mnist(tmp_path)
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    verify_md5(path, MNIST_FILES["test_labels"][1])  # the intact copy passes
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        verify_md5(path, MNIST_FILES["test_labels"][1])
    msg = str(e.value)
    assert str(path) in msg and MNIST_FILES["test_labels"][1] in msg and "checksum" in msg
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(root)


def test_missing_directory_names_file_and_how_to_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_mnist(missing)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and str(missing) in msg
    assert "data.data_dir" in msg and ENV_VAR in msg and "does not exist" in msg
    with pytest.raises(DataError) as e:
        load_wine(missing, "white")
    assert "winequality-white.csv" in str(e.value) and str(missing) in str(e.value)


@needs_data
def test_missing_label_file_named(tmp_path):
    root = copy_mnist(tmp_path, names=("test_images",))
    with pytest.raises(DataError) as e:
        load_mnist(root)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and str(root / "mnist") in str(e.value)


def test_env_var_used_when_no_argument(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    with pytest.raises(DataError, match="from-env"):
        load_mnist()


# --------------------------------------------------------------------------- MNIST loading

@needs_data
def test_load_mnist_test_only():
    x, y, which = load_mnist(DATA)
    assert which == "test"  # train images are not bundled
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x.mean() == pytest.approx(33.7912 / 255, abs=1e-5)
    assert y.dtype == np.int64 and y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@needs_data
def test_load_mnist_train_plus_test(tmp_path):
    # Small stand-in training files (the real train images are not bundled); checksums off.
    root = copy_mnist(tmp_path)
    write_idx(root / "mnist" / MNIST_FILES["train_images"][0], np.full((5, 28, 28), 255, np.uint8), compress=True)
    write_idx(root / "mnist" / MNIST_FILES["train_labels"][0], np.arange(5, dtype=np.uint8), compress=True)
    x, y, which = load_mnist(root, verify=False)
    assert which == "train+test" and x.shape == (10005, 784) and y.shape == (10005,)
    assert np.all(x[:5] == 1.0) and y[:5].tolist() == [0, 1, 2, 3, 4]  # train rows first
    assert y[5:15].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):  # stand-in fails the real md5
        load_mnist(root)


def test_load_mnist_count_mismatch(tmp_path):
    (tmp_path / "mnist").mkdir()
    write_idx(tmp_path / "mnist" / MNIST_FILES["test_images"][0], np.zeros((3, 28, 28), np.uint8), compress=True)
    write_idx(tmp_path / "mnist" / MNIST_FILES["test_labels"][0], np.zeros(2, np.uint8), compress=True)
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        load_mnist(tmp_path, verify=False)


@needs_data
def test_download_mnist_from_local_mirror(tmp_path):
    mirror = copy_mnist(tmp_path / "mirror") / "mnist"
    names = ("test_images", "test_labels")
    paths = download_mnist(tmp_path / "dest", mirror.as_uri(), names=names)
    assert [p.name for p in paths] == [MNIST_FILES[n][0] for n in names]
    assert load_mnist(tmp_path / "dest")[2] == "test"
    # A corrupt mirror: rejected, and nothing is left behind.
    bad = mirror / MNIST_FILES["train_labels"][0]
    bad.write_bytes(b"not mnist")
    with pytest.raises(DataError, match="checksum"):
        download_mnist(tmp_path / "dest", mirror.as_uri(), names=["train_labels"])
    assert sorted(p.name for p in (tmp_path / "dest" / "mnist").iterdir()) == sorted(p.name for p in paths)
    with pytest.raises(DataError, match="unknown MNIST part"):
        download_mnist(tmp_path / "dest", mirror.as_uri(), names=["nope"])


# --------------------------------------------------------------------------- subsets

def test_subset_split():
    a_tr, a_va = subset_split(1000, 100, seed=3)
    b_tr, b_va = subset_split(1000, 100, seed=3)
    c_tr, _ = subset_split(1000, 100, seed=4)
    np.testing.assert_array_equal(a_tr, b_tr)
    np.testing.assert_array_equal(a_va, b_va)
    assert not np.array_equal(np.sort(a_tr), np.sort(c_tr))
    assert len(a_tr) == 100 and len(a_va) == 900 and a_tr.dtype == np.int64
    assert not set(a_tr.tolist()) & set(a_va.tolist())
    assert sorted(a_tr.tolist() + a_va.tolist()) == list(range(1000))
    tr, va = subset_split(1000, 100, seed=3, n_val=50)
    np.testing.assert_array_equal(tr, a_tr)
    np.testing.assert_array_equal(va, a_va[:50])
    assert len(subset_split(10, 4, 0, n_val=100)[1]) == 6


def test_subset_split_leaves_global_rng_alone():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    subset_split(100, 10, seed=1)
    assert np.random.rand() == expected


def test_subset_split_rejects_bad_sizes():
    with pytest.raises(ValueError):
        subset_split(10, 11, 0)
    with pytest.raises(ValueError):
        subset_split(10, -1, 0)
    with pytest.raises(ValueError):
        subset_split(10, 5, 0, n_val=-1)


# --------------------------------------------------------------------------- wine

@needs_data
@pytest.mark.parametrize("colour,n", [("red", 1599), ("white", 4898), ("both", 6497)])
def test_load_wine(colour, n):
    x, q, names = load_wine(DATA, colour)
    assert x.shape == (n, 11) and x.dtype == np.float64 and q.shape == (n,) and q.dtype == np.int64
    assert names[0] == "fixed acidity" and names[-1] == "alcohol" and len(names) == 11
    if colour != "white":  # both starts with the red rows
        np.testing.assert_allclose(x[0], [7.4, 0.7, 0, 1.9, 0.076, 11, 34, 0.9978, 3.51, 0.56, 9.4])


@needs_data
def test_wine_quality_counts_and_both_order():
    _, q_red, _ = load_wine(DATA, "red")
    _, q_white, _ = load_wine(DATA, "white")
    x_both, q_both, _ = load_wine(DATA, "both")
    assert dict(zip(*np.unique(q_red, return_counts=True))) == {3: 10, 4: 53, 5: 681, 6: 638, 7: 199, 8: 18}
    assert dict(zip(*np.unique(q_white, return_counts=True))) == {3: 20, 4: 163, 5: 1457, 6: 2198, 7: 880,
                                                                 8: 175, 9: 5}
    np.testing.assert_array_equal(q_both, np.concatenate([q_red, q_white]))  # red first, then white


def test_bad_colour_rejected():
    with pytest.raises(DataError) as e:
        load_wine("/nonexistent", "rose")
    assert "'rose'" in str(e.value) and all(c in str(e.value) for c in ("red", "white", "both"))


@needs_data
def test_wine_checksum_failure(tmp_path):
    (tmp_path / "winequality").mkdir()
    path = tmp_path / "winequality" / WINE_FILES["red"][0]
    path.write_bytes((DATA / "winequality" / WINE_FILES["red"][0]).read_bytes().replace(b"7.4;", b"7.5;", 1))
    with pytest.raises(DataError) as e:
        load_wine(tmp_path, "red")
    assert str(path) in str(e.value) and WINE_FILES["red"][1] in str(e.value)
    x, _, _ = load_wine(tmp_path, "red", verify=False)
    assert x[0, 0] == 7.5


def test_wine_malformed_file(tmp_path):
    (tmp_path / WINE_FILES["red"][0]).write_text('"a";"b"\n1;2\n')  # files directly in the data dir work too
    with pytest.raises(DataError, match="header"):
        load_wine(tmp_path, "red", verify=False)


def test_standardize_uses_training_rows_only():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(200, 11))
    x[:, 3] = 2.0  # constant feature: centred, not divided by ~0
    train, val = subset_split(200, 120, seed=0)
    x_std, mean, std = standardize(x, train)
    np.testing.assert_allclose(x_std[train].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(x_std[train][:, np.arange(11) != 3].std(axis=0), 1.0)
    assert np.all(x_std[:, 3] == 0.0) and std[3] == 1.0
    x2 = x.copy()
    x2[val[0]] += 1000.0  # a wild validation row changes nothing about the statistics
    x2_std, mean2, std2 = standardize(x2, train)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)
    np.testing.assert_array_equal(x_std[train], x2_std[train])
    assert not np.allclose(x_std[val].mean(axis=0), 0.0, atol=1e-12)  # val rows were not used
    mask = np.zeros(200, bool)
    mask[train] = True
    np.testing.assert_allclose(standardize(x, mask)[1], mean)


def test_standardize_rejects_empty_train():
    with pytest.raises(ValueError):
        standardize(np.ones((4, 2)), np.array([], dtype=np.int64))


def test_quality_classes_contiguous():
    q = np.array([5, 8, 3, 5, 6, 8])
    labels, values = quality_classes(q)
    assert values.tolist() == [3, 5, 6, 8]
    assert labels.tolist() == [1, 3, 0, 1, 2, 3] and labels.dtype == np.int64
    np.testing.assert_array_equal(values[labels], q)


@needs_data
def test_quality_classes_real_white():
    _, q, _ = load_wine(DATA, "white")
    labels, values = quality_classes(q)
    assert values.tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert set(labels.tolist()) == set(range(7))


def test_mnist_task_validates_on_the_official_test_split_when_all_files_exist(monkeypatch):
    import torch

    import groklab.data.real as real
    from groklab.config import DataCfg
    from groklab.data import TASKS

    y = np.arange(70_000) % 10
    monkeypatch.setattr(real, "load_mnist", lambda *a, **k: (np.zeros((70_000, 3), np.float32), y, "train+test"))
    task_def = TASKS.get("mnist")()
    cfg = DataCfg(task="mnist", n_train=1000, split_seed=3)
    data = task_def.build(cfg)
    tr, va = task_def.split(cfg, data)
    assert len(tr) == 1000 and int(tr.max()) < 60_000 and torch.equal(va, torch.arange(60_000, 70_000))
    assert torch.equal(tr, task_def.split(cfg, data)[0])                      # seeded: the same draw again
    _, va_small = task_def.split(DataCfg(task="mnist", n_train=1000, n_val=500), data)
    assert torch.equal(va_small, torch.arange(60_000, 60_500))


@needs_data
def test_mnist_task_with_the_test_split_alone_is_disjoint_and_seeded():
    from groklab.config import DataCfg
    from groklab.data import TASKS

    task_def = TASKS.get("mnist")()
    cfg = DataCfg(task="mnist", n_train=1000, split_seed=1, data_dir=str(DATA))
    data = task_def.build(cfg)
    tr, va = task_def.split(cfg, data)
    assert len(tr) == 1000 and len(va) == 9000 and not set(tr.tolist()) & set(va.tolist())
    other, _ = task_def.split(DataCfg(task="mnist", n_train=1000, split_seed=2, data_dir=str(DATA)), data)
    assert set(tr.tolist()) != set(other.tolist())
