"""The `groklab` command line.

    groklab run quickstart
    groklab run power2022-add97 --set train.steps=20000 --set optim.weight_decay=0.1
    groklab run mlp-add97 --seeds 4 --json        # four seeds as one vectorized ensemble
    groklab ls; groklab show 3 --json; groklab plot 3 -o curve.png; groklab resume 3
    groklab extend 3 --steps 50000                # train a finished run on, as a new run

Bad input prints one line on stderr and exits with code 2, before anything is written. SIGTERM
(`timeout`, Slurm, Kubernetes, Ray) and SIGHUP (a closed terminal or ssh session; not under
`nohup`, which ignores it) stop a run like Ctrl-C: its rows are marked `stopped` at the last
checkpoint and the exit code is 128 + the signal (143, 129; 130 for Ctrl-C). Output cut short by a
closed pipe (`groklab show 3 --json | head -c 100`) ends quietly.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from .registry import ConfigError

JSON_KEYS = ("run_id", "status", "steps", "train_acc", "val_acc", "train_loss", "val_loss", "step_train_99",
             "step_val_99", "wall_seconds", "steps_per_second")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        self.exit(2, f"groklab: error: {message}\n")


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _cell(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _json_summary(rec) -> dict:
    s = rec.summary
    return {k: (rec.run_id if k == "run_id" else rec.status if k == "status" else _clean(s.get(k))) for k in JSON_KEYS}


def _print_records(records, as_json: bool, ensemble: bool) -> None:
    if as_json:
        out = [_json_summary(r) for r in records]
        print(json.dumps(out if ensemble else out[0]))
        return
    for r in records:
        s = r.summary
        print(f"run {r.run_id} {r.name}: {r.status} after {s.get('steps')} steps — train acc {s.get('train_acc'):.3f}, "
              f"val acc {s.get('val_acc'):.3f}; train 99% at {s.get('step_train_99')}, val 99% at "
              f"{s.get('step_val_99')} ({s.get('wall_seconds')} s, {s.get('steps_per_second')} steps/s)")


def cmd_run(args) -> int:
    from .api import expand_seeds, load_run
    from .config import load_config, parse_seeds
    from .store import Store
    from .train import check_ensemble, train

    cfg = load_config(args.source, args.set or [])
    seeds = list(parse_seeds(args.seeds, "--seeds")) if args.seeds else None
    cfgs = expand_seeds(cfg, seeds)
    check_ensemble(cfgs)  # validated before the store is touched
    store = Store(args.store)
    from .report.trackers import tracker_hooks
    with tracker_hooks(args) as hooks:  # TensorBoard / W&B only when asked for
        results = train(cfgs, store=store, progress=not args.quiet, hooks=hooks)
    _print_records([load_run(r.run_id, store) for r in results], args.json, bool(seeds))
    return 0


def cmd_resume(args) -> int:
    from .api import resume
    from .store import Store

    records = resume(args.run, Store(args.store), progress=not args.quiet, device=args.device)
    _print_records(records, args.json, len(records) > 1)
    return 0


def cmd_extend(args) -> int:
    from .api import extend
    from .store import Store

    records = extend(args.run, args.steps, Store(args.store), progress=not args.quiet, device=args.device,
                     past_early_stop=args.no_early_stop)
    _print_records(records, args.json, len(records) > 1)
    return 0


def cmd_merge(args) -> int:
    from .merge import merge
    from .store import Store

    store = Store(args.store)
    rep = merge(args.source, store, sweep=args.sweep)
    if args.json:
        print(json.dumps({"source": rep.source, "store": str(store.paths.root), "groups": rep.groups,
                          "merged": [{"source": a, "here": b} for a, b in rep.merged.items()],
                          "refreshed": [{"source": a, "here": b} for a, b in rep.refreshed.items()],
                          "skipped": rep.skipped}))
        return 0
    ids = sorted(rep.merged.values())
    span = f" (here {ids[0]}-{ids[-1]})" if ids else ""
    print(f"merged {len(ids)} run(s) in {rep.groups} group(s) from {rep.source} into {store.paths.root}{span}")
    if rep.refreshed:
        print(f"refreshed {len(rep.refreshed)} run(s) in {rep.refreshed_groups} group(s) that trained on there "
              f"(here {', '.join(map(str, sorted(rep.refreshed.values())))})")
    for gid, why in rep.skipped.items():
        print(f"  group {gid} left out: {why}")
    return 0


def _shown_status(row: dict) -> str:
    """`lost` for a `running` row whose process is gone (killed, host rebooted)."""
    from .store import liveness

    return "lost" if liveness(row) is False else row["status"]


def cmd_ls(args) -> int:
    from .store import Store, liveness

    store = Store(args.store)
    if not store.exists():  # most often a mistyped --store: say so rather than list nothing
        raise ConfigError(f"no store at {str(store.paths.root)!r} (no {store.paths.db.name} there); "
                          "`groklab run` creates one; --store DIR or $GROKLAB_STORE chooses it")
    rows = store.list(sweep=args.sweep)
    if args.json:
        print(json.dumps([{"run_id": r["id"], "name": r["name"], "status": r["status"], "alive": liveness(r),
                           "created": r["created"], "sweep": r["sweep"], "trained_in": r.get("trained_in", r["sweep"]),
                           "parent": r["parent"], **{k: _clean(r["summary"].get(k)) for k in JSON_KEYS[2:]}}
                          for r in rows]))
        return 0
    print(f"{'id':>4}  {'name':<28} {'status':<9} {'steps':>7} {'train':>6} {'val':>6} {'step_train_99':>13} {'step_val_99':>11}  created")
    lost = reused = 0
    for r in rows:
        s = r["summary"]
        status = _shown_status(r)
        lost += status == "lost"
        if r.get("trained_in", r["sweep"]) != r["sweep"]:  # the sweep reuses a run trained outside it
            reused += 1
            status += "*"
        cells = [_cell(s.get(k), spec) for k, spec in (("steps", "d"), ("train_acc", ".3f"), ("val_acc", ".3f"),
                                                        ("step_train_99", "d"), ("step_val_99", "d"))]
        print(f"{r['id']:>4}  {r['name'][:28]:<28} {status:<9} {cells[0]:>7} {cells[1]:>6} {cells[2]:>6} "
              f"{cells[3]:>13} {cells[4]:>11}  {r['created']}")
    if reused:
        print(f"*: {reused} run(s) trained outside sweep {args.sweep} (a `groklab run` or another sweep) with the "
              "exact config of one of its points, which the sweep reuses")
    if lost:
        print(f"lost: {lost} run(s) marked running whose process is gone; `groklab resume ID` continues one "
              "from its last checkpoint")
    return 0


def cmd_show(args) -> int:
    from .api import load_run
    from .config import to_dict
    from .store import Store

    if args.table and args.every < 1:
        raise ConfigError(f"--every={args.every} must be at least 1 (steps between the table's rows)")
    store = Store(args.store)
    rec = load_run(args.run, store)
    if args.table:
        print(_table(rec.metrics, args.every))
        return 0
    after = _after_the_fit(rec.metrics)
    if args.json:
        print(json.dumps({**_json_summary(rec), "name": rec.name, "created": rec.created, "group": rec.group,
                          "member": rec.member, "sweep": rec.sweep, "parent": rec.parent,
                          "summary": {k: _clean(v) for k, v in rec.summary.items()},
                          "after_fit": after and {k: _clean(v) for k, v in after.items()},
                          "config": to_dict(rec.config)}))
        return 0
    status = _shown_status(store.get(rec.run_id))
    print(f"run {rec.run_id}: {rec.name} [{status}] created {rec.created}, group {rec.group} member {rec.member}")
    if rec.parent is not None:
        print(f"  extends run {rec.parent} (its metrics and checkpoint, trained on to {rec.config.train.steps} steps)")
    if rec.config.description:
        print(f"  {rec.config.description}")
    for k, v in rec.summary.items():
        print(f"  {k:<22} {v}")
    if after:
        lapses = after["fit_lapses"]
        shown = ", ".join(f"{x['step']} (train acc {x['lowest_train_acc']:.3f}"
                          + (f", loss {x['highest_train_loss']:.3g}" if x["highest_train_loss"] is not None else "") + ")"
                          for x in lapses[:3]) + (f", … (+{len(lapses) - 3})" if len(lapses) > 3 else "")
        print(f"  {'fit_lapses':<22} {len(lapses)}" + (f": train acc back below 99 % at {shown}" if lapses else ""))
        spikes = after["loss_spikes"]
        print(f"  {'loss_spikes':<22} " + ("train loss never ≤ 1e-5" if spikes is None else
                                           f"{spikes} (train loss back to ≥ 1000× its lowest after ≤ 1e-5)"))
    return 0


def _after_the_fit(metrics) -> dict | None:
    """What happened after the fit: the lapses of training accuracy below 99 % (slingshots) and
    the loss spikes after the loss fell to 1e-5 (softmax collapse); None without a history."""
    from dataclasses import asdict

    from .analysis import fit_lapses, loss_spikes

    if metrics.empty or not {"train_acc", "train_loss"} <= set(metrics.columns):
        return None
    return {"fit_lapses": [asdict(x) for x in fit_lapses(metrics)], "loss_spikes": loss_spikes(metrics)}


def _table(metrics, every: int) -> str:
    """The study's layout: step, train acc, val acc, weight norm, at steps that are multiples of
    `every` (the nearest evaluation at or after each), plus the last evaluation."""
    import pandas as pd

    if metrics.empty:
        return "no metrics"
    picks = []
    last = int(metrics["step"].max())
    for target in list(range(0, last + 1, every)) + [last]:
        row = metrics[metrics["step"] >= target].head(1)
        if len(row) and (not picks or int(row["step"].iloc[0]) != picks[-1]):
            picks.append(int(row["step"].iloc[0]))
    sel = metrics[metrics["step"].isin(picks)]
    lines = [f"{'step':>8} {'train_acc':>9} {'val_acc':>8} {'weight_norm':>11}"]
    for _, r in sel.iterrows():
        lines.append(f"{int(r['step']):>8} {r['train_acc']:>9.3f} {r['val_acc']:>8.3f} {r['param_norm']:>11.2f}")
    return "\n".join(lines) if isinstance(sel, pd.DataFrame) else ""


def cmd_plot(args) -> int:
    from .api import load_run
    from .plots import plot_run
    from .store import Store

    rec = load_run(args.run, Store(args.store))
    out = args.output or f"run-{rec.run_id}.png"
    if not str(out).endswith((".png", ".svg", ".pdf")):
        raise ConfigError(f"-o {out!r} must end in .png, .svg or .pdf")
    plot_run(rec, out, norm=args.norm)
    print(out)
    return 0


def cmd_presets(args) -> int:
    from .config import list_presets

    presets = list_presets()
    width = max(map(len, presets))
    for name, desc in presets.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def cmd_interventions(args) -> int:
    from .train.interventions import INTERVENTIONS

    for name in INTERVENTIONS:
        e = INTERVENTIONS.get(name)
        member = f"per member: {', '.join(e.member_fields)}" if e.member_fields else "shared by an ensemble"
        print(f"{name}: {INTERVENTIONS.doc(name)}\n    fields: {', '.join(e.fields)}; default {e.default}; "
              f"{member}; source: {e.source}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="groklab", description="A laboratory for grokking research.")
    p.add_argument("--version", action="version", version=f"groklab {__import__('groklab').__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name: str, fn: Callable, help: str, store: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if store:
            sp.add_argument("--store", help="store directory (default ./runs or $GROKLAB_STORE)")
        return sp

    sp = add("run", cmd_run, "train a preset or TOML file")
    sp.add_argument("source", help="preset name (see `groklab presets`) or path to a TOML file")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. optim.lr=3e-4")
    sp.add_argument("--seeds", help="N (seeds 0..N-1) or a,b,c: train these seeds as one ensemble")
    sp.add_argument("--json", action="store_true", help="print one JSON summary (a list for ensembles)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    from .report.trackers import add_tracker_args
    add_tracker_args(sp)

    sp = add("resume", cmd_resume, "continue a killed or stopped run from its last checkpoint")
    sp.add_argument("run", type=int)
    sp.add_argument("--device", help="continue on this device (auto, cpu, cuda, cuda:N) instead of the stored one")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")

    sp = add("extend", cmd_extend, "train a finished run further, to --steps, as a new run (the original stays)")
    sp.add_argument("run", type=int)
    sp.add_argument("--steps", type=int, required=True, help="the new step budget (above the run's train.steps)")
    sp.add_argument("--device", help="train on this device (auto, cpu, cuda, cuda:N) instead of the stored one")
    sp.add_argument("--no-early-stop", action="store_true",
                    help="train early-stopped runs on too, with train.early_stop off (as the config trained to "
                         "--steps without early stop)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("-q", "--quiet", action="store_true")

    sp = add("merge", cmd_merge, "copy another store's runs (rows, metrics, checkpoints) into this one")
    sp.add_argument("source", help="the other store's directory (read only)")
    sp.add_argument("--sweep", help="only the groups with runs of this sweep")
    sp.add_argument("--json", action="store_true")

    sp = add("ls", cmd_ls, "list stored runs")
    sp.add_argument("--sweep", help="only runs of this sweep")
    sp.add_argument("--json", action="store_true")

    sp = add("show", cmd_show, "show one run's summary")
    sp.add_argument("run", type=int)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--table", action="store_true", help="step, train acc, val acc, weight norm")
    sp.add_argument("--every", type=int, default=1000, help="with --table: row spacing in steps")

    sp = add("plot", cmd_plot, "draw the grokking figure of a run")
    sp.add_argument("run", type=int)
    sp.add_argument("-o", "--output", help="output file (.png or .svg; default run-ID.png)")
    sp.add_argument("--norm", action="store_true", help="add a panel with the parameter norm")

    add("presets", cmd_presets, "list presets with a one-line description", store=False)
    add("interventions", cmd_interventions, "list the interventions with their fields and sources", store=False)
    _extend(sub, add)
    return p


def _extend(sub, add) -> None:
    """Commands contributed by other modules (sweeps, analyses) register here."""
    from .protocols import cli as protocols_cli
    from .report import cli as report_cli
    from .reproduce import cli as reproduce_cli
    from .sweep import cli as sweep_cli

    for mod in (sweep_cli, report_cli, protocols_cli, reproduce_cli):
        mod.register(add)


_TERMINATED: list[int] = []  # the signal that stopped this process, if one did


def _on_stop_signal(signum, frame) -> None:
    # Raised where the process is: the engine's `except KeyboardInterrupt` marks its runs stopped.
    # Once: a repeat (`timeout` signals the child, then its whole process group; schedulers and
    # users send it again) would abort that bookkeeping and leave the runs `running` (`lost`).
    if _TERMINATED:
        return
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def _stop_signals() -> list[int]:
    """The signals that stop a command like Ctrl-C: SIGTERM, and SIGHUP unless it is ignored (as
    `nohup` asks: the run then outlives its terminal, as the user meant)."""
    hup = getattr(signal, "SIGHUP", None)  # POSIX only
    return [signal.SIGTERM] + ([hup] if hup is not None and signal.getsignal(hup) is not signal.SIG_IGN else [])


def how_stopped() -> tuple[str, int]:
    """What stopped this command, for its message, and its exit code (128 + the signal)."""
    if not _TERMINATED:
        return "interrupted", 130
    sig = signal.Signals(_TERMINATED[0])
    return f"{'hung up' if sig.name == 'SIGHUP' else 'terminated'} ({sig.name})", 128 + sig.value


def tell(message: str) -> None:
    """One line on stderr, which may be gone (a hung-up terminal): the stop has already been recorded."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


