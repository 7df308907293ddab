"""The run configuration: one tree of frozen, typed dataclasses, validated at the boundary.

A config comes from a TOML preset shipped in ``groklab/presets`` or from a user's TOML file (the
same code path), plus dotted overrides::

    cfg = load_config("power2022-add97", overrides=["train.steps=20000", "optim.lr=3e-4"])

Every field is type-checked; unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the field and the valid choices. Change a config with
``dataclasses.replace`` or :func:`with_overrides`; nothing mutates one.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

from .registry import LOSSES, MODELS, TASKS, ConfigError, suggest

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ConfigError", "DataCfg", "ModelCfg", "OptimCfg", "Phase", "TrainCfg", "RunCfg",
    "load_config", "from_dict", "to_dict", "with_overrides", "list_presets", "MEMBER_FIELDS", "flatten",
    "member_fields", "ensemble_signature", "check_ensemble", "parse_seeds",
]


def fail(path: str, value: Any, why: str) -> None:
    """Raise the one-line ConfigError `path=value why` (also for the `validate` rules of entries)."""
    raise ConfigError(f"{path}={value!r} {why}")


def _check_range(path: str, value: float, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, hi_open: bool = False) -> None:
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi or (isinstance(value, float) and math.isnan(value)):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        fail(path, value, f"must be in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}")


def _entry_options(section: Any, registry: Any, name: str, path: str) -> None:
    """Type-check `section.options` against the `Options` dataclass of the registered entry `name`
    and store the typed instance (`cfg.options.width`); an entry without `Options` takes none.
    An unknown name is left to the cross-check, which reports it."""
    value = section.options
    if name not in registry:
        return
    cls = getattr(registry.get(name), "Options", None)
    if cls is None:
        if value:
            fail(path, value, f"must be empty: {registry.field}={name!r} has no options")
        return
    if not isinstance(value, cls):
        if not isinstance(value, dict):
            fail(path, value, "must be a table")
        object.__setattr__(section, "options", from_dict(cls, value, path))


@dataclass(frozen=True)
class DataCfg:
    """What the network learns: a registered task and how it is split."""

    task: str = "modular"
    """Registered task: `modular` (binary op mod p), `kwise` (x1+…+xk mod p), `mnist`, `wine`."""
    options: Any = field(default_factory=dict)
    """Fields of the task's own `Options` (an extension's settings, `[data.options]`; docs/extending.md)."""
    op: str = "x+y"
    """Binary operation for the `modular` task, e.g. `x+y`, `x-y`, `x*y`, `x/y`, `x^2+y^2`."""
    p: int = 97
    """Modulus (and number of operand tokens)."""
    k: int = 2
    """Number of summands for the `kwise` task."""
    fmt: Literal["op", "seq"] = "op"
    """Token format: `op` = [x, op, y, =]; `seq` = [<sos>, x, +, y, mod, =] (the RNN/LSTM study)."""
    frac_train: float = 0.5
    """Fraction of all examples used for training (the rest is validation)."""
    split_seed: int = 0
    """Seed of the train/validation split's own generator (independent of the init seed)."""
    label_noise: float = 0.0
    """Fraction of training labels replaced by random classes (fixed per split seed); 1.0 = every
    training label random, a target only memorization can fit (the memorizing network C_mem)."""
    n_train: int = 1000
    """Real-data tasks: number of training examples drawn from the pool."""
    n_val: int = 0
    """Real-data tasks: validation examples (0 = every example not used for training)."""
    data_dir: str = ""
    """Real-data tasks: directory with the files ('' = $GROKLAB_DATA, else ./data)."""
    colour: Literal["red", "white", "both"] = "red"
    """Wine Quality: which wines."""
    target: Literal["classes", "regression"] = "classes"
    """Wine Quality: quality as classes or as a regression target."""

    def __post_init__(self) -> None:
        _check_range("data.p", self.p, 2)
        _check_range("data.k", self.k, 2)
        _check_range("data.frac_train", self.frac_train, 0, 1, lo_open=True, hi_open=True)
        _check_range("data.label_noise", self.label_noise, 0, 1)
        _check_range("data.n_train", self.n_train, 1)
        _check_range("data.n_val", self.n_val, 0)
        _entry_options(self, TASKS, self.task, "data.options")


# Transformer-only choices and their defaults (other models refuse a non-default value).
TRANSFORMER_ONLY = {"norm": "pre", "dropout_at": "all", "positions": "learned"}


