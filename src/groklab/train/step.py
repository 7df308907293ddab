"""One training step for N members: lr, batch, forward/backward, update — eager or as a CUDA graph.

Small grokking models are launch-bound on a GPU (a nanda2023 step is ~0.1 ms of arithmetic and
~200 kernel launches), so on CUDA the whole step is captured once per phase in a CUDA graph and
replayed: one launch per step, no host synchronisation. That works because every input of the step
lives on the device — the step counter (schedules, batch draws and dropout masks are functions of
it, see `groklab.rng`), the lr table, the (N, 1) hyper-parameter columns. Steps that need host
randomness (weight / update noise from per-member CPU generators) or host counters (Grokfast-MA's
ring) run eagerly, as does everything on the CPU.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from ..data import TaskData
from ..models import MemberModel
from .optim import FlatParams, MemberHParams, MemberOptimizer
from .sampler import Sampler

WARMUP_STEPS = 2  # eager steps on a side stream before capture (cuBLAS handles, autograd buffers)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision = "bf16"` (losses still run in float32 or their own precision)."""
    if precision == "bf16":
        # No weight cache: cached casts would go stale inside a replayed graph.
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


@dataclass
class StepInputs:
    """What a phase fixes for its steps; a new phase re-captures the graph."""

    sampler: Sampler
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TrainStep:
    """Callable: advance every member by one step (and the device step counter by one)."""

    def __init__(self, model: MemberModel, flat: FlatParams, opt: MemberOptimizer, hp: MemberHParams,
                 task: TaskData, labels: torch.Tensor, step_t: torch.Tensor, lr_table: torch.Tensor,
                 base_lr: torch.Tensor, weight_noise: bool, precision: str, graphs: bool,
                 compile: bool = False):
        self.model, self.flat, self.opt, self.hp = model, flat, opt, hp
        self.task, self.labels, self.step_t = task, labels, step_t
        self.lr_table, self.base_lr = lr_table, base_lr      # (steps,) factors; (N, 1) phase lr
        self.weight_noise = weight_noise
        self.precision = precision
        self.graphs = graphs
        # torch.compile fuses the forward's and backward's elementwise chains (the broadcast
        # attention products, activations, the loss): on a GPU those, not the matmuls, bound an
        # ensemble step. Compiled on the first call; a graph capture replays the compiled kernels.
        self.compiled = compile
        if compile:
            torch._dynamo.reset()  # a new step's guards would otherwise count against dynamo's recompile limit
        self.forward_loss = torch.compile(self._forward_loss, dynamic=False) if compile else self._forward_loss
        self.inputs: StepInputs | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._warm = 0

    def set_inputs(self, inputs: StepInputs) -> None:
        self.inputs, self._graph, self._warm = inputs, None, 0

    def _step(self) -> None:
        hp, flat = self.hp, self.flat
        # 1) learning rate: the phase's base lr times the schedule's factor at this step
        # (index_select, not lr_table[step_t]: a 0-dim tensor index is read on the host, a sync)
        torch.mul(self.base_lr, self.lr_table.index_select(0, self.step_t.view(1)), out=hp.lr)
        # 2) batch: (N, B) index draws from each member's training set
        idx, w = self.inputs.sampler.draw(self.step_t)
        x, y = self.task.x[idx], self.labels.gather(1, idx)
        # 3) forward/backward (at noisy weights if weight noise is on)
        if self.weight_noise:
            noise = self.opt.noise(hp.weight_noise * hp.active)
            flat.data.add_(noise)
        per_ex = self.forward_loss(x, y)
        loss = per_ex.mean(1) if w is None else (per_ex * w).sum(1) / w.sum(1)
        # A diverged member's NaN must not reach the others (their gradients are separate).
        torch.where(hp.active.view(-1) > 0, loss, torch.zeros_like(loss)).sum().backward()
        if self.weight_noise:
            flat.data.sub_(noise)
        # 4) update
        self.opt.step(hp)
        flat.zero_grad()
        self.step_t += 1

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example losses (N, B) of the members' forward pass."""
        with autocast(self.step_t.device, self.precision):
            out = self.model(x)
        return self.inputs.loss(out.float(), y)

    def _no_compiling(self):
        """During a capture a compile must not start: inductor's own launches and random draws
        break the capture and leave the CUDA generator in capture state (pytorch/pytorch#185074).
        Under this stance a recompile raises first, naming the guard that failed."""
        if not self.compiled or not hasattr(torch.compiler, "set_stance"):
            return contextlib.nullcontext()
        return torch.compiler.set_stance("fail_on_recompile")

    def __call__(self) -> None:
        if not self.graphs:
            return self._step()
        if self._graph is None:
            if self._warm < WARMUP_STEPS:
                # Warm-up steps run on a side stream (as a capture will), ordered after everything
                # before them and before everything after them: the evaluation and the next step
                # read what this one writes. (The join must sit outside the `with`: inside it the
                # current stream is the side stream itself, and a stream waiting on itself is no join.)
                self._warm += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    # Anything that would break the capture (a host sync) is named by a warning here.
                    with warnings.catch_warnings():
                        warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype")
                        torch.cuda.set_sync_debug_mode("warn")
                    try:
                        self._step()
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                torch.cuda.current_stream().wait_stream(side)
                return
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), self._no_compiling():
                    self._step()
            except RuntimeError as e:  # an op that cannot be captured: keep training eagerly
                why = f"{e}" + (f"; first: {e.__context__}" if e.__context__ is not None else "")
                warnings.warn(f"CUDA graph capture failed ({why}); training without graphs", RuntimeWarning)
                self.graphs = False
                torch.cuda.synchronize()
                return self._step()
            self._graph = graph
        self._graph.replay()
