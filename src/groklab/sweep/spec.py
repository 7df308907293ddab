"""Sweep specifications: a base config, axes over any config field, and how to combine them.

A spec is a TOML file (or a preset under ``groklab/presets/sweeps``)::

    name = "mlp-fraction"                     # runs are tagged with it in the store
    description = "steps to 99 % val vs training fraction"
    base = "quickstart"                       # run preset, TOML path, or an inline table
    set = ["train.steps=3000"]                # overrides applied to the base
    mode = "product"                          # or "zip" (axes advance together)
    seeds = 3                                 # shorthand for the axis train.seed = [0, 1, 2]

    [axes]
    "data.frac_train" = {range = [0.2, 0.8, 0.1]}      # inclusive: 0.2, 0.3, ..., 0.8
    "optim.lr" = {logrange = [1e-4, 1e-2, 5]}          # 5 log-spaced values, both ends included
    "optim.weight_decay" = [0.1, 1.0]                  # a plain list

or the CLI (``groklab sweep quickstart --grid data.frac_train=0.3,0.5 --seeds 2``). In product
mode ``zip = [["optim.lr", "optim.weight_decay"]]`` ties some axes together; ``seeds`` is
always crossed with the rest. Every axis names a config field and every generated config is
validated, so a typo fails before anything runs.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import (ConfigError, RunCfg, _parse_value, _read_text, describe_tomls, flatten, from_dict, load_config,
                      parse_seeds, read_source, set_path, to_dict, with_overrides)
from ..registry import suggest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["SweepSpec", "load_spec", "parse_grid", "expand", "list_sweep_presets", "field_paths"]

SPEC_KEYS = ("name", "description", "base", "set", "mode", "seeds", "zip", "axes")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep: the base config, the axes (field → values) and how they combine."""

    name: str
    """Sweep name: every run is stored with it; re-running the same name resumes the sweep."""
    base: RunCfg
    """The config every run starts from (base preset/file plus `set` overrides)."""
    axes: dict[str, tuple] = field(default_factory=dict)
    """Dotted config field → values, in the order given."""
    mode: str = "product"
    """`product` (every combination) or `zip` (the i-th values of every axis together)."""
    zip_groups: tuple[tuple[str, ...], ...] = ()
    """Product mode: axes listed together here advance together (zipped)."""
    seeds: tuple[int, ...] = ()
    """Seeds crossed with every point (the axis train.seed)."""
    description: str = ""
    hooks: tuple[tuple[str, str], ...] = ()
    """Hooks every run trains with (`protocols.hooks.hook_specs`): what a protocol's runs need
    (snapshots, the correct-class logit) when `reproduce` trains them as sweep groups."""
    run_names: str = "sweep"
    """Runs are named `<sweep>-<point>` (`sweep`), or `<base name>-<point>` (`base`: a protocol's
    runs keep their role's name, e.g. `quickstart-Cgen`)."""

    def __post_init__(self) -> None:
        from ..protocols.hooks import RESUMABLE
        for name, _ in self.hooks:
            if name not in RESUMABLE:
                raise ConfigError(f"hooks: {name!r} is not a recorded hook; valid: {', '.join(RESUMABLE)}")
        if self.mode not in ("product", "zip"):
            raise ConfigError(f"mode={self.mode!r} must be one of 'product', 'zip'")
        if self.run_names not in ("sweep", "base"):
            raise ConfigError(f"run_names={self.run_names!r} must be one of 'sweep', 'base'")
        valid = field_paths()
        for name, values in self.axes.items():
            if name not in valid and not name.startswith(("data.options.", "model.options.")):
                raise ConfigError(f"axes: {name!r} is not a config field{suggest(name, sorted(valid))}")
            if not values:
                raise ConfigError(f"axes.{name} has no values")
        if self.seeds and "train.seed" in self.axes:
            raise ConfigError("seeds and axes.'train.seed' both set the seed; use one of them")
        if self.mode == "zip":
            lengths = {n: len(v) for n, v in self.axes.items()}
            if len(set(lengths.values())) > 1:
                raise ConfigError(f"mode='zip' needs axes of equal length; got {lengths}")
        seen: set[str] = set()
        for grp in self.zip_groups:
            for name in grp:
                if name not in self.axes:
                    raise ConfigError(f"zip: {name!r} is not one of the axes ({', '.join(self.axes) or 'none'})")
                if name in seen:
                    raise ConfigError(f"zip: {name!r} appears in two zip groups")
                seen.add(name)
            if len({len(self.axes[n]) for n in grp}) > 1:
                raise ConfigError(f"zip: axes {list(grp)} must have equal lengths; got "
                                  f"{[len(self.axes[n]) for n in grp]}")

    @property
    def swept(self) -> list[str]:
        """The fields that vary across runs (axes, then train.seed when seeds are crossed)."""
        return list(self.axes) + (["train.seed"] if self.seeds else [])


