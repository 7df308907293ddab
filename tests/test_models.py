import pytest
import torch

from groklab.config import DataCfg, ModelCfg
from groklab.data import TASKS
from groklab.models import MODELS, build_model

TASK = TASKS.get("modular")().build(DataCfg(p=11))
# Models built over stored runs (the mixture) are tested with their runs in test_mechanisms.py.
PLAIN = [n for n in MODELS.names() if not getattr(MODELS.get(n), "builds_from_store", False)]


def _model(name: str, n: int = 2, seed: int = 0):
    cfg = ModelCfg(name=name, n_layers=2, d_model=16, n_heads=2, d_mlp=32, d_hidden=24)
    model = build_model(cfg, TASK, n)
    model.reset_parameters([torch.Generator().manual_seed(seed + i) for i in range(n)], torch.ones(n))
    return model


@pytest.mark.parametrize("name", PLAIN)
def test_forward_shape_backward_no_nan(name):
    model = _model(name)
    x = TASK.x[:5].unsqueeze(0).expand(2, -1, -1)
    out = model(x)
    assert out.shape == (2, 5, TASK.n_out)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", PLAIN)
def test_same_seed_same_output_and_members_independent(name):
    x = TASK.x[:5].unsqueeze(0).expand(2, -1, -1)
    a, b = _model(name, seed=0), _model(name, seed=0)
    torch.testing.assert_close(a(x), b(x))
    # Member 1 of an ensemble seeded (0, 1) equals member 0 of a solo model seeded 1.
    solo = _model(name, n=1, seed=1)
    torch.testing.assert_close(a(x)[1], solo(x[:1])[0])


@pytest.mark.parametrize("name", PLAIN)
def test_param_counts(name):
    counts = _model(name, n=3).param_counts()
    total = sum(p.numel() for p in _model(name, n=1).parameters())
    assert counts["params"] == total and 0 < counts["params_non_embedding"] <= total


def test_transformer_last_position_matches_full_computation():
    """The last block computes only the last position; compare with an all-position pass."""
    model = _model("transformer", n=1)
    x = TASK.x[:7].unsqueeze(0)
    fast = model(x)
    h = model.pos(model.embed(x))
    for block in model.blocks:
        h = block(h, last_only=False)
    slow = model.unembed(model.ln_f(h[:, :, -1]))
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_transformer_hook_pattern_reads_attention():
    """An analysis hook on `hook_pattern` sees each block's softmax pattern as (N, B, H, Tq, T)
    (Tq = 1 in the last block), rows summing to 1; reading it leaves the output bitwise unchanged,
    and a pattern the hook returns is the one used."""
    model = _model("transformer")
    x = TASK.x[:5].unsqueeze(0).expand(2, -1, -1)
    t = x.shape[-1]
    plain = model(x)
    seen = {}
    handles = [blk.attn.hook_pattern.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o))
               for k, blk in enumerate(model.blocks)]
    try:
        torch.testing.assert_close(model(x), plain, rtol=0, atol=0)
        assert seen[0].shape == (2, 5, 2, t, t) and seen[1].shape == (2, 5, 2, 1, t)
        for pattern in seen.values():
            assert (pattern >= 0).all()
            torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
        if model.cfg.causal:  # a full block's query i attends to keys <= i only
            assert (seen[0].triu(1) == 0).all()
        uniform = model.blocks[1].attn.hook_pattern.register_forward_hook(lambda m, i, o: torch.full_like(o, 1 / t))
        assert not torch.allclose(model(x), plain)
        uniform.remove()
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(model(x), plain, rtol=0, atol=0)


def test_init_scale_scales_weights():
    cfg = ModelCfg(name="mlp", d_model=16, d_hidden=24)
    norms = []
    for alpha in (1.0, 4.0):
        model = build_model(cfg, TASK, 1)
        model.reset_parameters([torch.Generator().manual_seed(0)], torch.tensor([alpha]))
        norms.append(float(torch.sqrt(sum(p.detach().square().sum() for p in model.parameters()))))
    assert norms[1] / norms[0] == pytest.approx(4.0, rel=1e-5)
