"""Recurrent models (rnn, gru, lstm): registry checks on every token format, parity with
torch.nn's cells, ensemble member == solo run, a tiny run that groks, presets, bad configs."""
import pytest
import torch
from torch import nn

from groklab import load_config, with_overrides
from groklab.config import ConfigError, DataCfg, ModelCfg
from groklab.data import TASKS
from groklab.data.algorithmic import special_tokens
from groklab.models import MODELS, build_model
from groklab.train import train

from conftest import CPU, tiny

RECURRENT = ("rnn", "gru", "lstm")
FORMATS = {  # name → DataCfg; every token format a recurrent model must read
    "op": DataCfg(p=11),
    "seq": DataCfg(p=11, fmt="seq"),
    "kwise": DataCfg(task="kwise", p=5, k=3),
}
PRESETS = ("lstm-add97", "lstm-add97-wd03", "lstm1-add97", "gru-add97", "lstm-seq-add", "rnn-seq-add", "rnn-add97")


def _task(fmt: str):
    cfg = FORMATS[fmt]
    return TASKS.get(cfg.task)().build(cfg)


def _model(name, task, n=2, seed=0, **kw):
    kw = {"n_layers": 2, "d_model": 16, "d_hidden": 24, "activation": "tanh", **kw}
    model = build_model(ModelCfg(name=name, **kw), task, n)
    model.reset_parameters([torch.Generator().manual_seed(seed + i) for i in range(n)], torch.ones(n))
    return model


def test_registered():
    assert set(RECURRENT) <= set(MODELS.names())
    assert all(MODELS.get(name).accepts == ("tokens",) for name in RECURRENT)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("name", RECURRENT)
def test_forward_shape_backward_no_nan(name, layer_norm, fmt):
    task = _task(fmt)
    model = _model(name, task, layer_norm=layer_norm, dropout=0.1)
    x = task.x[:5].unsqueeze(0).expand(2, -1, -1)                    # (N, B, T)
    out = model(x)
    assert out.shape == (2, 5, task.n_out)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", RECURRENT)
def test_same_seed_same_output_and_member_equals_solo(name, fmt):
    task = _task(fmt)
    x = task.x[:7].unsqueeze(0).expand(2, -1, -1)
    a, b = _model(name, task, seed=0).eval(), _model(name, task, seed=0).eval()
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    solo = _model(name, task, n=1, seed=1).eval()                     # member 1 of (0, 1) is seed 1
    torch.testing.assert_close(a(x)[1], solo(x[:1])[0])


