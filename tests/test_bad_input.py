"""Bad input: a corpus of malformed inputs, each one clear line on stderr and exit code 2 from the
CLI, with the existing store untouched (same rows, metrics, files and checkpoint bytes); and a
property-based fuzz of the config loader and the `--set` parser, which may only ever raise
ConfigError. Also the security promises: no pickle is ever loaded, no config text is evaluated."""
from __future__ import annotations

import hashlib
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from groklab.cli import main
from groklab.config import ConfigError, RunCfg, load_config
from groklab.store import Store
from groklab.train.checkpoint import CheckpointError, read_tensors

GUARD = ["--set", "train.steps=5", "--set", "train.threads=1", "--set", "data.p=11"]  # a valid case trains 5 steps


def _s(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _write(rel: str, data: str | bytes):
    def setup(tmp: Path, store: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _ckpt(store: Path) -> Path:
    return next((store / "groups").glob("*/checkpoint.safetensors"))


def _truncate(tmp: Path, store: Path) -> None:
    path = _ckpt(store)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _tamper(tmp: Path, store: Path) -> None:
    path = _ckpt(store)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # one bit of the last tensor's data
    path.write_bytes(bytes(data))


def _pickle_ckpt(tmp: Path, store: Path) -> None:
    _ckpt(store).write_bytes(pickle.dumps({"params": [1.0, 2.0]}))


def _torch_save_ckpt(tmp: Path, store: Path) -> None:
    torch.save({"params": torch.zeros(3)}, _ckpt(store))


def _foreign_ckpt(tmp: Path, store: Path) -> None:
    """A sound checkpoint of another model (different width) put in this run's place."""
    other = tmp / "other"
    main(["run", "quickstart", "-q", "--store", str(other), *GUARD, "--set", "model.d_hidden=16"])
    shutil.copy(_ckpt(other), _ckpt(store))


def _schema(version: int):
    def setup(tmp: Path, store: Path) -> None:
        conn = sqlite3.connect(store / "groklab.db")
        conn.execute(f"PRAGMA user_version={version}")
        conn.close()
    return setup


def _not_a_db(tmp: Path, store: Path) -> None:
    for f in store.glob("groklab.db*"):
        f.unlink()
    (store / "groklab.db").write_bytes(b"this is not SQLite" * 100)


T, S = "{tmp}", "{store}"
# (id, argv with {tmp}/{store} placeholders, setup or None, a fragment of the one error line)
CORPUS = [
    # config files
    ("toml-syntax", ["run", f"{T}/a.toml"], _write("a.toml", "[data\np = 5\n"), "invalid TOML"),
    ("toml-bad-value", ["run", f"{T}/a.toml"], _write("a.toml", "[data]\np = \n"), "invalid TOML"),
    ("non-utf8", ["run", f"{T}/a.toml"], _write("a.toml", b"\xff\xfe[data]\np = 5\n"), "is not UTF-8 text"),
    ("binary-file", ["run", f"{T}/a.toml"], _write("a.toml", bytes(range(256)) * 4), "is not UTF-8 text"),
    ("latin1-comment", ["run", f"{T}/a.toml"], _write("a.toml", "# caf\xe9\n".encode("latin-1")), "not UTF-8"),
    ("dir-as-file", ["run", f"{T}/d.toml"], _write("d.toml/x", ""), "does not exist"),
    ("missing-file", ["run", f"{T}/nope.toml"], None, "does not exist"),
    ("unknown-top-key", ["run", f"{T}/a.toml"], _write("a.toml", "foo = 1\n"), "unknown field 'foo'"),
    ("unknown-section-key", ["run", f"{T}/a.toml"], _write("a.toml", "[data]\nfoo = 1\n"), "unknown field 'data.foo'"),
    ("wrong-type-file", ["run", f"{T}/a.toml"], _write("a.toml", '[data]\np = "big"\n'),
     "data.p='big' must be an integer"),
    ("section-not-table", ["run", f"{T}/a.toml"], _write("a.toml", "data = 5\n"), "data=5 must be a table"),
    ("toml-date", ["run", f"{T}/a.toml"], _write("a.toml", "description = 1979-05-27\n"), "must be a string"),
    ("extends-unknown", ["run", f"{T}/a.toml"], _write("a.toml", 'extends = "nope"\n'), "neither a preset nor a file"),
    ("extends-not-string", ["run", f"{T}/a.toml"], _write("a.toml", "extends = 5\n"),
     "extends=5 must be a preset name"),
    ("extends-cycle", ["run", f"{T}/a.toml"], lambda tmp, store: (tmp / "a.toml").write_text(
        f'extends = "{tmp}/a.toml"\n'), "too deep"),
    # --set syntax, types and ranges
    ("set-no-equals", ["run", "quickstart", *GUARD, *_s("steps")], None, "must look like section.field=value"),
    ("set-empty-key", ["run", "quickstart", *GUARD, *_s("=5")], None, "unknown field ''"),
    ("set-unknown-field", ["run", "quickstart", *GUARD, *_s("model.nme=mlp")], None, "unknown field 'model.nme'"),
    ("set-unknown-section", ["run", "quickstart", *GUARD, *_s("modle.name=mlp")], None, "unknown field 'modle'"),
    ("set-not-a-section", ["run", "quickstart", *GUARD, *_s("data.p.x=1")], None, "'p' is not a section"),
    ("set-section-value", ["run", "quickstart", *GUARD, *_s("data=5")], None, "must be a table"),
    ("frac-above-1", ["run", "quickstart", *GUARD, *_s("data.frac_train=2")], None,
     "data.frac_train=2.0 must be in (0, 1)"),
    ("frac-zero", ["run", "quickstart", *GUARD, *_s("data.frac_train=0")], None, "must be in (0, 1)"),
    ("lr-negative", ["run", "quickstart", *GUARD, *_s("optim.lr=-1")], None, "optim.lr=-1.0 must be in (0"),
    ("lr-nan", ["run", "quickstart", *GUARD, *_s("optim.lr=nan")], None, "must be a finite number"),
    ("lr-inf", ["run", "quickstart", *GUARD, *_s("optim.lr=inf")], None, "must be a finite number"),
    ("lr-string", ["run", "quickstart", *GUARD, *_s("optim.lr=fast")], None, "optim.lr='fast' must be a number"),
    ("steps-float", ["run", "quickstart", *GUARD, *_s("train.steps=1.5")], None, "must be an integer"),
    ("steps-bool", ["run", "quickstart", *GUARD, *_s("train.steps=true")], None, "must be an integer"),
    ("steps-zero", ["run", "quickstart", *GUARD, *_s("train.steps=0")], None, "train.steps=0 must be in [1"),
    ("betas-length", ["run", "quickstart", *GUARD, *_s("optim.betas=[0.9]")], None, "must be a list of 2 values"),
    ("betas-scalar", ["run", "quickstart", *GUARD, *_s("optim.betas=0.9")], None, "must be a list"),
    ("beta-range", ["run", "quickstart", *GUARD, *_s("optim.betas=[0.9, 1.5]")], None, "optim.betas[1]=1.5"),
    ("literal-choice", ["run", "quickstart", *GUARD, *_s("model.activation=swish")], None, "one of 'relu'"),
    ("batch-word", ["run", "quickstart", *GUARD, *_s("train.batch_size=half")], None, "one of 'full'"),
    ("unknown-model", ["run", "quickstart", *GUARD, *_s("model.name=resnet")], None, "not a known model"),
    ("unknown-task", ["run", "quickstart", *GUARD, *_s("data.task=cifar")], None, "not a known task"),
    ("unknown-loss", ["run", "quickstart", *GUARD, *_s("train.loss=hinge")], None, "not a known loss"),
    ("unknown-op", ["run", "quickstart", *GUARD, *_s("data.op=x%y")], None, "data.op='x%y'"),
    ("heads-divide", ["run", "power2022-add97", *GUARD, *_s("model.d_model=130")], None, "divisible by model.n_heads"),
    ("p-not-prime", ["run", "quickstart", *GUARD, *_s("data.op=x/y", "data.p=12")], None, "data.p=12 must be prime"),
    ("output-vs-loss", ["run", "quickstart", *GUARD, *_s("model.output=sigmoid", "train.loss=ce")], None,
     "normalizes the logits itself"),
    ("seq-format-mlp", ["run", "quickstart", *GUARD, *_s("data.fmt=seq")], None, "needs data.fmt='op'"),
    ("transformer-norm", ["run", "repro-transformer", *GUARD, *_s("model.norm=mid")], None,
     "model.norm='mid' must be one of 'pre', 'post'"),
    ("transformer-only-field", ["run", "quickstart", *GUARD, *_s("model.dropout_at=ffn")], None,
     "model.dropout_at='ffn' is read by model.name='transformer' only"),
    # phases
    ("phases-unordered", ["run", "quickstart", *GUARD, *_s("train.phases=[{start=3}, {start=1}]")], None,
     "must be after the previous phase's start"),
    ("phases-duplicate", ["run", "quickstart", *GUARD, *_s("train.phases=[{start=2}, {start=2}]")], None,
     "phases may not overlap"),
    ("phase-after-end", ["run", "quickstart", *GUARD, *_s("train.phases=[{start=50}]")], None,
     "train.phases[0].start=50 must be in [0, 4]"),
    ("phase-no-start", ["run", "quickstart", *GUARD, *_s("train.phases=[{lr=0.1}]")], None,
     "train.phases[0].start is required"),
    ("phase-unknown-key", ["run", "quickstart", *GUARD, *_s("train.phases=[{start=1, foo=2}]")], None,
     "unknown field 'train.phases[0].foo'"),
    ("phase-bad-loss", ["run", "quickstart", *GUARD, *_s("train.phases=[{start=1, loss='l9'}]")], None,
     "train.phases[0].loss='l9'"),
    # presets and seeds
    ("unknown-preset", ["run", "quickstrat", *GUARD], None, "did you mean 'quickstart'"),
    ("seeds-word", ["run", "quickstart", *GUARD, "--seeds", "x"], None, "--seeds='x' must be a count"),
    ("seeds-zero", ["run", "quickstart", *GUARD, "--seeds", "0"], None, "must be at least 1"),
    ("seeds-list", ["run", "quickstart", *GUARD, "--seeds", "1,a"], None, "must be a count N or a list"),
    ("seeds-repeated", ["run", "quickstart", *GUARD, "--seeds", "0,1,0"], None, "names seed 0 twice"),
    # data files
    ("data-missing", ["run", "omnigrok-mnist", *GUARD, *_s(f"data.data_dir={T}/nodata")], None, "not found"),
    ("data-corrupt", ["run", "omnigrok-mnist", *GUARD, *_s(f"data.data_dir={T}/bad")],
     _write("bad/t10k-images-idx3-ubyte.gz", b"\x1f\x8b garbage"), "t10k-images-idx3-ubyte.gz"),
    # checkpoints
    ("ckpt-truncated", ["resume", "1"], _truncate, "is truncated"),
    ("ckpt-tampered", ["resume", "1"], _tamper, "fails its SHA-256 check"),
    ("ckpt-pickle", ["resume", "1"], _pickle_ckpt, "groklab never unpickles checkpoints"),
    ("ckpt-torch-save", ["resume", "1"], _torch_save_ckpt, "groklab never unpickles checkpoints"),
    ("ckpt-foreign", ["resume", "1"], _foreign_ckpt, "does not fit this run"),
    ("ckpt-tampered-extend", ["extend", "1", "--steps", "9"], _tamper, "fails its SHA-256 check"),
    ("extend-budget", ["extend", "1", "--steps", "5"], None, "steps=5 must be an integer above the run's train.steps (5)"),
    ("extend-missing-run", ["extend", "99", "--steps", "9"], None, "run 99 is not in the store"),
    ("ckpt-none-yet", ["fourier", "1"], lambda tmp, store: _ckpt(store).unlink(),  # stopped before one
     "run 1 (finished) has no saved weights yet"),
    # stores and run ids
    ("store-newer-schema", ["ls"], _schema(99), "has schema version 99, newer than"),
    ("store-not-sqlite", ["ls"], _not_a_db, "is not a groklab store"),
    ("show-missing-run", ["show", "99"], None, "run 99 is not in the store"),
    ("merge-no-source", ["merge", f"{T}/nowhere"], None, "no store at"),
    ("merge-itself", ["merge", S], None, "is the store being merged into"),
    ("merge-unknown-sweep", ["merge", f"{T}/other", "--sweep", "nope"], lambda tmp, store: shutil.copytree(
        store, tmp / "other"), "sweep 'nope' has no runs in"),
    ("merge-newer-schema", ["merge", f"{T}/other"], lambda tmp, store: (
        shutil.copytree(store, tmp / "other"), _schema(99)(tmp, tmp / "other")), "has schema version 99, newer than"),
    ("resume-missing-run", ["resume", "99"], None, "run 99 is not in the store"),
    ("plot-missing-run", ["plot", "99"], None, "run 99 is not in the store"),
    ("show-every-zero", ["show", "1", "--table", "--every", "0"], None, "--every=0 must be at least 1"),
    ("plot-extension", ["plot", "1", "-o", f"{T}/x.gif"], None, "must end in .png"),
    ("unknown-command", ["frobnicate"], None, "invalid choice"),
    ("run-id-not-int", ["show", "one"], None, "invalid int value"),
    # sweeps
    ("sweep-unknown", ["sweep", "nosuchsweep"], None, "nosuchsweep"),
    ("sweep-bad-range", ["sweep", "quickstart", "--grid", "data.frac_train=range:a:b:c"], None, "range"),
    ("sweep-workers", ["sweep", "quickstart", "--grid", "optim.lr=1e-3,2e-3", "--workers", "0"], None,
     "--workers=0 must be at least 1"),
    ("reproduce-retries", ["reproduce", "quickstart-delay", "--backend", "ray", "--retries", "-1"], None,
     "--retries=-1 must be at least 0"),
    ("sweep-unknown-key", ["sweep", f"{T}/s.toml"], _write("s.toml", 'base = "quickstart"\nfoo = 1\n'),
     "unknown sweep key"),
    ("sweep-non-utf8", ["sweep", f"{T}/s.toml"], _write("s.toml", b'base = "\xff"\n'), "not UTF-8"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A store with one finished run (and its checkpoint), copied fresh for every case."""
    root = tmp_path_factory.mktemp("template") / "runs"
    assert main(["run", "quickstart", "-q", "--store", str(root), *GUARD]) == 0
    return root


def _snapshot(store: Path) -> dict:
    """What must not change: rows, metrics and every file's bytes (the database by its content)."""
    st = Store(store)
    rows = [(r["id"], r["status"], r["summary"].get("steps")) for r in st.list()]
    metrics = st.conn.execute("SELECT COUNT(*), SUM(value) FROM metrics").fetchone()[:]
    st.close()
    files = {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in store.rglob("*") if p.is_file() and not p.name.startswith("groklab.db")}
    return {"rows": rows, "metrics": metrics, "files": files}


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_one_line_exit_2_nothing_written(case, template, tmp_path, capsys):
    name, argv, setup, fragment = case
    store = tmp_path / "runs"
    shutil.copytree(template, store)
    if setup is not None:
        setup(tmp_path, store)
    capsys.readouterr()
    before = _snapshot(store) if name not in ("store-newer-schema", "store-not-sqlite") else None
    argv = [a.replace(T, str(tmp_path)).replace(S, str(store)) for a in argv]
    if argv[0] not in ("frobnicate", "presets"):
        argv += ["--store", str(store)]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors (unknown command, a non-integer id)
        code = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (name, err)
    assert len(lines) == 1 and lines[0].startswith("groklab: error: ") and "Traceback" not in err, err
    if fragment:
        assert fragment in lines[0], lines[0]
    assert out == ""
    if before is not None:
        assert _snapshot(store) == before  # nothing half-written, the existing run untouched
    assert not list(store.rglob("*.tmp*"))


def test_api_seeds_get_the_cli_checks(tmp_path):
    from groklab.api import run
    with pytest.raises(ConfigError, match="names seed 1 twice"):
        run("quickstart", seeds=[1, 0, 1], store=tmp_path / "runs")
    with pytest.raises(ConfigError, match="must be a list of integers"):
        run("quickstart", seeds=[0, 0.5], store=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 40 and len({c[0] for c in CORPUS}) == len(CORPUS)


# ---------------------------------------------------------------- security

def test_pickle_is_refused_without_being_loaded(tmp_path):
    """A pickle that would run code when loaded is refused before anything unpickles it."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_tensors(path)
    path.write_bytes(pickle.dumps(Payload(), protocol=0))  # text protocol: no 0x80 magic byte
    with pytest.raises(CheckpointError):
        read_tensors(path)
    assert not marker.exists()


def test_config_text_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for override in (f"description={code}", f"name={code}", f"optim.lr={code}"):
        try:
            cfg = load_config("quickstart", [override])
        except ConfigError:
            continue
        assert code in (cfg.description, cfg.name)  # kept as text
    path = tmp_path / "a.toml"
    path.write_text(f'description = "{code}"\nname = "x"\n')
    assert load_config(path).description == code
    assert not marker.exists()


# ---------------------------------------------------------------- fuzz

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FIELDS = ["name", "description", "data.task", "data.op", "data.p", "data.frac_train", "data.fmt", "model.name",
          "model.d_model", "model.n_heads", "model.activation", "model.output", "model.dropout", "optim.lr",
          "optim.betas", "optim.weight_decay", "optim.wd_kind", "train.steps", "train.batch_size", "train.loss",
          "train.phases", "train.threads", "train.checkpoint_every", "data", "model", "extends"]
# Bounded integers: a prime check of a 20-digit modulus is slow, not wrong.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["full", "auto", "mlp", "x/y", "ce", "seq", "relu"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tree(items: dict) -> dict:
    tree: dict = {}
    for dotted, v in items.items():
        node = tree
        *heads, last = dotted.split(".")
        for h in heads:
            node = node.setdefault(h, {}) if isinstance(node.get(h, {}), dict) else {}
        node[last] = v
    return tree


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=6))
def test_fuzz_config_dict_only_raises_config_error(items):
    try:
        cfg = load_config(_tree(items))
    except ConfigError:
        return
    assert isinstance(cfg, RunCfg)


@FUZZ
@given(st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(FIELDS), st.one_of(st.text(max_size=16), scalars.map(str))),
    st.text(max_size=24)), max_size=4))
def test_fuzz_set_overrides_only_raise_config_error(overrides):
    try:
        cfg = load_config("quickstart", overrides)
    except ConfigError:
        return
    assert isinstance(cfg, RunCfg)


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.text(max_size=64).map(str.encode),
                 st.builds(lambda k, v: f"{k} = {v}\n".encode(), st.sampled_from(FIELDS), st.text(max_size=12))))
def test_fuzz_toml_file_only_raises_config_error(tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.toml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    assert isinstance(cfg, RunCfg)