@dataclass(frozen=True)
class ModelCfg:
    """The network: a registered architecture and its sizes."""

    name: str = "transformer"
    """Registered model: transformer, mlp, rnn, gru, lstm."""
    options: Any = field(default_factory=dict)
    """Fields of the model's own `Options` (an extension's settings, `[model.options]`; docs/extending.md)."""
    n_layers: int = 2
    """Transformer blocks, MLP hidden layers, or stacked recurrent layers."""
    d_model: int = 128
    """Residual width (Transformer) or token-embedding size (MLP, recurrent)."""
    n_heads: int = 4
    """Attention heads (Transformer)."""
    d_mlp: int = 512
    """Hidden width of the Transformer's MLP blocks."""
    d_hidden: int = 256
    """Hidden width of the MLP, hidden size of recurrent layers."""
    activation: Literal["relu", "gelu", "quadratic", "tanh", "sigmoid"] = "relu"
    """Hidden activation (MLP and Transformer MLP blocks; `tanh`/`relu` for the vanilla RNN)."""
    output: Literal["linear", "sigmoid", "softmax"] = "linear"
    """Output head applied to the logits before the loss (MLP on real data)."""
    dropout: float = 0.0
    """Dropout probability (residual/hidden; between recurrent layers)."""
    layer_norm: bool = True
    """Use layer norm (pre-norm Transformer; optional on recurrent outputs)."""
    causal: bool = True
    """Causal attention mask (decoder-only Transformer)."""
    init: Literal["scaled", "torch"] = "scaled"
    """Token-embedding init (every model that embeds tokens: `reads_init` on the model class):
    `scaled` = token and learned position embeddings N(0, 1/d); `torch` = PyTorch's defaults,
    nn.Embedding's N(0, 1) (the studies' and openai/grok's code). Linear and recurrent layers are
    uniform ±1/sqrt(fan_in) (nn.Linear's, nn.RNN's default) either way."""
    norm: Literal["pre", "post"] = "pre"
    """Transformer layer-norm placement: `pre` = x + attn(ln(x)), x + ffn(ln(x)), final ln before
    the unembedding (GPT-2); `post` = ln(x + attn(x)), ln(a + ffn(a)), no final ln (Power et al.'s
    decoder, openai/grok). Needs model.layer_norm = true to matter."""
    dropout_at: Literal["all", "ffn"] = "all"
    """Where the Transformer applies model.dropout: `all` = embeddings, attention output and
    feed-forward output (GPT-2); `ffn` = the feed-forward output only (openai/grok)."""
    positions: Literal["learned", "sinusoidal"] = "learned"
    """Transformer positional embedding: `learned` (a parameter) or `sinusoidal` (fixed sines and
    cosines, Vaswani et al.; openai/grok)."""
    init_scale: float = 1.0
    """Initialization scale α: initial weights are multiplied by α (Omnigrok)."""
    logit_scale: float = 1.0
    """Multiply the output logits by this constant."""
    mix_mem: int | None = None
    """Mixture model: run id of the frozen memorizing network C_mem (in `mix_store`)."""
    mix_gen: int | None = None
    """Mixture model: run id of the frozen generalizing network C_gen (in `mix_store`)."""
    mix_store: str = ""
    """Mixture model: store holding both runs ('' = ./runs or $GROKLAB_STORE)."""
    mix_w_mem2: float = 1.0
    """Mixture model: initial w_m2 (w_mem = w_m1·w_m2, w_m1 starts at 0); larger = C_mem learns faster."""
    mix_w_gen2: float = 1.0
    """Mixture model: initial w_g2 (w_gen = w_g1·w_g2, w_g1 starts at 0)."""

    def __post_init__(self) -> None:
        _check_range("model.n_layers", self.n_layers, 1)
        for name in ("d_model", "n_heads", "d_mlp", "d_hidden"):
            _check_range(f"model.{name}", getattr(self, name), 1)
        _check_range("model.dropout", self.dropout, 0, 1, hi_open=True)
        _check_range("model.init_scale", self.init_scale, 0, lo_open=True)
        _check_range("model.logit_scale", self.logit_scale, 0, lo_open=True)
        if self.name != "transformer":
            for name, default in TRANSFORMER_ONLY.items():
                if getattr(self, name) != default:
                    fail(f"model.{name}", getattr(self, name),
                          f"is read by model.name='transformer' only (here {self.name!r}); leave it at {default!r}")
        if self.init != "scaled" and self.name in MODELS and not getattr(MODELS.get(self.name), "reads_init", False):
            fail("model.init", self.init, f"is read by models with token embeddings only (here {self.name!r}); "
                 "leave it at 'scaled'")
        _entry_options(self, MODELS, self.name, "model.options")


