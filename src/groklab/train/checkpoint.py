"""Checkpoints as safetensors: parameters, optimizer state, noise generators, step — no pickle.

Batches and dropout masks are functions of the step (`groklab.rng`), so the only random state is
the members' CPU noise generators: a checkpoint written on a GPU resumes on a CPU and back.

Written to a temporary file, flushed and renamed, so a kill at any moment leaves either the old
checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .optim import FlatParams, MemberOptimizer

# 2: batches and dropout from counter-based streams (no data/torch RNG states). A format-1
# checkpoint still loads; its run continues with the new batch streams.
FORMAT = "groklab-checkpoint-2"


def _gen_states(gens: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([g.get_state() for g in gens])


def save_checkpoint(path: Path, flat: FlatParams, opt: MemberOptimizer, noise_gens: list[torch.Generator],
                    meta: dict) -> None:
    tensors = {"params": flat.data, **opt.state(), "rng.noise": _gen_states(noise_gens)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    layout = [[n, list(s), sl.start, sl.stop] for n, s, sl in zip(flat.names, flat.shapes, flat.slices)]
    metadata = {"meta": json.dumps(meta), "layout": json.dumps(layout), "format": FORMAT}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, flat: FlatParams, opt: MemberOptimizer, noise_gens: list[torch.Generator]) -> dict:
    """Restore everything in place, onto the run's device; return the metadata (step, wall, members)."""
    tensors = load_file(str(path))
    with torch.no_grad():
        flat.data.copy_(tensors["params"])
    opt.load_state({k: v.to(flat.data.device) for k, v in tensors.items() if k.startswith("opt.")})
    for g, s in zip(noise_gens, tensors["rng.noise"]):
        g.set_state(s.clone())
    return json.loads(_metadata(path)["meta"])


def _metadata(path: Path) -> dict:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


def member_weights(path: Path, member: int) -> dict[str, torch.Tensor]:
    """Named weights of one member (shapes without the member dim), for analyses."""
    layout = json.loads(_metadata(path)["layout"])
    params = load_file(str(path))["params"][member]
    return {name: params[a:b].reshape(shape[1:]) for name, shape, a, b in layout}
