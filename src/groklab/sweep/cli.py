"""CLI commands `groklab sweep` and `groklab analyze` (registered by `groklab.cli._extend`).

    groklab sweep --list
    groklab sweep mlp-fraction --dry-run
    groklab sweep quickstart --grid data.frac_train=range:0.2:0.6:0.1 --seeds 2 --name qs-frac
    groklab sweep my-sweep.toml --backend ray --address auto
    groklab analyze mlp-fraction --kind efficiency -o eff.png
    groklab analyze mlp-lr-wd --kind phase --x optim.lr --y optim.weight_decay --json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ..config import ConfigError, parse_seeds


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- where runs train

def add_execution_args(sp, workers: str = "parallel workers (default: one per core; one per GPU)") -> None:
    """--backend, --address, --workers, --retries, --storage: where a command's runs train (the
    sweep, reproduce and protocol commands), read back by :func:`execution_options`."""
    from .backends import BACKENDS
    sp.add_argument("--backend", choices=BACKENDS.names(), default="local", help="where runs train (default local)")
    sp.add_argument("--address", help="Ray cluster address ('auto' joins a running cluster; default: start one)")
    sp.add_argument("--workers", type=int, help=workers)
    sp.add_argument("--retries", type=int, help="Ray: retries of a failed group (default 2)")
    sp.add_argument("--storage", help="Ray: a directory every node sees, for checkpoints while groups run, so a "
                                      "retried group resumes (default: the store, when the cluster is this host)")
    sp.add_argument("--no-reuse", action="store_true",
                    help="train every run, even one whose exact config the store holds finished outside the sweep "
                         "(a `groklab run`, another sweep); by default such a run is reused")


def execution_options(args) -> dict:
    """The flags of :func:`add_execution_args` as `run_sweeps` options; a count out of range is a
    `ConfigError` naming the flag."""
    for flag, low in (("workers", 1), ("retries", 0)):
        value = getattr(args, flag)
        if value is not None and value < low:
            raise ConfigError(f"--{flag}={value} must be at least {low}")
    return dict(backend=args.backend, address=args.address, workers=args.workers,
                max_retries=2 if args.retries is None else args.retries, storage=args.storage,
                reuse=not args.no_reuse)


# ---------------------------------------------------------------- groklab sweep

def cmd_sweep(args) -> int:
    from . import run_sweep
    from .spec import list_sweep_presets, load_spec, parse_grid

    if args.list:
        presets = list_sweep_presets()
        width = max(map(len, presets))
        for name, desc in presets.items():
            print(f"{name:<{width}}  {desc}")
        return 0
    if not args.spec:
        raise ConfigError("give a sweep preset, a sweep TOML file or a run preset with --grid (see --list)")
    execution = execution_options(args)
    if args.pack is not None and args.pack < 1:
        raise ConfigError(f"--pack={args.pack} must be at least 1")
    spec = load_spec(args.spec, grid=parse_grid(args.grid or []), overrides=args.set or [], name=args.name,
                     seeds=None if args.seeds is None else parse_seeds(args.seeds, "--seeds"), mode=args.mode)
    out = sys.stderr if args.json else sys.stdout
    state = {"done": 0, "total": 0}

    def on_plan(plan) -> None:
        state["total"] = len(plan.groups)
        print(plan.describe(spec.swept, args.backend, detail=args.dry_run), file=out, flush=True)

    def on_done(o) -> None:
        state["done"] += 1
        head = f"[{state['done']:>{len(str(state['total']))}}/{state['total']}]"
        if o.error and not o.statuses:
            print(f"{head} group of {len(o.group)} FAILED: {o.error}", file=out, flush=True)
            return
        for cfg, status, s in zip(o.group.cfgs, o.statuses, o.summaries or [{}] * len(o.statuses)):
            acc = s.get("val_acc")
            print(f"{head} {cfg.name}: {status}" + (f", val acc {acc:.3f}" if isinstance(acc, float) else "")
                  + f", val 99% at {_fmt(s.get('step_val_99'))}" + (f" — {o.error}" if o.error else "")
                  + f" ({o.seconds:.0f} s)", file=out, flush=True)

    # SIGTERM (a batch scheduler, `timeout`, `kill`) and SIGHUP (a closed terminal) stop as cleanly as
    # Ctrl-C: `groklab.cli.main` turns them into KeyboardInterrupt and remembers which, for the exit code.
    try:
        report = run_sweep(spec, store=args.store, pack=args.pack, dry_run=args.dry_run, on_plan=on_plan,
                           on_done=on_done, **execution)
    except KeyboardInterrupt:
        from ..cli import how_stopped, tell
        how, code = how_stopped()
        tell(f"groklab: sweep {spec.name} {how}; runs were left resumable — run the same command again to continue")
        return code
    plan = report.plan
    if args.json:
        print(json.dumps(_json_report(report)))
    elif not args.dry_run:
        counts: dict[str, int] = {}
        for o in report.outcomes:
            for s in (o.statuses or ["failed"] * len(o.group)):
                counts[s] = counts.get(s, 0) + 1
        what = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to train"
        print(f"sweep {plan.sweep}: {what} in {report.seconds:.0f} s ({len(plan.done)} were already done); "
              f"`groklab ls --sweep {plan.sweep}`, `groklab analyze {plan.sweep} --kind efficiency`")
    for o in report.failed:
        print(f"groklab: group {o.group_id or '?'} ({', '.join(c.name for c in o.group.cfgs)}): "
              f"{o.error or ', '.join(o.statuses)}", file=sys.stderr)
    return 1 if report.failed else 0


def _json_report(report) -> dict:
    plan = report.plan
    return {
        "sweep": plan.sweep, "runs": plan.n_runs, "done": len(plan.done), "reused": [r["id"] for r in plan.reused],
        "resume": plan.n_resume,
        "new": plan.n_new, "groups": [len(g) for g in plan.groups], "pack": plan.pack, "workers": plan.workers,
        "threads": plan.threads, "device": plan.resources.kind, "seconds": round(report.seconds, 3),
        "trained": [{"run_id": i, "name": c.name, "status": s, "group": o.group_id, "error": o.error,
                     "val_acc": _clean(m.get("val_acc")), "step_val_99": m.get("step_val_99")}
                    for o in report.outcomes
                    for i, c, s, m in zip(o.run_ids or [None] * len(o.group), o.group.cfgs,
                                          o.statuses or ["failed"] * len(o.group),
                                          o.summaries or [{}] * len(o.group))],
    }


# ---------------------------------------------------------------- groklab analyze

KINDS = ("efficiency", "critical", "phase")


def cmd_analyze(args) -> int:
    import pandas as pd

    from ..store import Store
    from .table import runs_table

    if not 0 < args.threshold <= 1:
        raise ConfigError(f"--threshold={args.threshold} must be in (0, 1]")
    if args.output and not str(args.output).endswith((".png", ".svg")):
        raise ConfigError(f"-o {args.output!r} must end in .png or .svg")
    sweeps = list(dict.fromkeys(args.sweep))
    if len(sweeps) > 1 and (args.kind != "efficiency" or args.by):
        raise ConfigError(f"several sweeps ({', '.join(sweeps)}) are compared as data-efficiency curves, one per "
                          "sweep: --kind efficiency, without --by" + (f" (not --kind {args.kind})"
                                                                     if args.kind != "efficiency" else ""))
    x = args.x or ("optim.lr" if args.kind == "phase" else "data.frac_train")
    y = args.y or ("optim.weight_decay" if args.kind == "phase" else None)
    fields = [f for f in (x, y, args.by) if f and f != "n_train"]
    store = Store(args.store)
    tables = [runs_table(store, name, fields, threshold=args.threshold, include_incomplete=args.all)
              for name in sweeps]
    for name, t in zip(sweeps, tables):
        if not len(t) or "final_val_acc" not in t:
            raise ConfigError(f"sweep {name!r} has no finished runs with metrics yet "
                              f"({t.attrs.get('excluded', 0)} incomplete; --all includes them)")
    excluded = sum(t.attrs.get("excluded", 0) for t in tables)
    if len(tables) == 1:
        table = tables[0]
    else:  # one curve per sweep: the sweep's name is the curve's key
        table = pd.concat([t.assign(sweep=name) for name, t in zip(sweeps, tables)], ignore_index=True)
        args = argparse.Namespace(**{**vars(args), "by": "sweep"})
    note = f" ({excluded} incomplete run(s) left out; --all includes them)" if excluded else ""
    title = f"{sweeps[0] if len(sweeps) == 1 else f'{len(sweeps)} sweeps'} ({len(table)} runs)"
    result = {"efficiency": _efficiency, "critical": _critical, "phase": _phase}[args.kind](
        table, x, y, args, title)
    if args.json:
        print(json.dumps({"sweep": sweeps[0] if len(sweeps) == 1 else sweeps, "kind": args.kind, "runs": len(table),
                          "excluded": excluded, **result}, default=_clean))
    elif note:
        print(note.strip(), file=sys.stderr)
    if args.output:
        if not args.json:
            print(args.output)
    return 0


def _records(df) -> list[dict]:
    return [{k: _clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def _efficiency(table, x, y, args, title) -> dict:
    from ..analysis import data_efficiency, plot_data_efficiency

    # runs_table computed t_val99 at args.threshold
    eff = data_efficiency(table, x=x, threshold_col="t_val99", group=args.by)
    if args.output:
        plot_data_efficiency(eff, args.output, title=f"{title}: steps to {args.threshold:.0%} val acc")
    if not args.json:
        keys = ([args.by] if args.by else []) + [x]
        records = eff.to_dict("records")
        width = {k: max([18, len(k)] + [len(_fmt(r[k])) for r in records]) for k in keys}
        print(f"{'  '.join(f'{k:>{width[k]}}' for k in keys)}  {'runs':>4} {'gen':>4} {'median steps':>13} "
              f"{'mean (gen.)':>12}")
        for r in records:
            med = ("> " if r["median_is_lower_bound"] else "") + _fmt(r["median"])
            print(f"{'  '.join(f'{_fmt(r[k]):>{width[k]}}' for k in keys)}  {r['n_total']:>4} "
                  f"{r['n_total'] - r['n_censored']:>4} {med:>13} {_fmt(r['mean_generalized']):>12}")
    return {"x": x, "threshold": args.threshold, "table": _records(eff)}


def _critical(table, x, y, args, title) -> dict:
    from ..analysis import critical_fraction, plot_critical

    crit = critical_fraction(table, x=x)
    if args.output:
        plot_critical(table, crit, args.output, x=x, title=title)
    per_x = table.groupby(x)["final_val_acc"].agg(["mean", "min", "max", "count"]).reset_index()
    scale = None
    if x == "data.frac_train" and "n_train" in table and table["n_train"].notna().all():
        # n_train / frac_train is the task's example count, the same for every run of the sweep
        totals = table["n_train"] / table[x]
        scale = round(float(totals.median())) if totals.max() - totals.min() <= 0.01 * totals.median() else None
    if not args.json:
        print(f"{x:>18} {'runs':>4} {'mean val acc':>12} {'min':>6} {'max':>6}")
        for r in per_x.to_dict("records"):
            print(f"{_fmt(r[x]):>18} {r['count']:>4} {r['mean']:>12.3f} {r['min']:>6.3f} {r['max']:>6.3f}")
        if crit.d_crit is None:
            print(f"D_crit: not found (final val acc never crosses {crit.level} inside the swept range)")
        else:
            size = f" ≈ {crit.d_crit * scale:.0f} of {scale:.0f} examples" if scale else ""
            width = f", width {crit.width:.3g}" if crit.width else ""
            print(f"D_crit = {crit.d_crit:.4g}{size} ({crit.method}{width}; level {crit.level})")
        band = crit.semi_grok_band
        print("semi-grokking: " + (f"{x} in [{band[0]:g}, {band[1]:g}] has middling mean val acc" if band
                                   else "no fraction with middling mean val acc"))
    return {"x": x, "d_crit": crit.d_crit, "d_crit_examples": crit.d_crit * scale if scale and crit.d_crit else None,
            "method": crit.method, "width": crit.width, "level": crit.level,
            "semi_grok_band": list(crit.semi_grok_band) if crit.semi_grok_band else None,
            "semi_grok_fractions": crit.semi_grok_fractions, "per_x": _records(per_x)}


def _phase(table, x, y, args, title) -> dict:
    from ..analysis import phase_diagram, plot_phase_diagram

    for f in (x, y):
        if table[f].nunique() < 2:
            raise ConfigError(f"--kind phase needs two swept fields; {f} takes one value in {args.sweep[0]!r} "
                              f"(swept: {', '.join(table.attrs['swept']) or 'none'})")
    pd_ = phase_diagram(table, x=x, y=y)
    if args.output:
        plot_phase_diagram(pd_, args.output, title=title)
    if not args.json:
        m = pd_.majority
        print(f"majority phase; rows {y}, columns {x}")
        print(f"{'':>10} " + " ".join(f"{_fmt(c):>13}" for c in m.columns))
        for yv, row in m.iterrows():
            print(f"{_fmt(yv):>10} " + " ".join(f"{(v or '-'):>13}" for v in row))
    return {"x": x, "y": y, "cells": _records(pd_.fractions)}


# ---------------------------------------------------------------- registration

def register(add) -> None:
    """Add `sweep` and `analyze` to the groklab CLI (`add` is cli.build_parser's helper)."""
    sp = add("sweep", cmd_sweep, "plan and run a sweep (resumes: finished runs are skipped)")
    sp.add_argument("spec", nargs="?", help="sweep preset (see --list), sweep TOML file, or run preset/file with --grid")
    sp.add_argument("--grid", action="append", metavar="FIELD=VALUES",
                    help="an axis: field=v1,v2 | field=range:a:b:step | field=logrange:a:b:n (repeatable)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base field, e.g. train.steps=2000")
    sp.add_argument("--seeds", help="N (seeds 0..N-1) or a,b,c: crossed with every point")
    sp.add_argument("--mode", choices=("product", "zip"), help="combine axes as a product (default) or zipped")
    sp.add_argument("--name", help="sweep name (default: the spec's); re-running a name resumes it")
    add_execution_args(sp)
    sp.add_argument("--pack", type=int, help="max runs per vectorized ensemble (default on CPU: the runs dealt evenly over the workers, at most 8 per ensemble; on GPU: by memory)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan and its groups, train nothing")
    sp.add_argument("--list", action="store_true", help="list sweep presets")
    sp.add_argument("--json", action="store_true", help="print a JSON report at the end (progress on stderr)")

    sp = add("analyze", cmd_analyze, "analyse a sweep: data efficiency, critical data size, phase diagram")
    sp.add_argument("sweep", nargs="+", help="sweep name (see `groklab ls`); several: their data-efficiency "
                                             "curves in one figure, one per sweep")
    sp.add_argument("--kind", choices=KINDS, default="efficiency", help="which analysis (default efficiency)")
    sp.add_argument("--x", help="swept field on the x axis (default data.frac_train; phase: optim.lr)")
    sp.add_argument("--y", help="phase: field on the y axis (default optim.weight_decay)")
    sp.add_argument("--by", help="efficiency: one curve per value of this field")
    sp.add_argument("--threshold", type=float, default=0.99, help="accuracy level of 'grokked' (default 0.99)")
    sp.add_argument("--all", action="store_true", help="include runs that are not finished")
    sp.add_argument("-o", "--output", help="write the figure (.png or .svg)")
    sp.add_argument("--json", action="store_true", help="print the analysis as JSON")
