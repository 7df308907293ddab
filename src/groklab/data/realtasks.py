"""Real-data tasks (the task-learning study, following Omnigrok): MNIST and Wine Quality.

The files are parsed and checksummed by `real.py`; here they become :class:`TaskData` features
with seeded training subsets. Data directory: `data.data_dir`, else $GROKLAB_DATA, else ./data.
"""
from __future__ import annotations

import torch

from ..config import DataCfg
from ..registry import ConfigError
from .tasks import TASKS, TaskData

MNIST_TRAIN, MNIST_TEST = 60_000, 10_000


def _subset(cfg: DataCfg, n_total: int, n_pool: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded training subset of the first `n_pool` examples (default all); validation is the
    rest of them, or every example past the pool when one is given (an official test split)."""
    from .real import subset_split

    n_pool = n_total if n_pool is None else n_pool
    if cfg.n_train >= n_pool:
        raise ConfigError(f"data.n_train={cfg.n_train} must be below the {n_pool} training examples of "
                          f"data.task={cfg.task!r}")
    train, val = subset_split(n_pool, cfg.n_train, cfg.split_seed)
    if n_pool < n_total:
        val = range(n_pool, n_total)
    train, val = torch.as_tensor(train, dtype=torch.long), torch.as_tensor(val, dtype=torch.long)
    return train, (val[: cfg.n_val] if cfg.n_val else val)


def _load(fn, *args, **kw):
    from .real import DataError

    try:
        return fn(*args, **kw)
    except DataError as e:  # bad user input (missing or corrupt files): one clear line, exit 2
        raise ConfigError(str(e)) from None


@TASKS.register("mnist", doc="MNIST digits: a seeded training subset (default 1 000); validation: the test images")
class MnistTask:
    inputs = "features"

    def build(self, cfg: DataCfg) -> TaskData:
        from .real import load_mnist

        x, y, _which = _load(load_mnist, cfg.data_dir or None)
        return TaskData(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long), n_out=10,
                        inputs="features")

    def split(self, cfg: DataCfg, data: TaskData):
        # With the full files (60 000 + 10 000), train on a subset of the training images and
        # validate on the official test images, as Omnigrok did; with the test split alone,
        # validation is every test image not drawn for training.
        full = len(data.y) == MNIST_TRAIN + MNIST_TEST
        return _subset(cfg, len(data.y), MNIST_TRAIN if full else None)


@TASKS.register("wine", doc="Wine Quality (red, white or both): 11 standardized features, quality as classes or regression")
class WineTask:
    inputs = "features"
    # Standardization uses the training rows, so ensemble members must share the split.
    shared_fields = ("data.split_seed",)

    def build(self, cfg: DataCfg) -> TaskData:
        from .real import load_wine, quality_classes, standardize

        x, quality, _names = _load(load_wine, cfg.data_dir or None, colour=cfg.colour)
        train, _ = _subset(cfg, len(quality))
        x_std, _, _ = standardize(x, train.numpy())
        x_t = torch.as_tensor(x_std, dtype=torch.float32)
        if cfg.target == "regression":
            return TaskData(x_t, torch.as_tensor(quality, dtype=torch.float32), n_out=1, inputs="features",
                            regression=True)
        labels, values = quality_classes(quality)
        return TaskData(x_t, torch.as_tensor(labels, dtype=torch.long), n_out=len(values), inputs="features")

    def split(self, cfg: DataCfg, data: TaskData):
        return _subset(cfg, len(data.y))
