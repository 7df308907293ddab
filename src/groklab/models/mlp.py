"""MLP: concatenated operand embeddings (algorithmic tasks) or raw features (real data)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelCfg
from ..data.tasks import TaskData
from ..registry import ConfigError
from .base import MODELS, MemberModel
from .layers import ACTIVATIONS, HookPoint, MDropout, MEmbedding, MLinear, embed_std


@MODELS.register("mlp", doc="MLP on concatenated operand embeddings or on features")
class MLP(MemberModel):
    accepts = ("tokens", "features")

    @staticmethod
    def validate(run_cfg) -> None:
        if run_cfg.data.fmt != "op":
            raise ConfigError(f"data.fmt={run_cfg.data.fmt!r} is a sequence format; model.name='mlp' takes the "
                              "operands concatenated and needs data.fmt='op'")

    def __init__(self, cfg: ModelCfg, task: TaskData, n_members: int):
        super().__init__(cfg, task, n_members)
        n = n_members
        if task.inputs == "tokens":
            self.embed = MEmbedding(n, task.vocab, cfg.d_model, std=embed_std(cfg))
            self.register_buffer("operand_pos", torch.tensor(task.operand_pos), persistent=False)
            d_in = cfg.d_model * len(task.operand_pos)
        else:
            self.embed = None
            d_in = task.n_features
        widths = [d_in] + [cfg.d_hidden] * cfg.n_layers
        self.hidden = nn.ModuleList(MLinear(n, a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.out = MLinear(n, widths[-1], task.n_out)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop = MDropout(cfg.dropout)
        self.hook_embed = HookPoint()
        self.hook_hidden = HookPoint()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            e = self.embed(x.index_select(-1, self.operand_pos))            # (N, B, k, d)
            x = self.hook_embed(e.flatten(-2))                              # (N, B, k·d)
        for layer in self.hidden:
            x = self.drop(self.act(layer(x)))
        return self.out(self.hook_hidden(x))