# Exceptions that mean bad input or an unusable store or checkpoint: one line, exit 2.
_USER_ERRORS = (("groklab.data.real", "DataError"), ("groklab.store", "StoreError"),
                ("groklab.train.checkpoint", "CheckpointError"))


def _is_user_error(e: BaseException) -> bool:
    # Only modules already imported can have raised their errors: importing the others here
    # would cost `ls` the seconds of importing torch.
    kinds = [ConfigError] + [getattr(sys.modules[m], name) for m, name in _USER_ERRORS if m in sys.modules]
    return isinstance(e, tuple(kinds))


def _open_closed_std_streams() -> None:
    """A command started with stdout or stderr closed (`>&-`, `2>&-`, some daemons and schedulers)
    writes them to /dev/null instead of failing mid-run, or after the work is done."""
    for name in ("stdout", "stderr"):
        if _unwritable(getattr(sys, name)):
            setattr(sys, name, open(os.devnull, "w"))


def _unwritable(stream) -> bool:
    if stream is None:  # Python found the descriptor closed at start-up
        return True
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # an in-memory stream (captured output)
        return False
    try:  # a closed descriptor, or one a launcher reopened read-only (`2>&-` under a shell wrapper)
        import fcntl
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except ImportError:  # not POSIX
        return False
    except OSError:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    _open_closed_std_streams()
    args = build_parser().parse_args(argv)
    _TERMINATED.clear()
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in _stop_signals()} if main_thread else {}
    try:
        code = args.fn(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return code
    except KeyboardInterrupt:
        how, code = how_stopped()
        tell(f"groklab: {how}; `groklab resume RUN` continues from the last checkpoint")
        return code
    except BrokenPipeError:
        # The reader (`head`) has gone: stop quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:
        if not _is_user_error(e):
            raise
        print(f"groklab: error: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    # `python -m groklab.cli` runs this file as `__main__`, a second copy of the module: call the
    # package's own, whose state (the signal that stopped the command) the sweep and report read.
    from groklab.cli import main as package_main

    sys.exit(package_main())
