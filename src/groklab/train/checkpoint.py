"""Checkpoints as safetensors: parameters, optimizer state, noise generators, step — no pickle.

Batches and dropout masks are functions of the step (`groklab.rng`), so the only random state is
the members' CPU noise generators: a checkpoint written on a GPU resumes on a CPU and back.

Once members have left the batched model (engine `shrink`), the group's state when they left is
written once to a ledger file beside the checkpoint, and the checkpoints after it hold the live
members' rows only and name that file (a sweep's tail otherwise rewrote every stopped member:
263 MB per checkpoint for 39 `repro-transformer` members). The run's last checkpoint is whole again
and the ledger files go. Reading merges the two; a missing or replaced ledger fails its checks.

Written to a temporary file, fsynced, renamed over the old one and the directory fsynced, so a kill
or power loss at any moment leaves either the old checkpoint or the new one, never a torn file. A
failed write (disk full) removes the temporary file and raises :class:`CheckpointError`; the
previous checkpoint stays loadable. A run writes through a :class:`CheckpointWriter`, which does
this on a background thread while training goes on. Reading checks the file before trusting it:
a pickle or ``torch.save`` archive is refused without being unpickled, and a truncated or tampered
file fails its size and SHA-256 checks with a message naming the file.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load as _load_bytes

from .interrupts import deferred_interrupts
from .optim import FlatParams, MemberOptimizer, merge_rows

# 2: batches and dropout from counter-based streams (no data/torch RNG states). A format-1
# checkpoint still loads; its run continues with the new batch streams.
FORMAT = "groklab-checkpoint-2"
# 3: the live members only, naming a ledger file with the rest (a reader of 2 refuses it by name);
# a whole checkpoint stays format 2.
PARTIAL_FORMAT = "groklab-checkpoint-3"
_READS = (FORMAT, PARTIAL_FORMAT, "groklab-checkpoint-1")
_MAX_HEADER = 100 * 2**20  # safetensors' own bound on the JSON header


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written (disk full) or is not one groklab wrote intact (pickle,
    truncated, tampered). The CLI prints it as one line and exits with code 2."""