@dataclass(frozen=True)
class OptimCfg:
    """The optimizer, its schedule and the interventions applied around each update."""

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    """Optimizer."""
    lr: float = 1e-3
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """Adam betas."""
    eps: float = 1e-8
    """Adam epsilon."""
    momentum: float = 0.0
    """SGD momentum."""
    weight_decay: float = 0.0
    """Weight-decay strength λ."""
    wd_kind: Literal["auto", "decoupled", "to_init", "l2"] = "auto"
    """`decoupled` (AdamW, toward 0), `to_init` (decoupled, toward the initial weights), `l2`
    (λ/2·||w||² added to the loss); `auto` = decoupled for adamw, l2 for adam and sgd."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to lr over this many steps."""
    schedule: Literal["constant", "cosine", "step"] = "constant"
    """Learning-rate schedule after warm-up."""
    min_lr_ratio: float = 0.0
    """Cosine: final lr as a fraction of the peak."""
    step_every: int = 1000
    """Step schedule: multiply lr by step_gamma every this many steps."""
    step_gamma: float = 0.5
    """Step schedule: decay factor."""
    grad_clip: float = 0.0
    """Clip each member's gradient norm to this value (0 = off)."""
    update_noise: float = 0.0
    """Std of Gaussian noise added to each parameter update."""
    weight_noise: float = 0.0
    """Std of Gaussian noise added to the weights for each forward/backward pass."""
    grokfast: Literal["none", "ema", "ma"] = "none"
    """Grokfast gradient filter (Lee et al. 2024): exponential or windowed moving average."""
    grokfast_alpha: float = 0.98
    """Grokfast EMA momentum α."""
    grokfast_lamb: float = 2.0
    """Grokfast amplification λ: g ← g + λ·filtered(g)."""
    grokfast_window: int = 100
    """Grokfast MA window."""
    orthograd: bool = False
    """⊥Grad (Prieto et al. 2025): drop the gradient component parallel to the weights."""

    def __post_init__(self) -> None:
        _check_range("optim.lr", self.lr, 0, lo_open=True)
        for i, b in enumerate(self.betas):
            _check_range(f"optim.betas[{i}]", b, 0, 1, hi_open=True)
        _check_range("optim.eps", self.eps, 0, lo_open=True)
        _check_range("optim.momentum", self.momentum, 0, 1, hi_open=True)
        for name in ("weight_decay", "grad_clip", "update_noise", "weight_noise", "min_lr_ratio",
                     "grokfast_lamb"):
            _check_range(f"optim.{name}", getattr(self, name), 0)
        _check_range("optim.warmup_steps", self.warmup_steps, 0)
        _check_range("optim.step_every", self.step_every, 1)
        _check_range("optim.step_gamma", self.step_gamma, 0, 1, lo_open=True)
        _check_range("optim.grokfast_alpha", self.grokfast_alpha, 0, 1, hi_open=True)
        _check_range("optim.grokfast_window", self.grokfast_window, 1)

    @property
    def decay_kind(self) -> str:
        """The weight-decay kind with `auto` resolved."""
        if self.wd_kind != "auto":
            return self.wd_kind
        return "decoupled" if self.name == "adamw" else "l2"


@dataclass(frozen=True)
class Phase:
    """From step `start` on, override any of these (unset fields keep their value)."""

    RENAMED: ClassVar[dict[str, str]] = {"train_frac": "frac_train"}
    """Old key → field: stored runs and older files keep reading."""

    start: int
    """First step of the phase."""
    weight_decay: float | None = None
    wd_kind: Literal["decoupled", "to_init", "l2"] | None = None
    lr: float | None = None
    loss: str | None = None
    frac_train: float | None = None
    """Keep a random subset of this fraction of the *original* training set (ungrokking); named
    like `data.frac_train` (older files' and stored runs' `train_frac` still reads)."""
    name: str = ""
    """Label drawn on plots."""


