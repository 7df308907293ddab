"""Optional experiment trackers as training hooks: TensorBoard and Weights & Biases.

Off by default, imported only when enabled, and never instead of the store (which is always
written). Each member of an ensemble becomes its own tracker run, named after its config.

    groklab run quickstart --tensorboard runs/tb          # then: tensorboard --logdir runs/tb
    groklab run mlp-add97 --seeds 4 --wandb               # offline: ./wandb/offline-run-*, `wandb sync` later

    from groklab.report.trackers import TensorBoardTracker
    with TensorBoardTracker("runs/tb") as tb:
        train(cfgs, hooks=[tb])                           # a hook: tb(step, state) at every evaluation
"""
from __future__ import annotations

import json
import re
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..registry import ConfigError

# TensorBoard groups scalars by the prefix before "/": train and validation share a chart.
TB_TAGS = {"train_acc": "accuracy/train", "val_acc": "accuracy/val", "train_loss": "loss/train",
           "val_loss": "loss/val"}


def _safe(name: str) -> str:
    """A run name as one path component (names are user strings: no '/', '..', or oddities)."""
    out = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name).strip("._") or "run"
    return out[:100]


def _member_names(cfgs) -> list[str]:
    names = [c.name for c in cfgs]
    if len(set(names)) < len(names):  # members must not share a tracker run
        names = [f"{n}-m{i}" for i, n in enumerate(names)]
    return names


def _numbers(rec: dict) -> dict[str, float]:
    return {k: float(v) for k, v in rec.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardTracker:
    """Scalars per member under ``logdir/<run name>`` (``accuracy/train``, ``accuracy/val``,
    ``loss/*``, ``param_norm``, ``lr``, ...) and the full config as text (``config``)."""

    def __init__(self, logdir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or pip install 'groklab[trackers]')") from None
        self._writer_cls = SummaryWriter
        self.logdir = Path(logdir)
        self.writers: list[Any] = []
        self.dirs: list[Path] = []

    def _open(self, cfgs) -> None:
        from ..config import to_dict

        for cfg, name in zip(cfgs, _member_names(cfgs)):
            d, k = self.logdir / _safe(name), 1
            while d.exists():  # a new directory per run: TensorBoard would merge event files
                k += 1
                d = self.logdir / f"{_safe(name)}-{k}"
            w = self._writer_cls(log_dir=str(d))
            # four-space indent: TensorBoard renders text as Markdown, this keeps it a code block
            text = "\n".join("    " + line for line in json.dumps(to_dict(cfg), indent=2).splitlines())
            w.add_text("config", text, 0)
            self.writers.append(w)
            self.dirs.append(d)

    def __call__(self, step: int, state) -> None:
        if not self.writers:
            self._open(state.cfgs)
        for w, rec in zip(self.writers, state.last):
            for key, value in _numbers(rec).items():  # a stopped member's record is empty
                w.add_scalar(TB_TAGS.get(key, key), value, step)
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()

    def __enter__(self) -> "TensorBoardTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WandbTracker:
    """One W&B run per member (``mode="offline"`` by default: no account, nothing sent; upload
    later with ``wandb sync``). An ensemble's members share a W&B group. Closing it tears down
    wandb's service so the logs are on disk when training returns: W&B runs of your own in the same
    process are finished with it."""

    def __init__(self, project: str = "groklab", mode: str = "offline", dir: str | Path | None = None):
        if mode not in ("offline", "online"):
            raise ConfigError(f"--wandb={mode!r} must be offline or online")
        try:
            import wandb
        except ImportError:
            raise ConfigError("--wandb needs the wandb package: pip install wandb "
                              "(or pip install 'groklab[trackers]')") from None
        self._wandb = wandb
        self.project, self.mode, self.dir = project, mode, Path(dir) if dir else None
        self.runs: list[Any] = []

    def _open(self, cfgs) -> None:
        from ..config import to_dict

        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)
        group = f"{cfgs[0].name}-{uuid.uuid4().hex[:6]}" if len(cfgs) > 1 else None
        settings = self._wandb.Settings(console="off", silent=True, x_disable_stats=True)
        for cfg, name in zip(cfgs, _member_names(cfgs)):
            self.runs.append(self._wandb.init(
                project=self.project, name=name, group=group, config=to_dict(cfg), mode=self.mode,
                dir=str(self.dir) if self.dir else None, reinit="create_new", settings=settings))

    def __call__(self, step: int, state) -> None:
        if not self.runs:
            self._open(state.cfgs)
        for run, rec in zip(self.runs, state.last):
            values = _numbers(rec)
            if values:
                run.log(values, step=step)

    def close(self) -> None:
        for run in self.runs:
            run.finish()
        if self.runs:
            # finish() can return before wandb's service process has written the offline log (seen
            # as a header-only .wandb file under the parallel test suite); teardown waits for it.
            self._wandb.teardown()

    def __enter__(self) -> "WandbTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def add_tracker_args(parser) -> None:
    """`--tensorboard DIR`, `--wandb [offline|online]`, `--wandb-project`, `--wandb-dir` on a command."""
    parser.add_argument("--tensorboard", metavar="DIR", help="also log to TensorBoard under DIR (one run per member)")
    parser.add_argument("--wandb", nargs="?", const="offline", choices=("offline", "online"),
                        help="also log to Weights & Biases (default offline: no account needed)")
    parser.add_argument("--wandb-project", default="groklab", help="W&B project (default groklab)")
    parser.add_argument("--wandb-dir", help="where W&B writes its run folders (default ./wandb)")


@contextmanager
def tracker_hooks(args) -> Iterator[list]:
    """The hooks the tracker flags ask for, closed when training ends (however it ends)."""
    with ExitStack() as stack:
        hooks: list = []
        if getattr(args, "tensorboard", None):
            hooks.append(stack.enter_context(TensorBoardTracker(args.tensorboard)))
        if getattr(args, "wandb", None):
            hooks.append(stack.enter_context(WandbTracker(args.wandb_project, args.wandb, args.wandb_dir)))
        yield hooks