def _gen_states(gens: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([g.get_state() for g in gens])


@dataclass(frozen=True)
class Ledger:
    """Every member's state (`params` and the optimizer's tensors, on the CPU) when members last
    left the batched model, and the positions in the group of the members that stayed (`live`).
    Replaced at each shrink, never changed, so the writer's thread may read it."""

    tensors: dict[str, torch.Tensor]
    live: tuple[int, ...]

    def merge(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The whole group's state: the live members' `rows` put in their places."""
        return merge_rows(self.tensors, torch.tensor(self.live), rows)


def drop_ledgers(path: Path, keep: Path | None = None) -> None:
    """Remove the ledger files of checkpoint `path` but `keep` (once no checkpoint names them)."""
    for f in path.parent.glob(f"{path.stem}.ledger-*.safetensors"):
        if f != keep:
            f.unlink(missing_ok=True)


class CheckpointWriter:
    """Writes a run's checkpoints on a background thread, one at a time, in order.

    A sweep's 39-member ensemble checkpoint is 263 MB, written every 1 000 steps: hashing, writing
    and fsyncing it took ~1.5-2 s of a 2-core VM, during which training stood still. `save` takes
    CPU copies of the tensors (the run goes on changing its own) and returns; the thread merges
    them into the group's state if asked (the ledger of members that left), hashes, writes and
    renames the file into place, and releases the GIL for the hash and for each tensor's write
    (the buffers are written as they lie, never joined into one copy).
    The next `save` and `wait` join the write in flight and raise its error (a full disk: a
    CheckpointError, the previous file intact). Wait before anything that needs the file on disk
    (the final checkpoint, stopping): a write must not land after the run has ended.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ledger: tuple[Ledger, Path, str] | None = None  # the last ledger written: its file, digest

    def save(self, path: Path, state: dict[str, torch.Tensor], flat: FlatParams,
             noise_gens: list[torch.Generator], meta: dict, *, background: bool = True,
             ledger: Ledger | None = None, whole: bool = False) -> None:
        """Write the batched model's `state` (`params` (N, P) and the optimizer's tensors: CPU
        tensors the writer may keep, which no one changes any more), the layout of `params` that
        `flat` names, the noise generators and `meta` (step, wall time, member states); in the
        background unless `background` is False. With a `ledger` (members have left), the file
        names the ledger's file (written first if it is not on disk yet), or with `whole` holds
        the merged group (the merge runs on the writer's thread too)."""
        self.wait()
        layout = [[n, list(s), sl.start, sl.stop] for n, s, sl in zip(flat.names, flat.shapes, flat.slices)]
        args = (path, state, ledger, whole, _gen_states(noise_gens),
                {"meta": json.dumps(meta), "layout": json.dumps(layout)})
        if not background:
            self._write_state(*args)
            return
        thread = threading.Thread(target=self._write, args=args, name="groklab-checkpoint")
        with deferred_interrupts():  # a stop landing inside start() left a thread no one could join
            thread.start()
            self._thread = thread

    def _write(self, *args) -> None:
        try:
            self._write_state(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = e

    def _write_state(self, path: Path, state: dict[str, torch.Tensor], ledger: Ledger | None, whole: bool,
                     noise: torch.Tensor, metadata: dict[str, str]) -> None:
        keep = None
        if ledger is not None and whole:
            state = ledger.merge(state)
        elif ledger is not None:
            keep, digest = self._ledger_file(path, ledger)
            metadata = {**metadata, "format": PARTIAL_FORMAT, "ledger": keep.name, "ledger_sha256": digest,
                        "live": json.dumps(ledger.live)}
        write_tensors(path, {**state, "rng.noise": noise}, metadata)
        drop_ledgers(path, keep)  # the checkpoint on disk names no other

    def _ledger_file(self, path: Path, ledger: Ledger) -> tuple[Path, str]:
        """The file of `ledger` beside checkpoint `path` and its digest, written on first use."""
        if self._ledger is None or self._ledger[0] is not ledger:
            digest = _digest(ledger.tensors)
            # Named by its digest: a resumed run that leaves the same way writes the very file an
            # older checkpoint names (the same bytes, replaced atomically).
            file = path.with_name(f"{path.stem}.ledger-{digest[:16]}.safetensors")
            write_tensors(file, ledger.tensors, {}, digest=digest)
            self._ledger = (ledger, file, digest)
        return self._ledger[1], self._ledger[2]

    def wait(self, *, raise_error: bool = True) -> None:
        """Until the write in flight (if any) is on disk; raise its error unless told not to."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


def read_checkpoint(path: Path, *, again: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The whole group's tensors and the metadata of a checkpoint: with the rows of the ledger
    file it names (members that left) merged in."""
    path = Path(path)
    tensors, metadata = read_tensors(path)
    if "ledger" not in metadata:
        return tensors, metadata
    ledger_path = path.with_name(metadata["ledger"])
    try:
        ledger, ledger_meta = read_tensors(ledger_path)
    except CheckpointError as e:
        if again and not ledger_path.exists():  # a run still training moved on to a new ledger
            return read_checkpoint(path, again=False)  # since this checkpoint was read: read anew
        raise CheckpointError(f"checkpoint {str(path)!r} keeps the members that left in {ledger_path.name!r}: "
                              f"{e}") from None
    if ledger_meta.get("sha256") != metadata["ledger_sha256"]:
        raise CheckpointError(f"checkpoint {str(path)!r} names the ledger {str(ledger_path)!r}, which holds "
                              "other contents (replaced after groklab wrote it)")
    live = Ledger(ledger, tuple(json.loads(metadata["live"])))
    return {**tensors, **live.merge({k: tensors[k] for k in ledger})}, metadata


def load_checkpoint(path: Path, flat: FlatParams, opt: MemberOptimizer, noise_gens: list[torch.Generator]) -> dict:
    """Restore everything in place, onto the run's device; return the metadata (step, wall, members)."""
    tensors, metadata = read_checkpoint(path)
    try:
        with torch.no_grad():
            flat.data.copy_(tensors["params"])
        opt.load_state({k: v.to(flat.data.device) for k, v in tensors.items() if k.startswith("opt.")})
        for g, s in zip(noise_gens, tensors["rng.noise"]):
            g.set_state(s.clone())
        return json.loads(metadata["meta"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # shapes or keys from another config
        why = str(e).splitlines()[0] if str(e) else repr(e)
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit this run ({type(e).__name__}: {why}); was it "
                              "copied from another run?") from None


def member_weights(path: Path, member: int) -> dict[str, torch.Tensor]:
    """Named weights of one member (shapes without the member dim), for analyses."""
    tensors, metadata = read_checkpoint(path)
    layout = json.loads(metadata["layout"])
    params = tensors["params"][member]
    return {name: params[a:b].reshape(shape[1:]) for name, shape, a, b in layout}


# ---------------------------------------------------------------- the write and read helpers

def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order (the file's own order)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # the bytes as a numpy view: a copy (.tobytes()) doubled the digest's time on a sweep's
        # 263 MB ensemble checkpoint
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def _file_parts(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list:
    """The safetensors file of contiguous CPU `tensors`, as the buffers to write one after the
    other: the 8-byte header length, the JSON header (padded to 8 bytes), then each tensor's bytes
    in name order, as views of the tensors' own memory. (safetensors.torch.save copies each tensor
    twice, and one joined `bytes` copies it again: 0.27 s for a 263 MB checkpoint on a 2-core VM,
    all of it holding the GIL; `os.write` of each view releases it. safetensors' loader reads every
    file back.)"""
    header: dict[str, object] = {"__metadata__": metadata}
    buffers, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        b = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        buffers.append(b)
        offset += len(b)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return [len(head).to_bytes(8, "little"), head, *buffers]


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                  digest: str | None = None) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename, fsync of the directory);
    `digest`: the tensors' `_digest`, if already known."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    parts = _file_parts(tensors, {"format": FORMAT, **metadata, "sha256": digest or _digest(tensors)})
    atomic_write(path, parts, what="checkpoint")


def atomic_write(path: Path, data: bytes | Sequence, what: str = "file") -> None:
    """Replace `path` by `data` (bytes, or buffers written one after the other) so that a crash
    leaves the old or the new file, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f"{path.name}.tmp*"):  # left by a writer killed mid-write
            stale.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)  # the bytes reach the disk before the rename makes them the checkpoint
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # ... and the rename itself survives a power loss
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        why = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        kept = "the previous one is intact" if path.exists() else "none was written before"
        raise CheckpointError(f"cannot write {what} {str(path)!r}: {why}; {kept} — free space and "
                              "`groklab resume` the run") from None


def _write_all(fd: int, data: bytes | Sequence) -> None:
    for part in [data] if isinstance(data, bytes) else data:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a checkpoint, after checking that groklab wrote it intact."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e.strerror}") from None
    metadata = _check_header(path, data)
    try:
        tensors = _load_bytes(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({e})") from None
    if "sha256" in metadata and _digest(tensors) != metadata["sha256"]:
        raise CheckpointError(f"checkpoint {str(path)!r} fails its SHA-256 check: its contents were changed "
                              "after groklab wrote it")
    return tensors, metadata


def _check_header(path: Path, data: bytes) -> dict[str, str]:
    """Refuse anything that is not a complete groklab safetensors file, without unpickling it."""
    name = repr(str(path))
    if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":  # pickle protocol 2+ / torch.save zip archive
        raise CheckpointError(f"checkpoint {name} is a pickle (torch.save) file; groklab never unpickles "
                              "checkpoints (unpickling runs code) — only safetensors files it wrote are loaded")
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {name} is truncated ({len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"checkpoint {name} is truncated or not a safetensors file "
                              f"(header of {n} bytes in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8:8 + n])
        metadata = header.get("__metadata__") or {}
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        raise CheckpointError(f"checkpoint {name} is not a safetensors file (unreadable header)") from None
    if metadata.get("format") not in _READS:
        raise CheckpointError(f"{name} is not a groklab checkpoint (format {metadata.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if 8 + n + max(ends, default=0) != len(data):
        raise CheckpointError(f"checkpoint {name} is truncated ({len(data)} bytes, the header promises "
                              f"{8 + n + max(ends, default=0)})")
    return metadata