@dataclass(frozen=True)
class TrainCfg:
    """The training loop: length, batches, loss, evaluation, checkpoints, threads."""

    steps: int = 10_000
    """Number of optimizer steps."""
    batch_size: int | Literal["full"] = 512
    """Examples per step (drawn per member without replacement), or `full` for full batch."""
    loss: str = "ce"
    """Registered loss: ce, ce64, mse, mse_linear, stablemax."""
    seed: int = 0
    """Seed for initialization, batch draws, dropout and noise."""
    eval_every: int = 100
    """Evaluate every this many steps, in addition to log-spaced steps."""
    eval_log_points: int = 60
    """Number of log-spaced evaluation steps (smooth curves on a log axis)."""
    early_stop: bool = False
    """Stop once val accuracy holds >= early_stop_acc for early_stop_patience evaluations."""
    early_stop_acc: float = 0.99
    early_stop_patience: int = 3
    log_layer_norms: bool = False
    """Also record the L2 norm of every parameter tensor at each evaluation (`norm.<name>`)."""
    checkpoint_every: int = 1000
    """Write a resumable checkpoint every this many steps (and at the end)."""
    threads: int | Literal["auto"] = "auto"
    """Torch CPU threads: `auto` = the machine's cores for one run."""
    device: str = "auto"
    """`auto` (cuda if available), `cpu`, `cuda`, `cuda:1`."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """Matmul arithmetic: fp32 (fidelity), tf32 (TF32 tensor cores on CUDA) or bf16 (autocast);
    losses keep their own precision (`ce64` and `stablemax` stay float64)."""
    deterministic: bool = False
    """torch's deterministic algorithms (CUDA: bitwise-reproducible runs, somewhat slower)."""
    cuda_graphs: bool = True
    """On CUDA, replay each phase's training step as one CUDA graph (no effect on the CPU)."""
    compile: bool = False
    """torch.compile the step's forward and loss (fused kernels; the first steps compile for a while).
    Pays for large ensembles on a GPU; off by default (compile time, and results differ in the last bits)."""
    phases: tuple[Phase, ...] = ()
    """Phased schedule: late weight decay, wd removal, ungrokking, loss switches."""

    def __post_init__(self) -> None:
        _check_range("train.steps", self.steps, 1)
        if self.batch_size != "full":
            _check_range("train.batch_size", self.batch_size, 1)
        _check_range("train.eval_every", self.eval_every, 1)
        _check_range("train.eval_log_points", self.eval_log_points, 0)
        _check_range("train.early_stop_acc", self.early_stop_acc, 0, 1)
        _check_range("train.early_stop_patience", self.early_stop_patience, 1)
        _check_range("train.checkpoint_every", self.checkpoint_every, 1)
        if self.threads != "auto":
            _check_range("train.threads", self.threads, 1)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            fail("train.device", self.device, "must be one of 'auto', 'cpu', 'cuda', 'cuda:N'")
        last = -1
        for i, ph in enumerate(self.phases):
            path = f"train.phases[{i}]"
            _check_range(f"{path}.start", ph.start, 0, self.steps - 1)
            if ph.start <= last:
                fail(f"{path}.start", ph.start, f"must be after the previous phase's start ({last}); phases may not overlap")
            last = ph.start
            if ph.frac_train is not None:
                _check_range(f"{path}.frac_train", ph.frac_train, 0, 1, lo_open=True)
            if ph.lr is not None:
                _check_range(f"{path}.lr", ph.lr, 0, lo_open=True)
            if ph.weight_decay is not None:
                _check_range(f"{path}.weight_decay", ph.weight_decay, 0)


@dataclass(frozen=True)
class RunCfg:
    """A whole run: name, description and the four sections."""

    name: str = "run"
    description: str = ""
    data: DataCfg = field(default_factory=DataCfg)
    model: ModelCfg = field(default_factory=ModelCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)

    def __post_init__(self) -> None:
        _cross_check(self)


# Fields in which members of one vectorized ensemble may differ; everything else must match.
MEMBER_FIELDS = frozenset({
    "name", "description", "train.seed", "data.frac_train", "data.split_seed", "data.label_noise",
    "optim.lr", "optim.weight_decay", "optim.update_noise", "optim.weight_noise",
    "optim.grokfast_lamb", "optim.grokfast_alpha", "model.init_scale",
})


def _cross_check(cfg: RunCfg) -> None:
    """Checks that span sections or need a registered entry. The registries (`registry.py`) hold
    the rules: the named task's and model's own `validate(run_cfg)`, each registry's
    `cross_check` rules (a normalizing loss after an output head), and what inputs a task gives
    and a model accepts. No task, model or loss is named here."""
    task = TASKS.get(cfg.data.task)
    model = MODELS.get(cfg.model.name)
    for entry in (task, model):
        validate = getattr(entry, "validate", None)
        if validate is not None:  # the entry's own rules (a task's operation, a model's sizes)
            validate(cfg)
    for path, loss in loss_fields(cfg):
        if loss not in LOSSES:
            raise ConfigError(LOSSES.unknown(loss, field=path))
    inputs = getattr(task, "inputs", "tokens")
    if inputs not in getattr(model, "accepts", ("tokens",)):
        fail("model.name", cfg.model.name,
              f"cannot take data.task={cfg.data.task!r} ({inputs} input); models that can: "
              + ", ".join(n for n in MODELS if inputs in getattr(MODELS.get(n), "accepts", ("tokens",))))
    for registry in (TASKS, MODELS, LOSSES):
        registry.check(cfg)


