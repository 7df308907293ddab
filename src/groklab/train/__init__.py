"""Training: the engine, the member-vectorized optimizer, losses, schedules, checkpoints."""
from .engine import RunResult, TrainState, Hook, train, check_ensemble
from .losses import LOSSES

__all__ = ["RunResult", "TrainState", "Hook", "train", "check_ensemble", "LOSSES"]