@pytest.mark.parametrize("name,activation", [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")])
def test_matches_torch_nn_with_same_weights(name, activation):
    """Golden test: a 1-member model equals torch.nn.{RNN,GRU,LSTM} + embedding + linear head
    loaded with its weights (ours are stored (d_in, G·h) per member, torch's (G·h, d_in))."""
    task = _task("seq")
    model = _model(name, task, n=1, layer_norm=False, activation=activation).eval()
    kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[name]
    extra = {"nonlinearity": activation} if name == "rnn" else {}
    ref = kind(16, 24, num_layers=2, batch_first=True, **extra)
    with torch.no_grad():
        for k, layer in enumerate(model.layers):
            for pname in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                ours = getattr(layer, pname)[0]                       # (d_in, G·h) or (1, G·h)
                getattr(ref, f"{pname}_l{k}").copy_(ours.T if pname.startswith("weight") else ours[0])
        x = task.x[:13]
        seq, _ = ref(model.embed.weight[0][x])                        # (B, T, h)
        want = seq[:, -1] @ model.head.weight[0] + model.head.bias[0]
        got = model(x.unsqueeze(0))[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # Same parameter count as the torch modules it mirrors.
    n_ref = sum(p.numel() for p in ref.parameters()) + model.embed.weight.numel() + model.head.weight.numel() \
        + model.head.bias.numel()
    assert model.param_counts()["params"] == n_ref


@pytest.mark.parametrize("name", RECURRENT)
def test_member_chunks_equal_one_chunk(name, monkeypatch):
    """Large members run the time loop in member chunks (cache-sized); same values and grads."""
    from groklab.models import recurrent
    task = _task("seq")
    x = task.x[:9].unsqueeze(0).expand(3, -1, -1)
    results = []
    for floats in (recurrent.CHUNK_FLOATS, 1):                           # one chunk; one member each
        monkeypatch.setattr(recurrent, "CHUNK_FLOATS", floats)
        model = _model(name, task, n=3, layer_norm=True).eval()
        out = model(x)
        out.square().sum().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_init_is_pytorch_uniform():
    model = _model("lstm", _task("op"), n=1, d_hidden=64)
    bound = 64 ** -0.5
    for p in model.layers[0].parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound


@pytest.mark.parametrize("fmt,expected", [
    ("op", ["3", "op", "7", "="]),
    ("seq", ["<sos>", "3", "op", "7", "mod", "="]),
    ("kwise", ["1", "op", "2", "op", "4", "="]),
])
def test_formats_feed_the_documented_sequence_in_order(fmt, expected):
    """Each format's row is the documented token sequence, and the recurrent model reads it
    position by position: its embedding hook sees those tokens time-major, (N, T, B, d)."""
    task = _task(fmt)
    operands = [3, 7] if fmt != "kwise" else [1, 2, 4]
    p = FORMATS[fmt].p
    ids = {"op": p, **special_tokens(p)}
    row = torch.tensor([ids[t] if t in ids else int(t) for t in expected])
    hits = (task.x == row).all(1).nonzero()
    assert len(hits) == 1 and [task.token_names[i] for i in row] == expected
    assert int(task.y[hits[0, 0]]) == sum(operands) % p
    model = _model("lstm", task, n=1)
    seen = {}
    model.hook_embed.register_forward_hook(lambda m, i, o: seen.setdefault("embed", o))
    x = task.x[hits[0]].unsqueeze(0)                                   # (1, 1, T)
    model(x)
    torch.testing.assert_close(seen["embed"][0, :, 0], model.embed.weight[0][row])
    # The answer depends on every position: each token's embedding row gets a gradient.
    model.embed.weight.grad = None
    model(x).sum().backward()
    assert (model.embed.weight.grad[0][row].abs().sum(-1) > 0).all()


def test_ensemble_member_matches_solo_run():
    """train([a, b]) member b equals train(b) over 300 steps."""
    base = tiny("lstm-add97", "model.d_model=16", "model.d_hidden=32", "model.dropout=0", CPU, steps=300)
    members = [with_overrides(base, {"train.seed": 0, "optim.weight_decay": 1.0}),
               with_overrides(base, {"train.seed": 3, "optim.weight_decay": 0.3, "optim.lr": 2e-3,
                                     "data.frac_train": 0.6, "data.split_seed": 2})]
    ens = train(members, progress=False)
    solo = train(members[1], progress=False)[0]
    a, b = ens[1].metrics, solo.metrics
    assert list(a["step"]) == list(b["step"]) and a["step"].iloc[-1] == 300
    for col in ("train_loss", "val_loss", "train_acc", "val_acc", "param_norm"):
        torch.testing.assert_close(torch.tensor(a[col].values), torch.tensor(b[col].values), rtol=1e-5, atol=1e-5)
    assert not ens[0].metrics["train_loss"].equals(ens[1].metrics["train_loss"])


# A 1-layer LSTM (embedding 32, hidden 64) on x+y mod 17 with 80 % of pairs, full batch, AdamW
# lr 1e-2 wd 1: train 99 % at step 100, val 99 % at step 1950 (seed 0), ~7 s on one thread.
# Seeds 1 and 2 reach val 99 % by steps 2950 and 1950. Smaller p (11, 13) memorizes but does not
# reach 0.9 val in 3000 steps; lr 3e-3 needs ~4000 steps.
TINY_LSTM = ["data.p=17", "data.frac_train=0.8", "model.n_layers=1", "model.d_model=32", "model.d_hidden=64",
             "model.dropout=0", "optim.lr=1e-2", "optim.weight_decay=1.0", "train.batch_size=full",
             "train.steps=3000", "train.eval_every=50", "train.eval_log_points=0", "train.threads=1",
             "train.early_stop=true", "train.early_stop_patience=2"]


# The vanilla RNN groks too: 1 tanh layer (embedding 32, hidden 64) on x+y mod 23 with 80 % of pairs,
# full batch, AdamW lr 1e-2 wd 2. Measured (seeds 0 / 1 / 2): train 99 % at step 100, val 0.30 /
# 0.73 / 0.36 at 500, val 99 % at 1950 / 1100 / 1900. With wd 1 seeds 0 and 1 end at val 0.97 / 0.98
# after 3000 steps; with 50 % of pairs val stays below 0.06 (wd 0.3 or 1).
TINY_RNN = ["data.p=23", "data.frac_train=0.8", "model.name=rnn", "model.activation=tanh", "model.n_layers=1",
            "model.d_model=32", "model.d_hidden=64", "model.dropout=0", "optim.lr=1e-2", "optim.weight_decay=2.0",
            "train.batch_size=full", "train.steps=3000", "train.eval_every=50", "train.eval_log_points=0",
            "train.threads=1", "train.early_stop=true", "train.early_stop_patience=2"]


# gru-add97 shrunk (1 GRU layer, N(0, 1) embeddings, `[x, +, y, =]`): x+y mod 23 with 90 % of pairs,
# embedding 32, hidden 64, full batch, AdamW lr 3e-3 wd 1. Measured (seeds 0 / 1 / 2): train 99 % at
# step 150, val 99 % at 1200 / 1600 / 1350; with wd 0.3 none reaches 99 % by step 3000 (0.94 / 0.30 / 0.25).
TINY_GRU = ["data.p=23", "data.frac_train=0.9", "model.d_model=32", "model.d_hidden=64", "optim.weight_decay=1.0",
            "train.batch_size=full", "train.steps=3000", "train.eval_every=50", "train.eval_log_points=0",
            "train.threads=1", "train.early_stop=true", "train.early_stop_patience=2"]


@pytest.mark.parametrize("preset, recipe, min_val", [("lstm-add97", TINY_LSTM, 0.9), ("lstm-add97", TINY_RNN, 0.95),
                                                     ("gru-add97", TINY_GRU, 0.99)], ids=["lstm", "rnn", "gru"])
def test_tiny_recurrent_net_fits_then_generalizes(preset, recipe, min_val):
    """Each recurrent cell groks at a tiny size: it generalizes well after it fits (a delay of 5x at least)."""
    (res,) = train(load_config(preset, recipe), progress=False)
    s = res.summary
    assert s["train_acc"] >= 0.99 and s["val_acc"] >= min_val, s
    assert s["step_val_99"] is not None and s["step_val_99"] >= 5 * s["step_train_99"], s


def test_torch_embedding_init_lets_the_vanilla_rnn_fit():
    """rnn-add97's deciding choice (docs/phenomena.md): with N(0, 1) embeddings the RNN fits within a
    few hundred steps; with the scaled N(0, 1/d) ones it lags far behind. Measured at step 400
    (wd 0.3, the preset otherwise): train acc 0.43 (torch) vs 0.11 (scaled)."""
    fast = ["optim.weight_decay=0.3", "train.steps=400", "train.eval_every=400", "train.eval_log_points=0",
            "train.threads=1", "train.early_stop=false"]
    (torch_init,) = train(load_config("rnn-add97", fast), progress=False)
    (scaled,) = train(load_config("rnn-add97", [*fast, "model.init=scaled"]), progress=False)
    a, b = torch_init.summary["train_acc"], scaled.summary["train_acc"]
    assert a >= 0.3 and b <= 0.2 and a >= 2.5 * b, (a, b)


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_build(preset):
    cfg = load_config(preset)
    assert cfg.model.name in RECURRENT and cfg.description
    task = TASKS.get(cfg.data.task)().build(cfg.data)
    model = build_model(cfg.model, task, 1)
    assert model.param_counts()["params_non_embedding"] > 0
    for frac in (0.3, 0.5, 0.7):
        assert load_config(preset, [f"data.frac_train={frac}"]).data.frac_train == frac


def test_lstm_add97_matches_the_studies_sizes():
    cfg = load_config("lstm-add97")
    m, o, t = cfg.model, cfg.optim, cfg.train
    assert (m.n_layers, m.d_hidden, m.d_model, m.dropout) == (2, 128, 128, 0.1)
    assert (o.name, o.lr, o.betas, o.weight_decay, t.batch_size, cfg.data.frac_train) == \
        ("adamw", 1e-3, (0.9, 0.98), 0.1, 512, 0.5)
    task = TASKS.get("modular")().build(cfg.data)
    # ~2.8e5 non-embedding parameters: the "mystery" study's 3-4e5 range for its models.
    assert build_model(cfg.model, task, 1).param_counts()["params_non_embedding"] == 2 * (4 * 128 * 256 + 8 * 128) \
        + 128 * 97 + 97


def test_seq_presets_use_the_sequence_format():
    for preset in ("lstm-seq-add", "rnn-seq-add"):
        cfg = load_config(preset)
        assert cfg.data.fmt == "seq" and cfg.data.p == 97
    # the study's code: PyTorch's N(0, 1) embeddings, with which its LSTM groks (docs/phenomena.md)
    for preset in ("lstm-seq-add", "lstm-no-wd", "lstm-late-wd", "lstm-wd-removed"):
        assert load_config(preset).model.init == "torch", preset
    # the vanilla RNN groks there with wd 0.1 and those embeddings (val 99 % at 109 500); its quick
    # recipes were measured with groklab's N(0, 1/d) ones and keep them
    rnn = load_config("rnn-seq-add")
    assert (rnn.model.init, rnn.optim.weight_decay) == ("torch", 0.1)
    from groklab.protocols.base import base_config
    assert base_config("rnn", quick=True).model.init == "scaled"


def test_rnn_rejects_other_activations():
    task = _task("op")
    with pytest.raises(ConfigError, match=r"model.activation='gelu' must be one of 'tanh', 'relu'"):
        build_model(ModelCfg(name="rnn", activation="gelu"), task, 1)
    with pytest.raises(ConfigError, match="model.activation"):  # at config validation, before any training
        tiny("rnn-seq-add", "model.activation=gelu", steps=5)


@pytest.mark.parametrize("overrides,match", [
    (["data.task=wine"], "cannot take data.task='wine'"),        # recurrent models read tokens only
    (["data.fmt=seq", "data.op=x*y"], "defined for data.op='x\\+y' only"),
    (["model.name=gur"], "did you mean 'gru'"),
])
def test_bad_combinations_rejected_at_load(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("lstm-add97", overrides)
