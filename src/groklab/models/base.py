"""What every registered model shares: member count, initialization, parameter counts."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..config import ModelCfg
from ..data.tasks import TaskData
from ..registry import MODELS  # noqa: F401  (re-exported: models register here)
from .layers import OUTPUTS, DropoutStream, Gens, MDropout


class MemberModel(nn.Module):
    """Base of all models: N members, forward (N, B, ...) → outputs (N, B, n_out).

    Subclasses build their layers in __init__ and implement `logits`; `accepts` names the
    input kinds (`tokens`, `features`) the model can take, checked at config validation. A
    subclass may define `validate(run_cfg)` (a staticmethod raising ConfigError), which config
    validation calls: the place for rules only this architecture has. Every module that owns
    parameters directly needs `reset(gens)`, which draws member i's values from gens[i].
    """

    accepts: ClassVar[tuple[str, ...]] = ("tokens",)
    width_field: ClassVar[str] = "d_hidden"  # ModelCfg field of the widest hidden layer (memory estimate)
    embedding_prefixes: ClassVar[tuple[str, ...]] = ("embed.", "pos.")
    reads_init: ClassVar[bool] = True  # honours model.init (token embeddings N(0, 1/d) or N(0, 1))

    def __init__(self, cfg: ModelCfg, task: TaskData, n_members: int):
        super().__init__()
        self.cfg = cfg
        self.n_members = n_members
        self._output = OUTPUTS[cfg.output]

    def reset_parameters(self, gens: Gens, init_scale: torch.Tensor) -> None:
        """Draw member i's weights from gens[i] in module order, then scale them by α_i."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset"):
                module.reset(gens)
            elif module is not self and any(True for _ in module.parameters(recurse=False)):
                raise TypeError(f"{type(module).__name__} owns parameters but has no reset(gens): its weights "
                                "would keep torch.empty values; give it a reset that fills them from gens")
        with torch.no_grad():
            norm_params = {id(p) for m in self.modules() if getattr(m, "is_norm", False) for p in m.parameters()}
            for p in self.parameters():
                if id(p) not in norm_params:
                    p.mul_(init_scale.to(p).view(-1, *[1] * (p.dim() - 1)))

    def bind_dropout(self, seeds: list[int], step: torch.Tensor) -> None:
        """Give every dropout layer the members' streams, keyed by `step` (a device counter)."""
        self._dropout = DropoutStream(seeds, step)
        for m in self.modules():
            if isinstance(m, MDropout):
                m.stream = self._dropout

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "_dropout", None) is not None:
            self._dropout.site = 0
        z = self.logits(x)
        if self.cfg.logit_scale != 1.0:
            z = z * self.cfg.logit_scale
        return self._output(z)

    def param_counts(self) -> dict[str, int]:
        """Per-member parameter counts: total and without embeddings."""
        total = emb = 0
        for name, p in self.named_parameters():
            k = p.numel() // self.n_members
            total += k
            if name.startswith(self.embedding_prefixes):
                emb += k
        return {"params": total, "params_non_embedding": total - emb}

