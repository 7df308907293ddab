"""Checkpoints as safetensors: parameters, optimizer state, RNG states, step — no pickle.

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


def _gen_states(gens: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([g.get_state() for g in gens])


def save_checkpoint(path: Path, flat: FlatParams, opt: MemberOptimizer, data_gens: list[torch.Generator],
                    noise_gens: list[torch.Generator], meta: dict) -> None:
    tensors = {"params": flat.data, **opt.state(), "rng.data": _gen_states(data_gens),
               "rng.noise": _gen_states(noise_gens), "rng.torch": torch.get_rng_state()}
    if flat.data.is_cuda:
        tensors["rng.cuda"] = torch.cuda.get_rng_state(flat.data.device)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    layout = [[n, list(s), sl.start, sl.stop] for n, s, sl in zip(flat.names, flat.shapes, flat.slices)]
    metadata = {"meta": json.dumps(meta), "layout": json.dumps(layout), "format": "groklab-checkpoint-1"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, flat: FlatParams, opt: MemberOptimizer, data_gens: list[torch.Generator],
                    noise_gens: list[torch.Generator]) -> dict:
    """Restore everything in place; return the metadata (step, wall, member states)."""
    tensors = load_file(str(path))
    with torch.no_grad():
        flat.data.copy_(tensors["params"])
    opt.load_state({k: v.to(flat.data.device) for k, v in tensors.items() if k.startswith("opt.")})
    for gens, key in ((data_gens, "rng.data"), (noise_gens, "rng.noise")):
        for g, s in zip(gens, tensors[key]):
            g.set_state(s.clone())
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and flat.data.is_cuda:
        torch.cuda.set_rng_state(tensors["rng.cuda"], flat.data.device)
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
