"""CLI commands `groklab report`, `groklab compare` and `groklab export` (registered by
`groklab.cli._extend`).

    groklab report 3 4 7 -o report.html
    groklab report --sweep mlp-fraction -o sweep.html
    groklab compare 3 4 -o overlay.png
    groklab export --sweep mlp-fraction --format parquet -o frac.parquet
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..registry import ConfigError


def _one_source(args) -> None:
    given = [n for n, v in (("RUN ids", args.runs), ("--sweep", args.sweep),
                            ("--claims", getattr(args, "claims", False))) if v]
    if len(given) != 1:
        choices = "RUN ids, --sweep NAME" + (" or --claims" if hasattr(args, "claims") else "")
        raise ConfigError(f"give exactly one of {choices} (got {', '.join(given) or 'none'})")


def cmd_report(args) -> int:
    from ..store import Store
    from . import build_report, load_claims

    _one_source(args)
    out = Path(args.output or "report.html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"-o {str(out)!r} must end in .html")
    if args.max_points < 10:
        raise ConfigError(f"--max-points={args.max_points} must be at least 10")
    store = Store(args.store)
    claims = load_claims(store) if args.claims else None
    html = build_report(store, args.runs or (), args.sweep, claims=claims, title=args.title,
                        max_points=args.max_points)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    print(out)
    return 0


def cmd_compare(args) -> int:
    from ..store import Store
    from .compare import FORMATS, config_diff, diff_table, overlay_figure
    from .data import collect_runs

    if len(set(args.runs)) < 2:
        raise ConfigError("compare needs at least two different runs")
    out = args.output or f"compare-{'-'.join(map(str, args.runs))}.png"
    if not str(out).lower().endswith(FORMATS):
        raise ConfigError(f"-o {out!r} must end in {', '.join(FORMATS)}")
    views = collect_runs(Store(args.store), args.runs)
    overlay_figure(views, out)
    if args.json:
        print(json.dumps({"runs": [v.run_id for v in views], "figure": str(out), "diff": config_diff(views)}))
    else:
        print(diff_table(views))
        print(out)
    return 0


def cmd_export(args) -> int:
    from ..store import Store
    from .export import FORMATS, export_runs

    _one_source(args)
    suffix = Path(args.output).suffix.lower().lstrip(".") if args.output else None
    fmt = args.format or (suffix if suffix in FORMATS else "csv")
    if args.output and suffix != fmt:
        raise ConfigError(f"-o {args.output!r} must end in .{fmt} for --format {fmt}")
    # a sweep name is a user string: keep it to one harmless path component
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", args.sweep).strip("._") if args.sweep else "export"
    path = args.output or f"{stem or 'export'}.{fmt}"
    metrics, runs = export_runs(Store(args.store), args.runs or (), args.sweep, fmt=fmt, path=path)
    print(metrics)
    print(runs)
    return 0


def register(add) -> None:
    """Add `report`, `compare` and `export` to the groklab CLI (`add` is cli.build_parser's helper)."""
    sp = add("report", cmd_report, "write a self-contained HTML report of runs, a sweep or the claims")
    sp.add_argument("runs", nargs="*", type=int, help="run ids (see `groklab ls`)")
    sp.add_argument("--sweep", help="every run of this sweep, with its analyses")
    sp.add_argument("--claims", action="store_true", help="the claims table of `groklab reproduce`")
    sp.add_argument("-o", "--output", help="output .html file (default report.html)")
    sp.add_argument("--title", help="page title")
    sp.add_argument("--max-points", type=int, default=200,
                    help="at most about this many points per curve, spread on a log grid (default 200)")

    sp = add("compare", cmd_compare, "overlay runs in one figure and print the config fields they differ in")
    sp.add_argument("runs", nargs="+", type=int, help="two or more run ids")
    sp.add_argument("-o", "--output", help="figure file (.png, .svg or .pdf; default compare-IDS.png)")
    sp.add_argument("--json", action="store_true", help="print the diff as JSON")

    sp = add("export", cmd_export, "write runs' metrics (long form) and a runs table as CSV or Parquet")
    sp.add_argument("runs", nargs="*", type=int, help="run ids (see `groklab ls`)")
    sp.add_argument("--sweep", help="every run of this sweep")
    sp.add_argument("--format", choices=("csv", "parquet"), help="default: from -o's suffix, else csv")
    sp.add_argument("-o", "--output", help="metrics file; the runs table goes beside it as NAME.runs.EXT")
