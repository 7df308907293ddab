"""Model registry: every architecture takes (N, B, ...) inputs for N members at once."""
from .base import MODELS, MemberModel
from . import transformer, mlp, recurrent, mixture  # noqa: F401  (explicit registration)

__all__ = ["MODELS", "MemberModel", "build_model"]


def build_model(cfg, task, n_members: int = 1) -> MemberModel:
    """Construct the registered model `cfg.name` for `task` with `n_members` members."""
    return MODELS.get(cfg.name)(cfg, task, n_members)
