"""Tasks: algorithmic tables and real datasets, all as tensors (see `tasks.TaskData`)."""
from .tasks import TASKS, TaskData, fraction_split, noisy_labels, subset
from .algorithmic import OPS, Op, special_tokens
from . import realtasks  # noqa: F401  (registers mnist, wine)

__all__ = ["TASKS", "TaskData", "OPS", "Op", "fraction_split", "noisy_labels", "subset", "special_tokens"]
