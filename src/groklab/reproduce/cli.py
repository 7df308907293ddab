"""CLI command `groklab reproduce` (registered by `groklab.cli._extend`).

    groklab reproduce --list
    groklab reproduce quickstart-delay [--quick | --full] [--json]
    groklab reproduce --all --quick --workers 1
    groklab reproduce --all --full --backend ray --json
    groklab reproduce --report -o claims.md
    groklab reproduce --all --quick --dry-run
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ..registry import ConfigError
from ..sweep.cli import add_execution_args, execution_options


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _list(claims) -> int:
    width = max(len(c.id) for c in claims)
    for c in claims:
        sizes = "/".join(f"{n} ~{s.cpu_minutes:g} min" for n, s in c.sizes) or "no runs"
        print(f"{c.id:<{width}}  {c.study:<13} {c.where[:28]:<28} {c.claim}  [{sizes}]")
    return 0


def _print(result, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_clean(result.as_dict())), flush=True)
        return
    c = result.claim
    print(f"{c.id} [{result.size}] ({c.study_name}, {c.where}{', ' + c.source if c.source else ''})\n"
          f"  claim:    {c.claim}\n  claimed:  {c.claimed or '-'}\n"
          + (f"  note:     {c.note}\n" if c.note else "")
          + f"  measured: {result.measured}\n"
          f"  verdict:  {result.verdict}   (runs {', '.join(map(str, result.runs)) or '-'}; "
          f"{result.new_runs} trained now; {result.seconds:.0f} s)", flush=True)


def cmd_reproduce(args) -> int:
    from ..store import Store
    from . import check_protocols, get_claim, load_claims, reproduce_claims, specs

    claims = load_claims()
    if args.list:
        return _list(claims)
    store = Store(args.store)
    if args.report:
        from . import claims_table
        from .markdown import markdown_table, write_figures
        rows = claims_table(store)
        if args.output:
            out = Path(args.output)
            if not args.no_figures:
                write_figures(store, rows, out.parent / f"{out.stem}-figures")
            out.write_text(markdown_table(rows), encoding="utf-8")
            print(args.output)
        else:
            sys.stdout.write(markdown_table(rows))
        return 0
    if bool(args.claim) == bool(args.all):
        raise ConfigError("name one claim ID or --all (or --list, --report); `groklab reproduce --list` shows them")
    execution = execution_options(args)
    size = "full" if args.full else "quick"
    chosen = claims if args.all else [get_claim(args.claim, claims)]
    overrides = tuple(args.set or ())
    for claim in chosen:  # validate every claim first: bad input fails before anything trains
        if claim.runs and claim.size(size) is not None:
            specs(claim, size, overrides)
            check_protocols(claim, size, overrides)

    if args.dry_run:
        return _dry_run(chosen, size, args, overrides, execution)

    def on_group(claim, group, plan):
        if not args.json:
            reused = f" ({len(plan.reused)} trained outside it, reused)" if plan.reused else ""
            print(f"  {plan.sweep}: {plan.n_runs} run(s): {len(plan.done)} stored{reused}, {plan.n_resume} to resume, "
                  f"{plan.n_new} to train", file=sys.stderr)

    def on_done(outcome):
        if not args.json:
            print(outcome.line(), file=sys.stderr)

    # every chosen claim's runs train together over the workers; verdicts follow in order
    reproduce_claims(chosen, size, store, overrides=overrides, cpu_budget=args.cpu_budget, on_group=on_group,
                     on_done=on_done, on_result=lambda result: _print(result, args.json), **execution)
    return 0


def _dry_run(claims, size: str, args, overrides: tuple[str, ...], execution: dict) -> int:
    """`--dry-run`: each claim's plan (what would train, resume, be reused or shared), then the
    totals; the store is only read (an older store is not migrated)."""
    from ..store import Store
    from . import plan_claims

    store = Store(args.store, read_only=True)
    plans = plan_claims(claims, size, store, backend=execution["backend"], workers=execution["workers"],
                        overrides=overrides, cpu_budget=args.cpu_budget, reuse=execution["reuse"])
    if args.json:
        for plan in plans:
            print(json.dumps(plan.as_dict()))
        return 0
    seen, todo, minutes = set(), {"train": 0, "resume": 0, "stored": 0, "shared": 0}, 0.0
    for plan in plans:
        head = f"{plan.claim.id} [{size}, stated ~{plan.cpu_minutes:g} CPU-minutes]"
        if plan.over_budget:
            print(f"{head}: over --cpu-budget {args.cpu_budget:g} on this CPU-only machine: not run "
                  "(judged from what the store holds)")
            continue
        if not plan.plans and not plan.protocol_groups:
            print(f"{head}: no runs")
            continue
        lines, busy = [], False
        for p in plan.plans:
            first = p.sweep not in seen
            seen.add(p.sweep)
            reused = f" ({len(p.reused)} trained outside it, reused)" if p.reused else ""
            shared = f", {len(p.shared)} trained by another claim's sweep" if p.shared else ""
            also = "" if first else " (shared by tag with a claim above)"
            lines.append(f"  {p.sweep}: {p.n_runs} run(s): {len(p.done)} stored{reused}, {p.n_resume} to resume, "
                         f"{p.n_new} to train{shared}{also}")
            if first:
                for k, v in (("train", p.n_new), ("resume", p.n_resume), ("stored", len(p.done)), ("shared", len(p.shared))):
                    todo[k] += v
                busy |= bool(p.n_new or p.n_resume)
        lines += [f"  protocol group {g}: its runs are planned when it runs" for g in plan.protocol_groups]
        minutes += plan.cpu_minutes if busy or plan.protocol_groups else 0.0
        print("\n".join([head, *lines]))
    print(f"dry run: {todo['train']} run(s) to train, {todo['resume']} to resume, {todo['stored']} stored, "
          f"{todo['shared']} shared between sweeps; the claims with something to train state ~{minutes:g} "
          "CPU-minutes (one core each); nothing was trained or written")
    return 0


def register(add) -> None:
    sp = add("reproduce", cmd_reproduce, "run a study's claim and judge it from the stored metrics")
    sp.add_argument("claim", nargs="?", help="claim id (see --list)")
    sp.add_argument("--list", action="store_true", help="every claim: id, study, where, one line")
    sp.add_argument("--all", action="store_true", help="every claim")
    size = sp.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the CPU-sized version (default)")
    size.add_argument("--full", action="store_true", help="the study's own budget")
    sp.add_argument("--json", action="store_true", help="one JSON object per claim")
    sp.add_argument("--report", action="store_true", help="the Markdown table from what the store holds (no training)")
    sp.add_argument("-o", "--output", help="with --report: write the table to this file (and each claim's figure "
                                           "to OUTPUT-figures/ID.png)")
    sp.add_argument("--no-figures", action="store_true", help="with --report -o: the table only")
    sp.add_argument("--dry-run", action="store_true",
                    help="print what would train, resume or be reused for the chosen claims; train and write nothing")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a field of every run (e.g. data.data_dir=DIR); changes which runs count")
    add_execution_args(sp)
    sp.add_argument("--cpu-budget", type=float, default=30.0,
                    help="CPU-minutes above which a size is not run on a CPU-only local backend (default 30)")
