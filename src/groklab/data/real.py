"""Loading real datasets from local files: MNIST (IDX gzip) and Wine Quality (UCI CSV).

Pure functions, numpy in and numpy out. They parse the files themselves (``struct`` for
IDX, ``numpy`` for the CSVs), check the published MD5 sums, and raise :class:`DataError`
with a message that names the file, the directory and how to fix it. Nothing is ever
downloaded implicitly: :func:`download_mnist` exists, but only runs when called.

Where the files are looked for (:func:`resolve_data_dir`): the ``data_dir`` argument
(the ``data.data_dir`` config field), else ``$GROKLAB_DATA``, else ``./data``. Inside it:

* MNIST: ``<dir>/mnist/<file>``, also accepted are ``<dir>/MNIST/raw/<file>`` (torchvision's
  layout) and ``<dir>/<file>``.
* Wine Quality: ``<dir>/winequality/<file>``, also accepted is ``<dir>/<file>``.

:func:`subset_split`, :func:`standardize` and :func:`quality_classes` turn the arrays into a
seeded training subset, features scaled with training statistics only, and class ids.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "DataError",
    "ENV_VAR",
    "MNIST_FILES",
    "MNIST_URL_BASE",
    "WINE_COLOURS",
    "WINE_FILES",
    "download_mnist",
    "load_mnist",
    "load_wine",
    "md5sum",
    "quality_classes",
    "read_idx",
    "resolve_data_dir",
    "standardize",
    "subset_split",
    "verify_md5",
]

ENV_VAR = "GROKLAB_DATA"
"""Environment variable naming the data directory when no argument is given."""

_HOW_TO_SET = (f"Set the data directory with the `data.data_dir` config field "
               f"or the {ENV_VAR} environment variable.")


class DataError(ValueError):
    """A data file is missing, corrupt, or has an unexpected format (bad user input)."""


# --------------------------------------------------------------------------- data directory

def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Where real datasets live.

    Args:
        data_dir: Explicit directory (e.g. the ``data.data_dir`` config field). ``None`` or
            an empty string means "not given".

    Returns:
        The absolute directory: ``data_dir`` if given, else ``$GROKLAB_DATA`` if set and
        non-empty, else ``./data`` relative to the current working directory. It need not
        exist; loaders report a missing directory themselves.
    """
    # Empty strings count as unset: config fields default to "" and shells export VAR= .
    chosen = str(data_dir) if data_dir not in (None, "") else os.environ.get(ENV_VAR, "") or "data"
    return Path(chosen).expanduser().resolve()


def _find_file(root: Path, subdirs: Sequence[str], filename: str) -> Path | None:
    """The first existing ``root/<subdir>/filename``; ``""`` in subdirs means root itself."""
    for sub in subdirs:
        path = root / sub / filename if sub else root / filename
        if path.is_file():
            return path
    return None


def _located(what: str, filename: str, md5: str, root: Path, subdirs: Sequence[str], verify: bool) -> Path:
    """The path of a data file found under root/subdirs, checksummed if `verify`; DataError if missing."""
    path = _find_file(root, subdirs, filename)
    if path is None:
        raise _missing_error(what, filename, root, subdirs)
    if verify:
        verify_md5(path, md5)
    return path


def _missing_error(what: str, filename: str, root: Path, subdirs: Sequence[str]) -> DataError:
    """A DataError naming the missing file, every place looked in, and how to fix it."""
    places = ", ".join(str(root / s if s else root) for s in subdirs)
    where = "does not exist" if not root.is_dir() else "exists"
    return DataError(f"{what} file {filename!r} not found; looked in: {places} "
                     f"(data directory {root} {where}). {_HOW_TO_SET}")


# --------------------------------------------------------------------------- checksums

