"""Counter-based random streams: batch draws and dropout masks that do not depend on packing or device."""
import pytest
import torch

from groklab import load_config, with_overrides
from groklab.config import ConfigError
from groklab.models.layers import DropoutStream, MDropout
from groklab.rng import DROPOUT, SAMPLE, hash_bits, keep_mask, member_keys
from groklab.train import train
from groklab.train.sampler import Sampler

from conftest import CPU, MEMBER_COLS, member_and_solo, tiny


def test_stream_values_are_stable():
    # Stored runs are reproducible only while these numbers stay: change them and say so.
    assert member_keys([0, 1, 7], SAMPLE).tolist() == [-1444046616, 994026883, 1526530900]
    assert hash_bits(member_keys([0], SAMPLE), 5, 0, torch.arange(4, dtype=torch.int32)).tolist() == [
        [1707391946, -205292794, -1525624444, 1517461723]]


def test_bits_are_uniform_and_streams_distinct():
    keys = member_keys([0, 1], DROPOUT)
    pos = torch.arange(200_000, dtype=torch.int32)
    bits = hash_bits(keys, torch.tensor(3), 1, pos).double() / 2 ** 32 + 0.5
    assert bits.mean().item() == pytest.approx(0.5, abs=0.003)
    assert bits.std().item() == pytest.approx(12 ** -0.5, abs=0.003)
    # members, steps and sites draw different values
    assert (bits[0] != bits[1]).float().mean() > 0.999
    other_step = hash_bits(keys, torch.tensor(4), 1, pos).double() / 2 ** 32 + 0.5
    assert (bits != other_step).float().mean() > 0.999
    keep = keep_mask(keys, 3, 2, pos, p=0.1).float().mean().item()
    assert keep == pytest.approx(0.9, abs=0.003)


def test_sampler_draws_without_replacement_from_each_members_own_set():
    sets = [torch.arange(100, 160), torch.arange(0, 300, 3)]  # 60 and 100 examples
    pair = Sampler(sets, 32, [0, 5], torch.device("cpu"))
    solo = Sampler(sets[1:], 32, [5], torch.device("cpu"))
    for step in (0, 1, 999):
        idx, w = pair.draw(torch.tensor(step))
        assert w is None and idx.shape == (2, 32)
        for i, s in enumerate(sets):
            assert len(set(idx[i].tolist())) == 32 and set(idx[i].tolist()) <= set(s.tolist())
        # member 1 of the pair draws exactly what a solo sampler with its seed draws
        assert torch.equal(idx[1], solo.draw(torch.tensor(step))[0][0])
    assert not torch.equal(pair.draw(0)[0], pair.draw(1)[0])


def test_sampler_pads_short_sets_with_zero_weight_rows():
    sets = [torch.arange(10), torch.arange(50)]
    idx, w = Sampler(sets, 20, [0, 1], torch.device("cpu")).draw(7)
    assert w is not None and w[0].sum() == 10 and w[1].sum() == 20
    assert set(idx[0][w[0] > 0].tolist()) == set(range(10))
    full_idx, full_w = Sampler(sets, "full", [0, 1], torch.device("cpu")).draw(0)
    assert full_idx.shape == (2, 50) and full_w[0].sum() == 10


def test_dropout_mask_is_independent_of_padding_and_layout():
    step = torch.tensor(11)
    drop = MDropout(0.5)
    drop.stream = DropoutStream([4], step)
    x = torch.ones(1, 6, 3, 8)                       # (N, B, T, d), batch-major
    small = drop(x[:, :2])                           # the same member with fewer rows
    drop.stream.site = 0
    big = drop(x)
    assert torch.equal(big[:, :2], small) and 0.3 < (big == 0).float().mean() < 0.7
    drop.stream.site = 0
    time_major = drop(x.transpose(1, 2).contiguous(), batch_dim=2)  # (N, T, B, d)
    assert torch.equal(time_major.transpose(1, 2), big)
    drop.eval()
    assert torch.equal(drop(x), x)


@pytest.mark.parametrize("extra", [
    [],
    ["model.name=transformer", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64", "model.n_layers=2"],
    ["model.name=lstm", "model.d_model=32", "model.d_hidden=32"],
], ids=["mlp", "transformer", "lstm"])
def test_member_equals_solo_exactly_with_dropout(extra):
    """Packing never changes a result: bitwise equal on the CPU, dropout included."""
    base = tiny("quickstart", *extra, "model.dropout=0.1", "train.device=cpu", steps=80)
    ens, solo = member_and_solo(base)
    assert ens[1].metrics[MEMBER_COLS].equals(solo.metrics[MEMBER_COLS])
    assert not ens[0].metrics["train_loss"].equals(ens[1].metrics["train_loss"])


def test_bf16_precision_trains_and_differs_from_fp32():
    cfg = tiny(steps=60)
    fp32 = train(cfg, progress=False)[0].metrics
    bf16 = train(with_overrides(cfg, {"train.precision": "bf16"}), progress=False)[0].metrics
    assert bf16["train_loss"].iloc[-1] < bf16["train_loss"].iloc[0]
    assert not bf16["train_loss"].equals(fp32["train_loss"])
    assert (bf16["train_loss"] - fp32["train_loss"]).abs().max() < 0.5


@pytest.mark.parametrize("override, match", [
    ("train.precision=fp16", "train.precision='fp16'"),
    ("train.device=gpu", "train.device='gpu' must be one of 'auto', 'cpu', 'cuda', 'cuda:N'"),
])
def test_execution_fields_validated(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("quickstart", [override])


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        train(load_config("quickstart", ["train.device=cuda", "train.steps=5"]), progress=False)


def test_cuda_index_beyond_the_machines_devices_is_a_clear_error(monkeypatch):
    from groklab.train.engine import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # a machine with two GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"train.device='cuda:2' but this machine has 2 CUDA device\(s\): "
                                          r"'cuda:0', 'cuda:1'"):
        resolve_device("cuda:2")


def test_full_batch_member_beside_a_larger_set_is_close_to_solo():
    """Full-batch members are padded to the largest training set: a member beside a larger set is
    not bitwise equal to its solo run, but equal within float rounding (docs/gpu.md); beside a
    smaller set it is bitwise equal."""
    common = ["data.p=23", "model.d_model=32", "model.d_hidden=64", "train.batch_size=full", "train.steps=50",
              "train.eval_every=50", "train.eval_log_points=0", "train.threads=1", "optim.lr=3e-3", CPU]
    cfg = {f: load_config("lstm-seq-add", [*common, f"data.frac_train={f}"]) for f in (0.6, 0.8, 0.9)}
    solo = train(cfg[0.8], progress=False)[0].summary
    beside_smaller = train([cfg[0.8], cfg[0.6]], progress=False)[0].summary
    beside_larger = train([cfg[0.8], cfg[0.9]], progress=False)[0].summary
    assert beside_smaller["train_loss"] == solo["train_loss"]
    for key in ("train_loss", "val_loss"):
        assert beside_larger[key] == pytest.approx(solo[key], rel=1e-5)
