"""The training progress bar: one rate, labelled — the run's average steps per second.

tqdm's default line carries its own smoothed instantaneous rate (``12.3step/s``); next to an
average from the engine that made two different numbers both called steps/s. This bar drops
tqdm's rate from the format and shows the average once, with its name.
"""
from __future__ import annotations

import os
import sys
import time

# tqdm's default format minus `{rate_fmt}`; `remaining` is still estimated by tqdm.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def progress_bar(enabled: bool, total: int, start: int):
    """A tqdm bar on stderr from step `start` to `total` (None when not enabled)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    # A terminal that reports a 0 × 0 size (a new pseudo-terminal, `docker run -t`, some CI runners)
    # gets nothing at all from tqdm (no columns, and its one row counts as off-screen): give it a size.
    sized = _terminal_size() != (0, 0)
    return tqdm(total=total, initial=start, file=sys.stderr, unit="step", dynamic_ncols=sized,
                ncols=None if sized else 100, nrows=None if sized else 24, leave=True, bar_format=BAR_FORMAT)


def _terminal_size() -> tuple[int, int] | None:
    """(columns, lines) as stderr's terminal reports them; None when stderr is not a terminal."""
    try:
        return tuple(os.get_terminal_size(sys.stderr.fileno()))
    except (OSError, ValueError, AttributeError):  # not a terminal, closed, or a stream without a file
        return None


def update_bar(bar, step: int, last: list[dict], start: int, t0: float) -> None:
    """Advance to `step`; show mean train/val accuracy of the live members and the average rate
    since this process began at step `start` (time `t0`, from `time.perf_counter`)."""
    if bar is None:
        return
    bar.update(step - bar.n)
    live = [r for r in last if r]
    rate = (step - start) / max(1e-9, time.perf_counter() - t0)
    accs = ""
    if live:
        mean = lambda k: sum(r[k] for r in live) / len(live)  # noqa: E731
        accs = f"train acc {mean('train_acc'):.3f}, val acc {mean('val_acc'):.3f}, "
    bar.set_postfix_str(f"{accs}average {rate:.1f} steps/s", refresh=False)