def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex MD5 digest of a file, read in chunks so large files need little memory.

    Args:
        path: File to hash.
        chunk_size: Bytes read at a time.

    Returns:
        The 32-character lowercase hex digest.

    Raises:
        DataError: If the file cannot be read.
    """
    digest = hashlib.md5()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(chunk_size):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return digest.hexdigest()


def verify_md5(path: str | Path, expected: str) -> str:
    """Check a file against its published MD5 sum.

    Args:
        path: File to check.
        expected: Expected hex digest (case-insensitive).

    Returns:
        The actual digest (equal to ``expected``, lowercased).

    Raises:
        DataError: If the sums differ (the message names the file, the expected and the actual
            sum) or the file cannot be read.
    """
    actual = md5sum(path)
    if actual != expected.lower():
        raise DataError(f"checksum mismatch for {path}: expected md5 {expected.lower()}, got {actual}. "
                        f"The file is corrupt or not the original; replace it with a good copy.")
    return actual


# --------------------------------------------------------------------------- IDX format

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # truncated or damaged gzip stream
        raise DataError(f"IDX file {path} is not a valid gzip stream: {e}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw) into a numpy array.

    The header is two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per
    dimension; the data follow in C order, big-endian.

    Args:
        path: The ``.gz`` or uncompressed IDX file.

    Returns:
        An array of the file's shape in native byte order (e.g. uint8 for MNIST), writable.

    Raises:
        DataError: On an unreadable file, a bad magic number or type byte, or a payload whose
            size does not match the dimensions (truncated or with trailing bytes).
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(buf)} bytes, shorter than the 4-byte magic")
    zero, type_code, ndim = struct.unpack(">HBB", buf[:4])
    if zero != 0 or type_code not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: bad magic 0x{buf[:4].hex()} (expected 0x0000TTNN "
                        f"with type TT in {', '.join(f'{t:02x}' for t in _IDX_DTYPES)})")
    header_len = 4 + 4 * ndim
    if len(buf) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(buf)} < {header_len} bytes)")
    dims = struct.unpack(f">{ndim}I", buf[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(buf) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise DataError(f"IDX file {path} is {problem}: dims {dims} need {expected} data bytes, found {actual}")
    # astype copies into native byte order, so the result is writable and independent of buf.
    return np.frombuffer(buf, dtype=dtype, offset=header_len).reshape(dims).astype(dtype.newbyteorder("="))


# --------------------------------------------------------------------------- MNIST

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
"""MNIST part -> (file name, published MD5 of the original LeCun gzip file)."""

MNIST_URL_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
"""Default mirror for :func:`download_mnist` (torchvision's; the LeCun site is often down)."""

_MNIST_SUBDIRS = ("mnist", "MNIST/raw", "")


def _mnist_part(root: Path, name: str, verify: bool) -> tuple[np.ndarray, Path]:
    """Read (and optionally checksum) one of the four MNIST files; DataError if missing."""
    path = _located("MNIST", *MNIST_FILES[name], root, _MNIST_SUBDIRS, verify)
    return read_idx(path), path


def _mnist_pair(root: Path, split: str, verify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 784) float32 in [0, 1] and labels (N,) int64 of one split, cross-checked."""
    images, img_path = _mnist_part(root, f"{split}_images", verify)
    labels, lab_path = _mnist_part(root, f"{split}_labels", verify)
    if images.ndim != 3 or images.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"unexpected MNIST arrays: {img_path} holds {images.dtype}{images.shape}, "
                        f"{lab_path} holds {labels.dtype}{labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{lab_path} holds labels outside 0..9")
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def load_mnist(data_dir: str | Path | None = None, *,
               verify: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
    """Load MNIST from the IDX gzip files in the data directory.

    With all four files present, returns the 60 000 training images followed by the 10 000
    test images; when only the two ``t10k`` files (or the test files plus only one training
    file) are present, returns the 10 000 test images alone. Research code draws its own
    seeded subsets (:func:`subset_split`), so the official split is not kept apart.

    Args:
        data_dir: Data directory (see :func:`resolve_data_dir`).
        verify: Check each file used against its published MD5 sum.

    Returns:
        ``(x, y, which)``: x (M, 784) float32 in [0, 1]; y (M,) int64 digits; which is
        ``"train+test"`` (M = 70 000) or ``"test"`` (M = 10 000).

    Raises:
        DataError: A needed file is missing (the message names it, the directories looked in
            and how to set the directory), fails its checksum, or is malformed.
    """
    root = resolve_data_dir(data_dir)
    x_test, y_test = _mnist_pair(root, "test", verify)
    has_train = all(_find_file(root, _MNIST_SUBDIRS, MNIST_FILES[n][0]) is not None
                    for n in ("train_images", "train_labels"))
    if not has_train:
        return x_test, y_test, "test"
    x_train, y_train = _mnist_pair(root, "train", verify)
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test]), "train+test"


def download_mnist(data_dir: str | Path | None = None, url_base: str = MNIST_URL_BASE,
                   names: Iterable[str] = tuple(MNIST_FILES)) -> list[Path]:
    """Download missing MNIST files into ``<data_dir>/mnist``, checking their MD5 sums.

    Never called by the loaders: fetching data is an explicit user action. Files already
    present are left alone (and not re-verified; :func:`load_mnist` verifies them).

    Args:
        data_dir: Data directory (see :func:`resolve_data_dir`); created if needed.
        url_base: URL prefix the file names are appended to (any scheme urllib handles).
        names: Which parts of :data:`MNIST_FILES` to fetch (default all four).

    Returns:
        Paths of the files now present, in the order of ``names``.

    Raises:
        DataError: On an unknown part name, a failed download, or a checksum mismatch (the
            bad download is deleted, so no corrupt file is left behind).
    """
    target = resolve_data_dir(data_dir) / "mnist"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        if name not in MNIST_FILES:
            raise DataError(f"unknown MNIST part {name!r}; valid: {', '.join(MNIST_FILES)}")
        filename, md5 = MNIST_FILES[name]
        path = target / filename
        if not path.is_file():
            _fetch_verified(url_base.rstrip("/") + "/" + filename, path, md5)
        paths.append(path)
    return paths


def _fetch_verified(url: str, path: Path, md5: str) -> None:
    """Download url to path via a temporary file, renamed only once its checksum is right."""
    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        verify_md5(tmp, md5)
    except DataError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} rejected: {e}") from None
    except OSError as e:  # urllib.error.URLError is an OSError
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url}: {e}") from None
    tmp.replace(path)


# --------------------------------------------------------------------------- subsets

def subset_split(n_total: int, n_train: int, seed: int,
                 n_val: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, disjoint training subset and validation set of ``range(n_total)``.

    Uses its own ``np.random.default_rng(seed)``, so the split never depends on (or disturbs)
    the global RNGs or the model's init seed. Both index arrays stay in the generator's random
    order, so any prefix of the validation indices is itself a uniform random sample (callers
    may cap it by slicing).

    Args:
        n_total: Number of examples in the pool.
        n_train: Number of training examples (0..n_total).
        seed: Seed of the split's generator.
        n_val: Cap on validation examples; ``None`` (or 0) means every remaining example.

    Returns:
        ``(train_idx, val_idx)``, int64 arrays with ``n_train`` and
        ``min(n_val, n_total - n_train)`` entries.

    Raises:
        ValueError: If the sizes are out of range.
    """
    if n_total < 0 or not 0 <= n_train <= n_total:
        raise ValueError(f"need 0 <= n_train <= n_total, got n_train={n_train}, n_total={n_total}")
    if n_val is not None and n_val < 0:
        raise ValueError(f"n_val must be >= 0 or None, got {n_val}")
    perm = np.random.default_rng(seed).permutation(n_total).astype(np.int64)
    train, val = perm[:n_train], perm[n_train:]
    if n_val:
        val = val[:n_val]
    return train, val


# --------------------------------------------------------------------------- Wine Quality

WINE_FILES: dict[str, tuple[str, str]] = {
    "red": ("winequality-red.csv", "2daeecee174368f8a33b82c8cccae3a5"),
    "white": ("winequality-white.csv", "5d9ff0f7f716dace19e3ab4578775fd7"),
}
"""Wine colour -> (file name, MD5 of the original UCI CSV, ``;``-separated with a header)."""

WINE_COLOURS = ("red", "white", "both")
_WINE_SUBDIRS = ("winequality", "")
_WINE_COLUMNS = 12  # 11 physicochemical features + quality


def _read_wine_csv(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Parse one UCI wine CSV: (features (M, 11) float64, quality (M,) int64, feature names)."""
    try:
        with open(path, encoding="ascii") as f:
            header = f.readline()
            body = np.loadtxt(f, delimiter=";", dtype=np.float64, ndmin=2)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot parse Wine Quality file {path}: {e}") from None
    names = [c.strip().strip('"') for c in header.strip().split(";")]
    if len(names) != _WINE_COLUMNS or names[-1] != "quality":
        raise DataError(f"{path}: expected a header of {_WINE_COLUMNS} ';'-separated columns ending in "
                        f"'quality', got {header.strip()!r}")
    if body.shape[1] != _WINE_COLUMNS or len(body) == 0:
        raise DataError(f"{path}: expected rows of {_WINE_COLUMNS} values, got an array of shape {body.shape}")
    quality = body[:, -1]
    if not np.all(quality == np.round(quality)):
        raise DataError(f"{path}: quality scores must be integers")
    return body[:, :-1], quality.astype(np.int64), names[:-1]


def load_wine(data_dir: str | Path | None = None, colour: str = "red", *,
              verify: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load the UCI Wine Quality data (Cortez et al., 2009).

    Args:
        data_dir: Data directory (see :func:`resolve_data_dir`).
        colour: ``"red"`` (1 599 wines), ``"white"`` (4 898) or ``"both"``: the red rows
            followed by the white rows, with no colour column added (the 11 features only).
        verify: Check each CSV against its known MD5 sum.

    Returns:
        ``(x, quality, feature_names)``: x (M, 11) float64 raw (unscaled) features; quality
        (M,) int64 scores; the 11 feature names from the header.

    Raises:
        DataError: An invalid colour (the message lists the valid ones), or a missing, corrupt
            or malformed file.
    """
    if colour not in WINE_COLOURS:
        raise DataError(f"invalid wine colour {colour!r}; valid choices: {', '.join(WINE_COLOURS)}")
    root = resolve_data_dir(data_dir)
    colours = ("red", "white") if colour == "both" else (colour,)
    parts = []
    for c in colours:
        parts.append(_read_wine_csv(_located("Wine Quality", *WINE_FILES[c], root, _WINE_SUBDIRS, verify)))
    names = parts[0][2]
    if any(p[2] != names for p in parts[1:]):
        raise DataError("red and white Wine Quality files have different feature columns")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), names


def standardize(x: np.ndarray, train_idx: np.ndarray | Sequence[int],
                eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale features to zero mean, unit variance using the training rows' statistics only.

    Validation rows are transformed with the same mean and std but never contribute to them,
    so nothing about held-out data leaks into the inputs.

    Args:
        x: Features (M, F).
        train_idx: Integer indices (or a boolean mask) of the training rows.
        eps: Features whose training std is at most this are constant on the training rows;
            their std is taken as 1 so they are only centred (dividing by a clamped tiny
            std would blow up validation values that differ).

    Returns:
        ``(x_std, mean, std)``: x_std (M, F) float64; mean and std (F,) with the std actually
        used (population std, ddof=0, so training rows end up with std exactly 1).

    Raises:
        ValueError: If ``x`` is not 2-D or there are no training rows.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (M, F), got shape {x.shape}")
    rows = x[np.asarray(train_idx)]
    if len(rows) == 0:
        raise ValueError("standardize needs at least one training row")
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    std = np.where(std > eps, std, 1.0)
    return (x - mean) / std, mean, std


def quality_classes(quality: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Map the distinct quality scores present to contiguous class ids 0..C-1.

    Only scores that occur get a class (red wines have 3..8, so 6 classes), and ids follow
    the score order, so a larger id always means a better wine.

    Args:
        quality: Integer scores (M,).

    Returns:
        ``(labels, class_values)``: labels (M,) int64 in 0..C-1; class_values (C,) int64, the
        sorted distinct scores, with ``class_values[labels] == quality``.
    """
    quality = np.asarray(quality)
    values, labels = np.unique(quality, return_inverse=True)
    return labels.reshape(quality.shape).astype(np.int64), values.astype(np.int64)
