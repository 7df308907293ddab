"""Let the end of a run land whole: a stop that arrives while it is being written waits for it.

A run's last checkpoint and its `finished` rows are written after the training loop; an interrupt
there (Ctrl-C, or SIGHUP when the terminal closes just as the run ends and its progress bar writes
its last line) skipped them and left the rows `running`, shown as `lost` though the work was done.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

# Ctrl-C, `timeout`/schedulers, a closed terminal, and the sweep pool's stop (SIGUSR1): the signals
# groklab turns into a stop. POSIX names only where they exist.
_STOPS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1") if hasattr(signal, name)]


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold the stop signals that have a Python handler while the block runs, then deliver the
    first one held to that handler (which usually raises KeyboardInterrupt, after the block).
    Ignored and default-action signals are left alone; off the main thread (which cannot set
    handlers, and which signals never reach) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    handled = [s for s in _STOPS if callable(signal.getsignal(s))]
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in handled}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            # Called here, not re-sent: where the signal is blocked (a Ray worker blocks SIGINT and
            # cancels a task by calling the handler, `_thread.interrupt_main`) a re-sent one would
            # wait forever and the stop would be lost.
            previous[held[0]](held[0], None)
