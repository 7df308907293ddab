"""Protocol run groups: a claim that needs a mechanism protocol (mixture, efficiency, Fourier)
names it with parameters, and `reproduce` runs it through :mod:`groklab.protocols`.

    [claims.runs.faster_mem]
    protocol = "mixture"
    params = { arch = "mlp", w_mem2 = 10.0, w_gen2 = 1.0 }

A claim's `quick` size runs the protocol's quick problem (`--quick` of its command), `full` its
full one; the size's and group's `set` are overrides of the protocol's underlying runs, and each
seed of the size runs the protocol once with ``train.seed=<seed>``. The protocols find their runs
again by config, so a second call trains nothing, and ``train_missing=False`` reads the store only
(a verdict is a function of the stored runs).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence, get_type_hints

import pandas as pd

from ..registry import ConfigError, Registry

PROTOCOLS: Registry[type] = Registry("protocol", "protocol")


@dataclass(frozen=True)
class ProtocolRun:
    """What one protocol call left in the store, read back: the runs it used, its figures."""

    run_ids: tuple[int, ...]
    data: dict = field(default_factory=dict)
    """The protocol's summary (mixture key steps, efficiency points and trends, Fourier summary)."""
    history: pd.DataFrame | None = None
    """The stored metrics of the run a check reads (the mixture run; the Fourier run)."""
    progress: pd.DataFrame | None = None
    """Fourier progress measures, one row per snapshot (step, restricted_loss, excluded_loss, gini, ...)."""
    new_runs: int = 0


def protocol(name: str) -> Callable[[type], type]:
    """Register a frozen dataclass of a protocol's parameters with `check(quick, overrides)` and
    `run(store, quick, overrides, train_missing) -> ProtocolRun`."""
    return PROTOCOLS.register(name)


def build_protocol(name: Any, params: Any, where: str):
    """A protocol's parameter object from its TOML `protocol` / `params`; errors name `where`."""
    if not isinstance(name, str) or name not in PROTOCOLS:
        raise ConfigError(f"{where}.protocol: {PROTOCOLS.unknown(str(name))}")
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params must be a table of the protocol's parameters")
    cls = PROTOCOLS.get(name)
    hints, valid = get_type_hints(cls), [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in params.items():
        if key not in valid:
            raise ConfigError(f"{where}.params: protocol {name!r} has no parameter {key!r}; valid: {', '.join(valid)}")
        kwargs[key] = _typed(value, hints[key], f"{where}.params.{key}")
    return cls(**kwargs)


def _typed(value: Any, hint: Any, where: str) -> Any:
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint == tuple[float, ...] and isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    name = "list of numbers" if hint == tuple[float, ...] else getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}={value!r} must be of type {name}")


def _new(reused: Sequence[bool]) -> int:
    return sum(not r for r in reused)


@protocol("mixture")
@dataclass(frozen=True)
class Mixture:
    """The mixture model (mystery study §5.1): C_gen, the fitting C_mem, and the mixture run."""

    arch: str = "mlp"
    w_mem2: float = 10.0
    w_gen2: float = 1.0

    def check(self, quick: bool, overrides: Sequence[str]) -> None:
        from ..protocols.base import base_config
        if not (self.w_mem2 > 0 and self.w_gen2 > 0):
            raise ConfigError(f"w_mem2={self.w_mem2!r}, w_gen2={self.w_gen2!r} must be positive")
        base_config(self.arch, quick, overrides)

    def run(self, store, quick: bool, overrides: Sequence[str], train_missing: bool) -> ProtocolRun:
        from ..protocols.mixture import run_mixture
        res = run_mixture(self.arch, self.w_mem2, self.w_gen2, store=store, quick=quick, overrides=overrides,
                          train_missing=train_missing)
        return ProtocolRun((res.c_mem.run_id, res.c_gen.run_id, res.mix.run_id), res.summary(), res.mix.metrics,
                           new_runs=_new(list(res.reused.values())))


@protocol("efficiency")
@dataclass(frozen=True)
class Efficiency:
    """Model efficiency (mystery study §5.2): C_mem and C_gen at each training fraction, read at
    training loss <= `loss`."""

    arch: str = "mlp"
    fractions: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7)
    loss: float = 0.05

    def check(self, quick: bool, overrides: Sequence[str]) -> None:
        from ..protocols.base import base_config
        if any(not 0 < f < 1 for f in self.fractions) or not self.loss > 0:
            raise ConfigError(f"fractions={list(self.fractions)} must lie in (0, 1) and loss={self.loss} be > 0")
        base_config(self.arch, quick, overrides)

    def run(self, store, quick: bool, overrides: Sequence[str], train_missing: bool) -> ProtocolRun:
        from ..protocols.efficiency import points_frame, run_efficiency, trend
        points = run_efficiency(self.arch, self.fractions, store=store, quick=quick, loss=self.loss,
                                overrides=overrides, train_missing=train_missing)
        data = {"points": points_frame(points).to_dict("records"),
                "trend": {k: trend(points, k) for k in ("C_mem", "C_gen")}, "loss": self.loss}
        return ProtocolRun(tuple(p.run_id for p in points), data, new_runs=_new([p.reused for p in points]))


@protocol("fourier")
@dataclass(frozen=True)
class Fourier:
    """Nanda et al.'s Fourier analysis over log-spaced snapshots of a run of preset `source`."""

    source: str = "nanda2023"
    points: int = 30

    def check(self, quick: bool, overrides: Sequence[str]) -> None:
        from ..config import load_config
        from ..protocols.base import QUICK
        if self.points < 2:
            raise ConfigError(f"points={self.points} must be at least 2")
        cfg = load_config(self.source, ["train.threads=1", *overrides])
        if quick:
            load_config(self.source, ["train.threads=1", *QUICK.get(cfg.model.name, []), *overrides])
        if cfg.data.task != "modular" or cfg.data.op != "x+y":
            raise ConfigError(f"source={self.source!r}: the Fourier analysis needs data.task='modular', data.op='x+y'")

    def run(self, store, quick: bool, overrides: Sequence[str], train_missing: bool) -> ProtocolRun:
        from ..protocols.fourier import run_fourier
        res = run_fourier(self.source, store=store, quick=quick, overrides=overrides, points=self.points,
                          train_missing=train_missing)
        data = {**res.summary(), "spectrum": res.spectrum}
        return ProtocolRun((res.run.run_id,), data, res.run.metrics, res.progress,
                           _new([bool(res.extra.get("reused", True))]))