def loss_fields(cfg: RunCfg) -> list[tuple[str, str]]:
    """(field, loss name) of the run's loss and of every phase that switches it."""
    return [("train.loss", cfg.train.loss)] + [
        (f"train.phases[{i}].loss", ph.loss) for i, ph in enumerate(cfg.train.phases) if ph.loss]


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


# ---------------------------------------------------------------- ensembles

def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted field → value of a config (or of its `to_dict` tree): `{"optim.lr": 1e-3, ...}`.
    Leaves are JSON-ready (tuples as lists, phases as tables); unset (None) fields are left out."""
    if dataclasses.is_dataclass(tree):
        tree = to_dict(tree)
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def member_fields(cfg: RunCfg) -> frozenset[str]:
    """The fields in which ensemble members of `cfg` may differ: MEMBER_FIELDS, less those its task
    needs shared (`shared_fields`: e.g. a task that standardizes with training-set statistics)."""
    return MEMBER_FIELDS - frozenset(getattr(TASKS.get(cfg.data.task), "shared_fields", ()))


def ensemble_signature(cfg: RunCfg, ignore: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields every member of an ensemble with `cfg` must share (less `ignore`): runs with equal
    signatures may train as one ensemble."""
    skip = member_fields(cfg) | ignore
    return {k: v for k, v in flatten(cfg).items() if k not in skip}


def check_ensemble(cfgs: typing.Sequence[RunCfg]) -> None:
    """Raise ConfigError unless all `cfgs` may train as one ensemble (see :func:`ensemble_signature`)."""
    base = ensemble_signature(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], 1):
        sig = ensemble_signature(cfg)
        for key in sorted(base.keys() | sig.keys()):
            if base.get(key) != sig.get(key):
                raise ConfigError(f"ensemble member {i} differs in {key} ({base.get(key)!r} vs {sig.get(key)!r}); "
                                  f"members may differ only in: {', '.join(sorted(member_fields(cfgs[0])))}")


def parse_seeds(value: Any, what: str = "seeds") -> tuple[int, ...]:
    """Seeds from a count N (seeds 0..N-1), a list of integers, or text `N` / `a,b,c` (the CLI's).

    Raises:
        ConfigError: naming `what` (`--seeds`, `seeds`) when the value is none of these.
    """
    if isinstance(value, str):
        try:
            value = [int(s) for s in value.split(",") if s.strip()] if "," in value else int(value)
        except ValueError:
            raise ConfigError(f"{what}={value!r} must be a count N or a list a,b,c of integers") from None
    if isinstance(value, bool) or not isinstance(value, (int, list, tuple)):
        raise ConfigError(f"{what}={value!r} must be a count N (seeds 0..N-1) or a list of integers")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"{what}={value} must be at least 1")
        return tuple(range(value))
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise ConfigError(f"{what}={value!r} must be a list of integers")
    again = next((s for i, s in enumerate(value) if s in value[:i]), None)
    if again is not None:  # the same seed twice is the same run twice: a typo, not an experiment
        raise ConfigError(f"{what}={','.join(map(str, value))} names seed {again} twice; give each seed once")
    return tuple(value)


