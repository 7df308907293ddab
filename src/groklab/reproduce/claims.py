"""Claims as data: one TOML file per study under ``groklab/claims``, validated when loaded.

    study = "reproduction"                    # a key of STUDIES (file level)

    [[claims]]
    id = "repro-delay"
    where = "§3.1, fig. 1"
    claim = "The Transformer fits its training set long before it generalizes."
    claimed = "train 99 % before 1e3 steps, val 99 % only after ~1e4"
    check = [{ name = "delay_ratio", group = "main", min_ratio = 10.0 }]

    [claims.runs.main]                        # a run group: a preset (or sweep base) + overrides
    base = "repro-transformer"
    set = ["train.early_stop=true"]
    axes = { "data.frac_train" = [0.5] }      # optional, as in a sweep file

    [claims.quick]                            # CPU-sized: 2 cores, minutes
    set = ["data.p=47", "train.steps=4000"]   # applied to every group (after the group's own)
    seeds = [0]
    cpu_minutes = 1                           # stated cost on one core
    runs.main.set = ["model.d_model=64"]      # per-group extras (set / axes / base)

    [claims.full]                             # the study's own budget
    seeds = [0, 1, 2]
    cpu_minutes = 600

A group may instead name a mechanism protocol (see :mod:`groklab.reproduce.protocols`)::

    [claims.runs.faster_mem]
    protocol = "mixture"                      # mixture, efficiency or fourier
    params = { arch = "mlp", w_mem2 = 10.0, w_gen2 = 1.0 }

Unknown keys, studies, checks or check parameters fail with the file and field named.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..registry import ConfigError, suggest
from .criteria import build_criterion

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STUDIES = {
    "rnn-lstm": "the RNN/LSTM study",
    "mystery": "the \"mystery\" study",
    "task-learning": "the task-learning study",
    "reproduction": "the reproduction study",
    "literature": "the wider literature",
}
SIZES = ("quick", "full")
CLAIM_KEYS = ("id", "where", "claim", "claimed", "source", "note", "check", "runs", "quick", "full")
GROUP_KEYS = ("base", "set", "axes", "tag", "protocol", "params")
SIZE_KEYS = ("set", "seeds", "cpu_minutes", "runs")


@dataclass(frozen=True)
class RunGroup:
    """Runs a claim needs: a base preset or file, overrides and optional axes (a sweep)."""

    base: str
    set: tuple[str, ...] = ()
    axes: tuple[tuple[str, Any], ...] = ()
    tag: str = ""
    """Shared runs: the group's sweep is `claim-<tag>-<size>` instead of the claim's own, so claims
    naming the same tag share every run whose config is the same."""
    protocol: str = ""
    """A mechanism protocol (mixture, efficiency, fourier) instead of a base preset."""
    params: tuple[tuple[str, Any], ...] = ()
    """The protocol's parameters (a size may add to them)."""


@dataclass(frozen=True)
class Size:
    """One size of a claim: overrides for every group, per-group extras, seeds, stated cost."""

    set: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    cpu_minutes: float = 0.0
    """Stated cost on one CPU core; above `--cpu-budget` the size is not run locally."""
    runs: tuple[tuple[str, RunGroup], ...] = ()
    """Group name → extra `set` / `axes`, and a `base` that replaces the group's at this size."""


