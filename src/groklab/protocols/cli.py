"""CLI commands `groklab mixture`, `groklab efficiency`, `groklab fourier` (registered by `groklab.cli._extend`).

    groklab mixture --arch mlp --w-mem2 10 --w-gen2 1 -o mixture.png --quick
    groklab efficiency --arch mlp --fractions 0.4,0.5,0.6,0.7 -o eff.png --quick
    groklab fourier nanda2023 --quick -o fourier.png
    groklab fourier 12 -o fourier.png --json

Every run they need goes to the store and is reused when asked again. The runs train first as
sweep groups over `--workers` (default: one per core), stage by stage (`protocols.stages`); the
protocol then finds them all in the store.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..config import ConfigError
from .base import ARCH_PRESETS, parse_floats


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _output(path: str | None, default: str) -> str:
    out = path or default
    if not str(out).endswith((".png", ".svg", ".pdf")):
        raise ConfigError(f"-o {out!r} must end in .png, .svg or .pdf")
    return out


def _positive(value: float, flag: str) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{flag}={value!r} must be a positive number")
    return value


def _staged(args, name: str, store, call):
    """`call(train_missing=True)` once the runs it needs trained as sweep groups over the workers."""
    import sys

    from ..sweep.cli import execution_options
    from .stages import train_stages

    train_stages([(name, call)], store, **execution_options(args),
                 on_done=lambda outcome: None if args.quiet else print(outcome.line(), file=sys.stderr))
    return call(True)


def cmd_mixture(args) -> int:
    from ..analysis.mech_plots import plot_mixture
    from ..store import Store
    from .mixture import run_mixture

    out = _output(args.output, "mixture.png")
    w_mem2, w_gen2 = _positive(args.w_mem2, "--w-mem2"), _positive(args.w_gen2, "--w-gen2")
    store = Store(args.store)
    res = _staged(args, f"mixture-{args.arch}", store, lambda train_missing: run_mixture(
        args.arch, w_mem2, w_gen2, store=store, quick=args.quick, overrides=args.set or [],
        mix_overrides=args.mix_set or [], progress=not args.quiet, train_missing=train_missing))
    plot_mixture(res.mix.metrics, path=out,
                 title=f"mixture of C_mem (run {res.c_mem.run_id}) and C_gen (run {res.c_gen.run_id}), "
                       f"w_m2={w_mem2:g}, w_g2={w_gen2:g} (run {res.mix.run_id})")
    s = {**res.summary(), "figure": out}
    if args.json:
        print(json.dumps(_clean(s)))
    else:
        f = s["final"]
        print(f"mixture run {s['mixture']} (C_mem {s['c_mem']}, C_gen {s['c_gen']}): train loss < {s['loss_threshold']} "
              f"at step {s['step_train_loss_low']}, val loss < {s['loss_threshold']} at step {s['step_val_loss_low']}; "
              f"val loss peak {s['val_loss_peak']:.3g} at step {s['step_val_loss_peak']}; final val acc "
              f"{f['val_acc']:.3f}, w_mem {f['w_mem']:.3g}, w_gen {f['w_gen']:.3g} -> {out}")
    return 0


def cmd_efficiency(args) -> int:
    from ..analysis.mech_plots import plot_efficiency
    from ..store import Store
    from .efficiency import MEM_OVERRIDES, points_frame, run_efficiency, trend

    out = _output(args.output, "efficiency.png")
    fractions = parse_floats(args.fractions, "--fractions", 0.0, 1.0)
    loss = _positive(args.loss, "--loss")
    mem_set = args.mem_set if args.mem_set is not None else list(MEM_OVERRIDES)
    store = Store(args.store)
    points = _staged(args, f"efficiency-{args.arch}", store, lambda train_missing: run_efficiency(
        args.arch, fractions, store=store, quick=args.quick, loss=loss, overrides=args.set or [],
        mem_overrides=mem_set, progress=not args.quiet, train_missing=train_missing))
    frame = points_frame(points)
    plot_efficiency(frame, path=out, title=f"model efficiency, {args.arch}: read at train loss <= {loss:g}")
    trends = {k: trend(points, k) for k in ("C_mem", "C_gen")}
    if args.json:
        print(json.dumps(_clean({"points": frame.to_dict("records"), "trend": trends, "figure": out})))
        return 0
    print(f"{'kind':<6} {'frac':>5} {'n':>6} {'run':>5} {'step':>6} {'norm':>8} {'logit':>7} {'eff':>7}  reached")
    for p in points:
        print(f"{p.kind:<6} {p.frac_train:>5.2f} {p.n_train:>6} {p.run_id:>5} {p.step:>6} {p.param_norm:>8.2f} "
              f"{p.correct_logit:>7.2f} {p.efficiency:>7.3f}  {p.reached}")
    for t in trends.values():
        if "norm_ratio" in t:
            print(f"{t['kind']}: norm {t['norm_small']:.2f} at n={t['n_small']} -> {t['norm_large']:.2f} at "
                  f"n={t['n_large']} (x{t['norm_ratio']:.3f})")
    print(out)
    return 0


def cmd_fourier(args) -> int:
    from ..analysis.mech_plots import plot_fourier
    from ..store import Store
    from .fourier import run_fourier

    out = _output(args.output, "fourier.png")
    if args.points < 2:
        raise ConfigError(f"--points={args.points} must be at least 2")
    store = Store(args.store)
    res = _staged(args, "fourier", store, lambda train_missing: run_fourier(
        args.run, store=store, quick=args.quick, overrides=args.set or [], points=args.points,
        progress=not args.quiet, train_missing=train_missing))
    plot_fourier(res.spectrum, res.key_freqs, res.progress, path=out,
                 title=f"run {res.run.run_id}: {res.run.name} (x+y mod {res.p}), {res.snapshots} snapshots")
    s = {**res.summary(), "figure": out}
    if args.json:
        print(json.dumps(_clean({**s, "spectrum": res.spectrum, "progress": res.progress.to_dict("records")})))
        return 0
    print(f"run {s['run_id']} (x+y mod {s['p']}): key frequencies {s['key_freqs']}; Gini {s['gini_first']:.3f} -> "
          f"{s['gini_last']:.3f}; restricted loss {s['restricted_loss_last']:.3g}, excluded loss "
          f"{s['excluded_loss_last']:.3g} at the last snapshot; train 99% at {s['step_train_99']}, val 99% at "
          f"{s['step_val_99']} -> {out}")
    return 0


def register(add) -> None:
    from ..sweep.cli import add_execution_args

    def common(sp, what: str):
        sp.add_argument("-o", "--output", help=f"figure file (.png, .svg or .pdf; default {what}.png)")
        sp.add_argument("--json", action="store_true", help="print the measured figures as JSON")
        sp.add_argument("--quick", action="store_true", help="small problem: minutes on 2 CPU cores")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of the underlying runs")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        add_execution_args(sp, workers="parallel workers for the runs (default: one per core)")

    sp = add("mixture", cmd_mixture, "mixture model w_mem·C_mem + w_gen·C_gen (mystery study §5.1, fig. 5)")
    sp.add_argument("--arch", default="mlp", choices=list(ARCH_PRESETS), help="architecture of C_mem and C_gen")
    sp.add_argument("--w-mem2", type=float, default=10.0, help="initial w_m2 (speed of C_mem; default 10)")
    sp.add_argument("--w-gen2", type=float, default=1.0, help="initial w_g2 (speed of C_gen; default 1)")
    sp.add_argument("--mix-set", action="append", metavar="KEY=VALUE", help="override a field of the mixture run")
    common(sp, "mixture")

    sp = add("efficiency", cmd_efficiency, "parameter norm of C_mem and C_gen vs training-set size (§5.2, fig. 6)")
    sp.add_argument("--arch", default="mlp", choices=list(ARCH_PRESETS), help="architecture of C_mem and C_gen")
    sp.add_argument("--fractions", default="0.4,0.5,0.6,0.7", help="training fractions, comma-separated")
    sp.add_argument("--loss", type=float, default=0.05, help="read each run at this training loss (default 0.05)")
    sp.add_argument("--mem-set", action="append", metavar="KEY=VALUE",
                    help="override a field of the C_mem runs only (default optim.weight_decay=0.1)")
    common(sp, "efficiency")

    sp = add("fourier", cmd_fourier, "Fourier spectrum, key frequencies and progress measures (Nanda et al.)")
    sp.add_argument("run", help="stored run id, or a preset / TOML file to train (or reuse) with snapshots")
    sp.add_argument("--points", type=int, default=30, help="log-spaced snapshots when training (default 30)")
    common(sp, "fourier")
