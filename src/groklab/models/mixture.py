"""The mixture model of the "mystery" study (§5.1): C_mix(x) = w_mem·C_mem(x) + w_gen·C_gen(x).

C_mem and C_gen are two stored, frozen networks (any registered architecture trained on this
task); the only trainable parameters are four scalars per member, w_mem = w_m1·w_m2 and
w_gen = w_g1·w_g2, with w_m1 = w_g1 = 0 at the start and (w_m2, w_g2) set by
`model.mix_w_mem2` / `model.mix_w_gen2`. A larger w_m2 makes w_mem learn faster (the gradient of
w_m1 is scaled by w_m2): the knob the study turns to show that grokking needs C_mem to be learned
faster than C_gen. Trained by the normal engine, so weight decay, ensembles, store, resume and
plots work unchanged::

    groklab run quickstart --set model.name=mixture --set model.mix_mem=3 --set model.mix_gen=4
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelCfg
from ..data.tasks import TaskData
from ..registry import ConfigError
from .base import MODELS, MemberModel
from .layers import Gens


class MixWeights(nn.Module):
    """The four trainable scalars, each (N, 1): one value per member."""

    def __init__(self, n: int, w_mem2: float, w_gen2: float):
        super().__init__()
        self.init = (w_mem2, w_gen2)
        self.w_m1 = nn.Parameter(torch.zeros(n, 1))
        self.w_m2 = nn.Parameter(torch.zeros(n, 1))
        self.w_g1 = nn.Parameter(torch.zeros(n, 1))
        self.w_g2 = nn.Parameter(torch.zeros(n, 1))

    def reset(self, gens: Gens) -> None:
        # Deterministic init (no draws): the generators are not consumed.
        with torch.no_grad():
            self.w_m1.zero_()
            self.w_g1.zero_()
            self.w_m2.fill_(self.init[0])
            self.w_g2.fill_(self.init[1])


def _load_component(cfg: ModelCfg, run_id: int, which: str, task: TaskData) -> MemberModel:
    """Build stored run `run_id` as a one-member model with its final weights, frozen."""
    from ..api import load_run, load_weights  # the model layer reads the store only for this
    from . import build_model

    field = f"model.mix_{which}"
    try:
        rec = load_run(run_id, cfg.mix_store or None)
    except ConfigError as e:
        raise ConfigError(f"{field}={run_id}: {e}") from None
    if rec.config.model.name == "mixture":
        raise ConfigError(f"{field}={run_id} is itself a mixture run; give a run of a plain architecture")
    net = build_model(rec.config.model, task, 1)
    weights = load_weights(run_id, cfg.mix_store or None)
    with torch.no_grad():
        for name, p in net.named_parameters():
            w = weights.get(name)
            if w is None or tuple(w.shape) != tuple(p.shape[1:]):
                raise ConfigError(f"{field}={run_id} ({rec.config.model.name}, data.p={rec.config.data.p}) does not "
                                  f"fit this task: parameter {name} has shape "
                                  f"{None if w is None else tuple(w.shape)}, need {tuple(p.shape[1:])}")
            p.copy_(w.unsqueeze(0))
    net.requires_grad_(False)
    return net.eval()  # dropout off for good: the component is a fixed function


@MODELS.register("mixture", doc="w_mem·C_mem + w_gen·C_gen over two frozen stored runs (mystery study §5.1)")
class Mixture(MemberModel):
    accepts = ("tokens", "features")
    embedding_prefixes = ()
    reads_init = False  # no embeddings of its own: the components were initialized by their runs
    builds_from_store = True  # needs its component runs: the registry-wide model tests skip it

    @staticmethod
    def validate(run_cfg) -> None:
        """Config-boundary check: both component runs must be named."""
        m = run_cfg.model
        for which in ("mem", "gen"):
            value = getattr(m, f"mix_{which}")
            if value is None or value < 1:
                raise ConfigError(f"model.mix_{which}={value!r} must be the id of a stored run (see `groklab ls`) "
                                  f"for model.name='mixture'")
        if m.mix_mem == m.mix_gen:
            raise ConfigError(f"model.mix_gen={m.mix_gen} must differ from model.mix_mem={m.mix_mem}")

    def __init__(self, cfg: ModelCfg, task: TaskData, n_members: int):
        super().__init__(cfg, task, n_members)
        self.w = MixWeights(n_members, cfg.mix_w_mem2, cfg.mix_w_gen2)
        # Held outside the module tree: their weights are no parameters of the mixture (the
        # optimizer, init and checkpoints see only the four scalars), and train() cannot turn
        # their dropout back on.
        self._components = (_load_component(cfg, cfg.mix_mem, "mem", task),
                            _load_component(cfg, cfg.mix_gen, "gen", task))

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for net in self._components:  # follow .to(device) and dtype changes
            net._apply(fn, *args, **kwargs)
        return self

    def components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C_mem(x), C_gen(x), each (N, B, n_out), for inputs x (N, B, ...)."""
        n, b = x.shape[:2]
        flat = x.reshape(1, n * b, *x.shape[2:])  # every member's rows through the one-member nets
        with torch.no_grad():
            return tuple(net(flat).view(n, b, -1) for net in self._components)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z_mem, z_gen = self.components(x)
        w_mem, w_gen = self.mix_weights()
        return w_mem.view(-1, 1, 1) * z_mem + w_gen.view(-1, 1, 1) * z_gen

    def mix_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """w_mem, w_gen per member, each (N,)."""
        w = self.w
        return (w.w_m1 * w.w_m2).view(-1), (w.w_g1 * w.w_g2).view(-1)

    def eval_metrics(self) -> dict[str, torch.Tensor]:
        w_mem, w_gen = self.mix_weights()
        return {"w_mem": w_mem.detach(), "w_gen": w_gen.detach()}