@dataclass(frozen=True)
class Claim:
    """One claim of a study, the runs that test it, and the checks that judge it."""

    id: str
    study: str
    where: str
    claim: str
    checks: tuple
    file: str
    claimed: str = ""
    source: str = ""
    note: str = ""
    runs: tuple[tuple[str, RunGroup], ...] = ()
    sizes: tuple[tuple[str, Size], ...] = ()

    @property
    def study_name(self) -> str:
        return STUDIES[self.study]

    def size(self, name: str) -> Size | None:
        return dict(self.sizes).get(name)

    @property
    def sweep_groups(self) -> list[str]:
        """Groups that are sweeps of a preset (the others run a protocol)."""
        return [n for n, g in self.runs if not g.protocol]

    @property
    def protocol_groups(self) -> list[str]:
        return [n for n, g in self.runs if g.protocol]

    def protocol_call(self, group: str, size: str):
        """(parameter object, overrides, seeds) of a protocol group at one size."""
        from .protocols import build_protocol

        g, sz = dict(self.runs)[group], self.size(size)
        extra = dict(sz.runs).get(group, RunGroup(base=""))
        params = build_protocol(g.protocol, {**dict(g.params), **dict(extra.params)},
                                f"{self.file}: claim {self.id!r}.runs.{group} ({size})")
        return params, (*g.set, *sz.set, *extra.set), sz.seeds

    def group_spec(self, group: str, size: str) -> dict:
        """The sweep spec dict (for :func:`groklab.sweep.run_sweep`) of one group at one size."""
        g, sz = dict(self.runs)[group], self.size(size)
        extra = dict(sz.runs).get(group, RunGroup(base=g.base))
        axes = {**dict(g.axes), **dict(extra.axes)}
        name = f"claim-{g.tag}-{size}" if g.tag else sweep_name(self.id, size, group)
        return {"name": name, "base": extra.base or g.base,
                "description": f"claim {self.id} ({size}): {self.claim}",
                "set": [*g.set, *sz.set, *extra.set], "axes": axes, "seeds": list(sz.seeds)}


def sweep_name(claim_id: str, size: str, group: str) -> str:
    """Runs of a claim are tagged with this sweep name: `claim-<id>-<size>-<group>`."""
    return f"claim-{claim_id}-{size}-{group}"


def _check_keys(tree: Any, valid: tuple[str, ...], where: str) -> dict:
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(tree) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return tree


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ConfigError(f"{where}={value!r} must be a list of \"section.field=value\" strings")
    return tuple(value)


def _group(tree: Any, where: str, need_base: bool = True, protocol: str = "") -> RunGroup:
    """A run group; `protocol`: the group is (at claim level) or belongs to (at size level) a
    protocol group, which takes `params` and `set` but no `base`, `axes` or `tag`."""
    from .protocols import build_protocol

    t = _check_keys(tree, GROUP_KEYS, where)
    protocol = t.get("protocol", protocol) if need_base else protocol
    if "protocol" in t and not need_base:
        raise ConfigError(f"{where}.protocol: a size cannot change a group's protocol")
    if protocol:
        bad = [k for k in ("base", "axes", "tag") if k in t]
        if bad:
            raise ConfigError(f"{where}: a protocol group takes params and set, not {', '.join(bad)}")
        params = t.get("params", {})
        if need_base:
            build_protocol(protocol, params, where)  # name and parameter types; sizes add to params
        elif not isinstance(params, dict):
            raise ConfigError(f"{where}.params must be a table of the protocol's parameters")
        return RunGroup(base="", set=_strings(t.get("set", []), f"{where}.set"), protocol=protocol,
                        params=tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
    if "params" in t:
        raise ConfigError(f"{where}.params: only a protocol group (protocol = \"...\") takes params")
    if need_base and not isinstance(t.get("base"), str):
        raise ConfigError(f"{where}.base must name a preset or TOML file")
    axes = t.get("axes", {})
    if not isinstance(axes, dict):
        raise ConfigError(f"{where}.axes must be a table of field = [values]")
    tag = t.get("tag", "")
    if not isinstance(tag, str) or any(c.isspace() for c in tag):
        raise ConfigError(f"{where}.tag={tag!r} must be a word without spaces")
    return RunGroup(base=str(t.get("base", "")), set=_strings(t.get("set", []), f"{where}.set"),
                    axes=tuple(axes.items()), tag=tag)


def _size(tree: Any, where: str, groups: dict[str, RunGroup]) -> Size:
    t = _check_keys(tree, SIZE_KEYS, where)
    seeds = t.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                             for s in seeds):
        raise ConfigError(f"{where}.seeds={seeds!r} must be a non-empty list of integers")
    cost = t.get("cpu_minutes", 0.0)
    if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost < 0:
        raise ConfigError(f"{where}.cpu_minutes={cost!r} must be a number >= 0")
    runs = _check_keys(t.get("runs", {}), tuple(sorted(groups)), f"{where}.runs")
    return Size(set=_strings(t.get("set", []), f"{where}.set"), seeds=tuple(seeds), cpu_minutes=float(cost),
                runs=tuple((n, _group(g, f"{where}.runs.{n}", need_base=False, protocol=groups[n].protocol))
                           for n, g in runs.items()))