# ---------------------------------------------------------------- dict <-> dataclass, typed

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it in the dataclass's representation."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(e)
        fail(path, value, f"must be {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            fail(path, value, f"must be {_type_name(tp)}")
        return value
    if tp is type(None):
        if value is not None:
            fail(path, value, "must be null")
        return None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(path, value, "must be a list")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            fail(path, value, f"must be a list of {len(args)} values")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            fail(path, value, "must be a table")
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, value, "must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)  # 1e5 written as a float
            fail(path, value, "must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(path, value, "must be a number")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            fail(path, value, "must be a finite number")
        if not math.isfinite(value):  # TOML allows inf and nan; no field means either
            fail(path, value, "must be a finite number")
        return value
    if tp is str:
        if not isinstance(value, str):
            fail(path, value, "must be a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {path}")  # a bug in the config classes


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for old, new in getattr(cls, "RENAMED", {}).items():  # keys written before a field was renamed
        if old in data:
            if new in data:
                raise ConfigError(f"{path}: {old!r} is the old name of {new!r}; give one of them")
            data = {(new if k == old else k): v for k, v in data.items()}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"unknown field {where!r}; valid fields{' of ' + path if path else ''}: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    for f in fields(cls):
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            where = f"{path}.{f.name}" if path else f.name
            raise ConfigError(f"{where} is required ({_type_name(hints[f.name])}); e.g. {{ {f.name} = ... }}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field (Phase.start) is missing
        raise ConfigError(f"{path or cls.__name__}: {e}") from None


def to_dict(cfg: Any, keep_none: bool = False) -> dict:
    """A JSON/TOML-ready dict (tuples become lists; unset (None) fields are dropped unless `keep_none`)."""
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v, keep_none)
        elif isinstance(v, tuple):
            v = [to_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        if (v is None or (f.name == "options" and v == {})) and not keep_none:
            continue  # unset, or no options: stored configs stay as they were before options existed
        out[f.name] = v
    return out


def _parse_value(text: str) -> Any:
    """A TOML value (numbers, booleans, lists, quoted strings); a bare word is a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(tree: dict, dotted: str, value: Any) -> None:
    """Set `tree[a][b] = value` for `dotted` = 'a.b', creating missing tables."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        nxt = node.setdefault(key, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"cannot set {dotted!r}: {key!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `a.b=value` strings to a config dict (validated when the dataclass is built)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, text = item.split("=", 1)
        set_path(tree, key.strip(), _parse_value(text.strip()))
    return tree


def with_overrides(cfg: RunCfg, overrides: list[str] | tuple[str, ...] | dict[str, Any]) -> RunCfg:
    """A new config with dotted overrides applied (`{"optim.lr": 1e-4}` or `["optim.lr=1e-4"]`)."""
    tree = to_dict(cfg)
    if isinstance(overrides, dict):
        for k, v in overrides.items():
            set_path(tree, k, v)
    else:
        apply_overrides(tree, overrides)
    return from_dict(RunCfg, tree)


def get_field(cfg: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


# ---------------------------------------------------------------- presets and files

def _preset_dir():
    return resources.files("groklab") / "presets"


def describe_tomls(folder) -> dict[str, str]:
    """File stem → first line of the `description` of every TOML file in `folder`."""
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text())
            out[entry.name[:-5]] = str(data.get("description", "")).strip().split("\n")[0]
    return out


def list_presets() -> dict[str, str]:
    """Preset name → one-line description."""
    return describe_tomls(_preset_dir())


def read_source(source: str | Path, depth: int = 0) -> dict:
    """The raw dict of a preset name or a TOML file path; `extends = "preset"` inherits."""
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"extends={source!r} must be a preset name or a TOML file path (a string)")
    path = Path(source)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        text = _read_text(path)
    else:
        entry = _preset_dir() / f"{source}.toml"
        if not entry.is_file():
            names = list(list_presets())
            raise ConfigError(f"preset {str(source)!r} is neither a preset nor a file{suggest(source, names)}; "
                              f"presets: {', '.join(names)}")
        text = entry.read_text()
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if depth > 8:
        raise ConfigError(f"{source}: `extends` chain is too deep (a cycle?)")
    base = read_source(parent, depth + 1)
    base.pop("description", None)
    return _merge(base, tree)


def _read_text(path: Path) -> str:
    """A config file's text: UTF-8 (as TOML requires), else one clear error naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start}); a config must be a "
                          "TOML file") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None


def _merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into `base` (tables merge, values replace)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(source: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> RunCfg:
    """Load a preset name, TOML path or dict, apply dotted overrides, validate.

    Args:
        source: preset name (see `groklab presets`), path to a TOML file, or a dict.
        overrides: strings like ``"optim.lr=3e-4"``.
    Returns:
        The validated, frozen :class:`RunCfg`.
    """
    tree = dict(source) if isinstance(source, dict) else read_source(source)
    tree = copy.deepcopy(tree)  # TOML dates are not JSON: a JSON round trip would crash on them
    if not isinstance(source, dict) and "name" not in tree:
        tree["name"] = Path(str(source)).stem
    return from_dict(RunCfg, apply_overrides(tree, overrides))


def config_json(cfg: RunCfg) -> str:
    return json.dumps(to_dict(cfg), sort_keys=True)