# ---------------------------------------------------------------- values of one axis

def _round(x: float) -> float:
    """Strip float noise (0.30000000000000004 → 0.3) so values read and store cleanly."""
    return float(f"{x:.12g}")


def axis_values(name: str, spec: Any) -> tuple:
    """Values of one axis from a list, a scalar, `{range=[a,b,step]}`, `{logrange=[a,b,n]}`
    or `{values=[...]}`."""
    if isinstance(spec, (list, tuple)):
        return tuple(spec)
    if not isinstance(spec, dict):
        return (spec,)
    kinds = [k for k in ("range", "logrange", "values") if k in spec]
    if len(kinds) != 1 or len(spec) != 1:
        raise ConfigError(f"axes.{name}={spec!r} must be a list, {{range=[a, b, step]}}, {{logrange=[a, b, n]}} "
                          f"or {{values=[...]}}")
    kind, args = kinds[0], spec[kinds[0]]
    if kind == "values":
        return axis_values(name, list(args))
    if not (isinstance(args, (list, tuple)) and len(args) == 3 and
            all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise ConfigError(f"axes.{name}: {kind} needs three numbers [a, b, {'step' if kind == 'range' else 'n'}]; "
                          f"got {args!r}")
    a, b, c = args
    ints = all(isinstance(v, int) for v in (a, b))
    if kind == "range":
        if c == 0 or (b - a) / c < 0:
            raise ConfigError(f"axes.{name}: range [{a}, {b}, {c}] is empty (step 0 or pointing away from b)")
        n = int(math.floor((b - a) / c + 1e-9)) + 1  # b is included when it lies on the grid
        values = [a + i * c for i in range(n)]
        return tuple(int(v) for v in values) if ints and isinstance(c, int) else tuple(_round(v) for v in values)
    if not isinstance(c, int) or c < 1 or a <= 0 or b <= 0:
        raise ConfigError(f"axes.{name}: logrange [{a}, {b}, {c}] needs a > 0, b > 0 and an integer count n >= 1")
    if c == 1:
        values = [float(a)]
    else:
        values = [math.exp(math.log(a) + i * (math.log(b) - math.log(a)) / (c - 1)) for i in range(c)]
    if ints:  # integer fields (steps, widths): round and drop repeats
        return tuple(dict.fromkeys(int(round(v)) for v in values))
    return tuple(_round(v) for v in values)


def _flatten_axes(tree: dict, prefix: str = "") -> dict[str, Any]:
    """`[axes]` may use quoted dotted keys or nested tables (TOML `data.frac_train = [...]`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and not any(k in value for k in ("range", "logrange", "values")):
            out.update(_flatten_axes(value, path + "."))
        else:
            out[path] = value
    return out


def field_paths() -> set[str]:
    """Every dotted config field an axis may name (`optim.lr`, `train.phases`, ...)."""
    return set(flatten(to_dict(RunCfg(), keep_none=True)))


# ---------------------------------------------------------------- reading specs

def _sweep_dir():
    return resources.files("groklab") / "presets" / "sweeps"


def list_sweep_presets() -> dict[str, str]:
    """Sweep preset name → one-line description."""
    return describe_tomls(_sweep_dir())


def _read(source: str) -> tuple[dict, Path | None, bool]:
    """(raw dict, directory of the file or None, is it a sweep spec?) for a name or a path."""
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"sweep file {source!r} does not exist")
        try:
            tree = tomllib.loads(_read_text(path))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: invalid TOML: {e}") from None
        return tree, path.parent, "axes" in tree or "base" in tree
    entry = _sweep_dir() / f"{source}.toml"
    if entry.is_file():
        return tomllib.loads(entry.read_text()), None, True
    try:
        return read_source(source), None, False  # a run preset: the base of a --grid sweep
    except ConfigError:
        names = list(list_sweep_presets())
        raise ConfigError(f"sweep {source!r} is neither a sweep preset, a run preset nor a file"
                          f"{suggest(source, names)}; sweep presets: {', '.join(names)}") from None


def _load_base(base: Any, where: Path | None) -> RunCfg:
    if isinstance(base, dict):
        return load_config(base)
    if not isinstance(base, str):
        raise ConfigError(f"base={base!r} must be a preset name, a TOML path or a table")
    if where is not None and (where / base).is_file():
        base = str(where / base)  # a path relative to the spec file
    return load_config(base)


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, tuple]:
    """CLI axes: `field=v1,v2,...`, `field=range:a:b:step` or `field=logrange:a:b:n`."""
    out: dict[str, tuple] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r} must look like section.field=v1,v2,...")
        name, text = (s.strip() for s in item.split("=", 1))
        kind = text.split(":", 1)[0]
        if kind in ("range", "logrange"):
            parts = text.split(":")[1:]
            nums = [_parse_value(p) for p in parts]
            out[name] = axis_values(name, {kind: nums})
        else:
            out[name] = tuple(_parse_value(v.strip()) for v in text.split(",") if v.strip())
    return out


def load_spec(source: str | dict | None = None, *, grid: dict[str, tuple] | None = None, overrides: list[str] = (),
              name: str | None = None, seeds: Any = None, mode: str | None = None) -> SweepSpec:
    """Read a sweep preset, a sweep TOML file or a run preset/file (plus CLI axes) into a spec.

    Args:
        source: sweep preset name, sweep TOML path, run preset/TOML path (a base for `grid`),
            or a spec dict with the keys of a sweep file.
        grid: extra axes (replace axes of the same field).
        overrides: extra base overrides (`optim.lr=1e-3`), applied after the spec's `set`.
        name, seeds, mode: replace the spec's values.
    Returns:
        The validated :class:`SweepSpec`.
    """
    if isinstance(source, dict):
        tree, where, is_sweep = dict(source), None, True
    else:
        tree, where, is_sweep = _read(str(source))
    if is_sweep:
        unknown = sorted(set(tree) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"unknown sweep key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SPEC_KEYS)}")
        if "base" not in tree:
            raise ConfigError("a sweep spec needs base = \"PRESET or file\"")
        base = _load_base(tree["base"], where)
        default_name = tree.get("name") or (Path(source).stem if isinstance(source, str) else None)
    else:
        base = load_config(str(source))
        tree = {}
        default_name = None
    sets = tree.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ConfigError(f"set={sets!r} must be a list of \"section.field=value\" strings")
    base = with_overrides(base, list(sets) + list(overrides))
    axes_raw = _flatten_axes(tree.get("axes", {}))
    axes = {k: axis_values(k, v) for k, v in axes_raw.items()}
    axes.update(grid or {})
    seeds_v = parse_seeds(seeds) if seeds is not None else parse_seeds(tree["seeds"]) if "seeds" in tree else ()
    zips = tree.get("zip", [])
    if not (isinstance(zips, list) and all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in zips)):
        raise ConfigError(f"zip={zips!r} must be a list of lists of axis names")
    if default_name is None:
        short = "-".join(k.split(".")[-1] for k in axes) or "grid"
        default_name = f"{base.name}-{short}"
    spec = SweepSpec(name=str(name or default_name), base=base, axes=axes, mode=mode or tree.get("mode", "product"),
                     zip_groups=tuple(tuple(g) for g in zips), seeds=seeds_v,
                     description=str(tree.get("description", "")))
    if not spec.name or any(c.isspace() for c in spec.name):
        raise ConfigError(f"name={spec.name!r} must be a non-empty word without spaces")
    return spec


# ---------------------------------------------------------------- expansion

def _points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Field → value for every point of the sweep, in spec order (seeds innermost)."""
    names = list(spec.axes)
    if spec.mode == "zip":
        n = len(next(iter(spec.axes.values()))) if names else 1
        blocks = [[{k: spec.axes[k][i] for k in names} for i in range(n)]]
    else:
        blocks, done = [], set()
        for name in names:
            if name in done:
                continue
            grp = next((g for g in spec.zip_groups if name in g), (name,))
            done.update(grp)
            blocks.append([{k: spec.axes[k][i] for k in grp} for i in range(len(spec.axes[grp[0]]))])
    if spec.seeds:
        blocks.append([{"train.seed": s} for s in spec.seeds])
    points = []
    for combo in itertools.product(*blocks):
        point: dict[str, Any] = {}
        for part in combo:
            point.update(part)
        points.append(point)
    return points


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(spec: SweepSpec) -> list[RunCfg]:
    """One validated config per point, named `<sweep>-<field>=<value>-...`.

    Raises:
        ConfigError: naming the axis and value when a generated config is invalid.
    """
    cfgs = []
    for point in _points(spec):
        label = "-".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in point.items())
        tree = to_dict(spec.base)
        for key, value in point.items():
            set_path(tree, key, value)
        stem = spec.name if spec.run_names == "sweep" else spec.base.name
        tree["name"] = f"{stem}-{label}" if label else stem
        try:
            cfgs.append(from_dict(RunCfg, tree))
        except ConfigError as e:
            where = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(f"sweep point ({where}): {e}") from None
    return cfgs