def parse_claim(tree: Any, study: str, file: str, index: int) -> Claim:
    where = f"{file}: claims[{index}]"
    t = _check_keys(tree, CLAIM_KEYS, where)
    for key in ("id", "where", "claim"):
        if not isinstance(t.get(key), str) or not t[key].strip():
            raise ConfigError(f"{where}.{key} must be a non-empty string")
    where = f"{file}: claim {t['id']!r}"
    if study == "literature" and not t.get("source"):
        raise ConfigError(f"{where}.source must name the paper for a claim from the wider literature")
    checks_raw = t.get("check")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise ConfigError(f"{where}.check must be a non-empty list of {{ name = \"...\", ... }} tables")
    checks = tuple(build_criterion(c, f"{where}.check[{i}]") for i, c in enumerate(checks_raw))
    runs = {n: _group(g, f"{where}.runs.{n}") for n, g in _check_keys(t.get("runs", {}), tuple(t.get("runs", {})),
                                                                       f"{where}.runs").items()}
    for i, c in enumerate(checks):
        reads = getattr(type(c), "reads", "")  # a protocol check reads that protocol's groups only
        for g in c.groups():
            if g not in runs:
                raise ConfigError(f"{where}.check[{i}]: group {g!r} is not one of runs ({', '.join(runs) or 'none'})")
            if reads != runs[g].protocol:
                want = f"a {reads} protocol group" if reads else "a group of runs (base = \"...\")"
                have = f"a {runs[g].protocol} protocol group" if runs[g].protocol else "a group of runs"
                raise ConfigError(f"{where}.check[{i}]: check {checks_raw[i]['name']!r} reads {want}; "
                                  f"runs.{g} is {have}")
    sizes = []
    for s in SIZES:
        if s in t:
            sizes.append((s, _size(t[s], f"{where}.{s}", runs)))
        elif runs:
            raise ConfigError(f"{where}.{s} is missing: a claim with runs needs a quick and a full size")
    claim = Claim(id=t["id"], study=study, where=t["where"], claim=t["claim"].strip(), checks=checks, file=file,
                  claimed=str(t.get("claimed", "")), source=str(t.get("source", "")), note=str(t.get("note", "")),
                  runs=tuple(runs.items()), sizes=tuple(sizes))
    for group in claim.protocol_groups:  # a size's params merged into the group's must type-check too
        for size, _ in claim.sizes:
            claim.protocol_call(group, size)
    return claim


def parse_file(text: str, file: str) -> list[Claim]:
    """The claims of one claim file's text; `file` names it in errors."""
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{file}: invalid TOML: {e}") from None
    _check_keys(tree, ("study", "description", "claims"), file)
    study = tree.get("study")
    if study not in STUDIES:
        raise ConfigError(f"{file}: study={study!r} must be one of {', '.join(STUDIES)}")
    items = tree.get("claims", [])
    if not isinstance(items, list):
        raise ConfigError(f"{file}: claims must be an array of tables ([[claims]])")
    return [parse_claim(c, study, file, i) for i, c in enumerate(items)]


def claim_files() -> list:
    folder = resources.files("groklab") / "claims"
    return sorted((e for e in folder.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)


def load_claims(paths: list[str | Path] | None = None) -> list[Claim]:
    """Every shipped claim (or those of `paths`), in file order; ids must be unique."""
    entries = [Path(p) for p in paths] if paths is not None else claim_files()
    claims: list[Claim] = []
    seen: dict[str, str] = {}
    for entry in entries:
        for c in parse_file(entry.read_text(encoding="utf-8"), entry.name):
            if c.id in seen:
                raise ConfigError(f"{c.file}: claim id {c.id!r} is also used in {seen[c.id]}")
            seen[c.id] = c.file
            claims.append(c)
    return claims


def get_claim(claim_id: str, claims: list[Claim] | None = None) -> Claim:
    claims = load_claims() if claims is None else claims
    by_id = {c.id: c for c in claims}
    if claim_id not in by_id:
        raise ConfigError(f"claim {claim_id!r} does not exist{suggest(claim_id, by_id)}; "
                          "`groklab reproduce --list` shows them all")
    return by_id[claim_id]
