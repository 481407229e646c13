"""The compressed file: a pruned model stored in the bytes its non-zeros need (safetensors).

Each weight tensor with enough zeros is stored as its non-zero values packed densely plus one bit
per entry saying where they go, the mask deflated when that is smaller (about half a bit per entry
at 90% sparsity): 90% unstructured sparsity costs about 0.10 + 1/64 of the dense bytes and 2:4
about 0.5 + 1/32.  Every other tensor is stored whole.  All tensors are concatenated into four
(packed values, mask, whole floating tensors, the rest), so the header does not grow with the
number of layers; the metadata lists names, shapes and dtypes in order.  Values may be kept in
float16 or bfloat16 (`dtype`).  The
safetensors metadata holds the format version, the task, the structure record and the layout,
so `read_compressed` rebuilds the state dict exactly (float32) or within the chosen rounding.
Safetensors is a pickle-free format: reading it cannot run code.
"""

from __future__ import annotations

import io
import json
import math
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .artifact import digest
from .atomic import write_bytes_atomic

__all__ = ["FORMAT", "DTYPES", "encode", "decode", "write_compressed", "read_compressed", "is_compressed",
           "compressed_bytes", "dense_bytes", "file_bytes"]

FORMAT = "slr_prune.compressed/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


VALUES, MASK, DENSE, OTHER = ":values", ":mask", ":dense", ":other"
"""The four tensors a file holds (state dict names never contain ':', so these cannot collide):
the non-zeros of every packed tensor in order, one bit per entry of them, the floating tensors
stored whole, and the rest (integer and boolean tensors, as int64)."""


def _packed_wins(t: Tensor, nonzero: int, dtype: torch.dtype) -> bool:
    """Whether values + bitmask take fewer bytes than the tensor stored densely."""
    size = dtype.itemsize
    return nonzero * size + t.numel() / 8 < t.numel() * size


def encode(state: Mapping[str, Tensor], dtype: str = "float32") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, layout): the tensors to store and how to rebuild the state dict from them.

    layout = {"tensors": [[name, shape, dtype, kind], ...] in storage order, kind "packed",
    "dense" or "other"; "mask": "zlib" (the mask's bits deflated, when that is smaller) or "bits"}.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    target = DTYPES[dtype]
    rows: list[list[Any]] = []
    parts: dict[str, list[Tensor]] = {VALUES: [], MASK: [], DENSE: [], OTHER: []}
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point():
            kind = "other"
            parts[OTHER].append(t.reshape(-1).to(torch.int64))
        else:
            stored = t.to(target).reshape(-1)
            keep = stored != 0
            kind = "packed" if t.dim() >= 2 and _packed_wins(t, int(keep.sum()), target) else "dense"
            if kind == "packed":
                parts[VALUES].append(stored[keep])
                parts[MASK].append(keep)
            else:
                parts[DENSE].append(stored)
        rows.append([name, list(t.shape), _name(t.dtype), kind])
    tensors = {k: torch.cat(v) for k, v in parts.items() if v}
    mask = "bits"
    if MASK in tensors:
        bits = np.packbits(tensors[MASK].numpy()).tobytes()
        deflated = zlib.compress(bits, 9)  # a sparse mask's bits are far from random: ~0.5 bit per entry at 90%
        mask = "zlib" if len(deflated) < len(bits) else "bits"
        tensors[MASK] = torch.frombuffer(bytearray(deflated if mask == "zlib" else bits), dtype=torch.uint8)
    return tensors, {"tensors": rows, "mask": mask}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _mask(tensors: Mapping[str, Tensor], layout: Mapping[str, Any], count: int) -> Tensor:
    bits = tensors[MASK].numpy().tobytes() if MASK in tensors else b""
    if layout.get("mask") == "zlib":  # bounded: a damaged stream cannot inflate past the mask's size
        bits = zlib.decompressobj().decompress(bits, math.ceil(count / 8))
    return torch.from_numpy(np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=count).astype(bool))


def decode(tensors: Mapping[str, Tensor], layout: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict `encode` stored (in its original dtypes)."""
    rows = layout["tensors"]
    keep = _mask(tensors, layout, sum(math.prod(shape) for _, shape, _, kind in rows if kind == "packed"))
    if int(keep.sum()) != (tensors[VALUES].numel() if VALUES in tensors else 0):
        raise ValueError("its mask and its stored values disagree in number")
    at = {VALUES: 0, MASK: 0, DENSE: 0, OTHER: 0}
    state = {}
    for name, shape, dtype, kind in rows:
        size, out = math.prod(shape), getattr(torch, dtype)
        if kind == "packed":
            part = keep[at[MASK]:at[MASK] + size]
            full = torch.zeros(size, dtype=out)
            full[part] = tensors[VALUES][at[VALUES]:at[VALUES] + int(part.sum())].to(out)
            at[MASK], at[VALUES] = at[MASK] + size, at[VALUES] + int(part.sum())
        else:
            source = DENSE if kind == "dense" else OTHER
            full = tensors[source][at[source]:at[source] + size].to(out)
            at[source] += size
        state[name] = full.reshape(shape)
    return state


def _metadata(layout: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, str]:
    compact = {"separators": (",", ":"), "default": str}
    return {"format": FORMAT, "layout": json.dumps(layout, **compact),
            **{k: json.dumps(v, **compact) for k, v in extra.items()}}


def write_compressed(path: str | Path, state: Mapping[str, Tensor], dtype: str = "float32",
                     **extra: Any) -> Path:
    """Write `state` compressed to `path` atomically; `extra` (task, structure, spec, ...) goes
    into the metadata as JSON."""
    from safetensors.torch import save

    tensors, layout = encode(state, dtype)
    meta = _metadata(layout, {**extra, "dtype": dtype, "digest": digest(tensors)})
    return write_bytes_atomic(save(tensors, metadata=meta), path)


def compressed_bytes(state: Mapping[str, Tensor], dtype: str = "float32") -> int:
    """The size in bytes of the compressed file of `state` (without metadata beyond the layout)."""
    from safetensors.torch import save

    tensors, layout = encode(state, dtype)
    return len(save(tensors, metadata=_metadata(layout, {})))


def dense_bytes(state: Mapping[str, Tensor]) -> int:
    """Bytes of `state` in float32 written by torch.save: what a dense checkpoint of it costs."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
                for k, v in state.items()}, buffer)
    return buffer.tell()


def file_bytes(model: nn.Module) -> dict[str, int]:
    """Measured, not estimated: {"dense": torch.save bytes of the float32 state dict, "compressed":
    bytes of the compressed file (float32 values)} of `model` as it is now."""
    state = model.state_dict()
    return {"dense": dense_bytes(state), "compressed": compressed_bytes(state)}


def is_compressed(path: str | Path) -> bool:
    """Whether `path` starts like a safetensors file (an 8-byte header length, then JSON)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 32


def read_compressed(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, metadata with its JSON values decoded) of a compressed file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    info = {k: json.loads(v) for k, v in meta.items() if k != "format"}
    if info.pop("digest", None) != digest(tensors):
        raise ValueError("failed its integrity check: its tensors do not match the digest stored when it was "
                         "written (the file was damaged or edited)")
    return decode(tensors, info.pop("layout")), info
