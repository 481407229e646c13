"""The artifact: the one file format slr_prune writes and reads (format "slr_prune/2").

Every file the tool writes — a dense baseline, a training phase's resume state, a pruned or
fine-tuned model, a structurally pruned model, a layer-wise reconstruction in progress — is an
`Artifact`: the state dict, the task that built the model, the structure record (so a resized
model rebuilds from a fresh instance), the masks, the phase state a resume needs, provenance
(the settings fingerprint a resume is checked against) and the result.  One atomic,
weights-only save and one load path with one error path; a SHA-256 digest of the contents is
stored with the file and checked on load, so damaged bytes are named instead of evaluated.

Files written by slr_prune 0.1 (six layouts) and plain state dicts (torchvision, timm, a
`module.`-prefixed DDP save, a dict under `state_dict` or `model`) are converted on read.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .atomic import write_atomic
from .errors import StateError
from .structure import FORMAT as STRUCTURE_FORMAT
from .structure import apply_record, structure_record

if TYPE_CHECKING:
    from .task import Task

__all__ = ["FORMAT", "Artifact", "save_artifact", "load_artifact", "save_atomic", "state_dict_mismatch", "digest",
           "head_rows"]

FORMAT = "slr_prune/2"

_PHASE_KEYS = ("epoch", "optimizer", "scheduler", "solver", "history", "config", "records",
               "w_opt", "a_opt", "sched")
"""Keys of a 0.1 file that belong to a training phase's resume state (files with an epoch or
per-layer records: a phase or layer-wise checkpoint)."""


@dataclass
class Artifact:
    """What one file holds; every field but `state_dict` is optional."""

    state_dict: dict[str, Tensor]
    task_name: str | None = None
    task: dict[str, Any] | None = None
    """The task's options (`Task.record()`): the model, dataset and data it was built from."""
    structure: dict[str, Any] | None = None
    masks: dict[str, Tensor] | None = None
    phase: dict[str, Any] | None = None
    """The resume state of a training phase (epoch, optimizer, scheduler, solver, history)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """How it was made: the settings fingerprint a resume is checked against, the source weights."""
    result: dict[str, Any] | None = None
    legacy: str | None = field(default=None, compare=False)
    """The layout it was converted from on read (None for a slr_prune/2 file)."""

    @classmethod
    def of(cls, model: nn.Module, task: Task | None = None, **fields_: Any) -> Artifact:
        """An artifact of `model` (CPU copies of its state and its structure record) and `task`."""
        from .task import task_name

        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        named = {"task_name": task_name(task), "task": task.record()} if task is not None else {}
        return cls(state_dict=state, structure=structure_record(model), **{**named, **fields_})

    @property
    def settings(self) -> dict[str, Any] | None:
        return self.provenance.get("settings")

    def build(self, model: nn.Module, where: str = "the file") -> nn.Module:
        """Resize `model` (a fresh instance of the architecture) to the structure record and load
        the weights strictly; a mismatch names the first missing and unexpected keys."""
        if self.structure is not None:
            try:
                apply_record(model, self.structure)
            except StateError as e:
                raise StateError(f"{where} does not fit the model: {e}") from e
        problem = state_dict_mismatch(model, self.state_dict)
        if problem:
            raise StateError(f"{where} does not fit the model: {problem}")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.load_state_dict(self.state_dict, strict=True)
        return model.to(device)

    def to_payload(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "legacy"}
        return {"format": FORMAT, **body, "digest": digest(body)}


def state_dict_mismatch(model: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """None when `state` loads into `model` strictly; else one line naming the differences."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and isinstance(state[k], Tensor) and state[k].shape != own[k].shape]
    parts = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                       ("shapes (file vs model)", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts) or None


def head_rows(model: nn.Module, state: Mapping[str, Tensor]) -> int | None:
    """The output count of `state`'s head when it differs from `model`'s and nothing else does:
    the last module with a weight, wider or narrower only along its outputs (a pretrained head)."""
    own = model.state_dict()
    last = [n for n, m in model.named_modules() if isinstance(getattr(m, "weight", None), Tensor)][-1:]
    differ = {k for k in own if k in state and state[k].shape != own[k].shape}
    if not last or not differ or not differ <= {f"{last[0]}.weight", f"{last[0]}.bias"}:
        return None
    theirs, ours = state[f"{last[0]}.weight"].shape, own[f"{last[0]}.weight"].shape
    return int(theirs[0]) if theirs[1:] == ours[1:] else None


def digest(obj: Any) -> str:
    """SHA-256 of nested plain data and tensors (names, shapes, dtypes and bytes), order-independent
    in dict keys: stored with a file and recomputed on load."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{tuple(t.shape)}{t.dtype}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)}|".encode())
        for k in sorted(obj, key=repr):
            h.update(f"{k!r}:".encode())
            _feed(h, obj[k])
    elif isinstance(obj, list | tuple):
        h.update(f"L{len(obj)}|".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"{obj!r}|".encode())


# ---- writing --------------------------------------------------------------------------------------
def save_artifact(artifact: Artifact, path: str | Path) -> Path:
    """Write `artifact` to `path` atomically (see `save_atomic`)."""
    return save_atomic(artifact.to_payload(), path)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """torch.save `obj` to `path` atomically (see `write_atomic`).  Only exporters of other tools'
    formats call this directly; slr_prune's own files are artifacts."""
    return write_atomic(lambda f: torch.save(obj, f), path)


# ---- reading --------------------------------------------------------------------------------------
def load_artifact(path: str | Path, map_location: Any = "cpu") -> Artifact:
    """Read any file slr_prune wrote (or a plain state dict) as an Artifact; weights only, so
    nothing in the file can run code; a damaged or foreign file is one clear error."""
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    from .compressed import is_compressed

    if path.is_file() and is_compressed(path):
        return _compressed(path, where)
    payload = _read(path, where, map_location)
    if not isinstance(payload, Mapping):
        raise ValueError(f"{where} holds a {type(payload).__name__}, expected a dict")
    if payload.get("format") == FORMAT:
        return _current(payload, where)
    return _convert(payload, where)


def _read(path: Path, where: str, map_location: Any) -> Any:
    if path.is_dir():
        raise IsADirectoryError(f"{where} is a folder; give the file inside it (e.g. pruned.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = ("it holds objects other than tensors and plain data, refused because loading them could run code"
               if "unsupported global" in str(e).lower() else "not a readable torch.save file")
        raise ValueError(f"{where} is corrupt or not a slr_prune/PyTorch checkpoint: {why}") from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{where} is corrupt or not a slr_prune/PyTorch checkpoint: {first}") from e


def _compressed(path: Path, where: str) -> Artifact:
    """A compressed file (slr_prune/compressed.py) as an Artifact."""
    from .compressed import read_compressed

    try:
        state, info = read_compressed(path)
    except Exception as e:  # noqa: BLE001 - any failure to read it means a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StateError(f"{where} is a damaged compressed file: {first}") from e
    return Artifact(state_dict=state, task_name=info.get("task_name"), task=info.get("task"),
                    structure=info.get("structure"), result=info.get("result"), legacy=None)


def _current(payload: Mapping[str, Any], where: str) -> Artifact:
    names = {f.name for f in fields(Artifact)} - {"legacy"}
    body = {k: payload[k] for k in names if k in payload}
    if not isinstance(body.get("state_dict"), Mapping):
        raise StateError(f"{where}: its state_dict is missing or not a mapping of tensors")
    if payload.get("digest") != digest(body):
        raise StateError(f"{where} failed its integrity check: its contents do not match the digest stored "
                         "when it was written (the file was damaged or edited); re-create it or use a copy")
    check_field_types(body, where)
    return Artifact(**body)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task_name": (str,), "task": (Mapping,), "structure": (Mapping,), "masks": (Mapping,), "phase": (Mapping,),
    "provenance": (Mapping,), "result": (Mapping,)}


def check_field_types(body: Mapping[str, Any], where: str) -> None:
    """Each field of a file has its type (None allowed where optional); state dict and masks map
    names to tensors.  A wrong type is one line naming the field, not a traceback later."""
    for name, types in _FIELD_TYPES.items():
        value = body.get(name)
        if value is not None and not isinstance(value, types):
            raise StateError(f"{where}: field {name!r} is a {type(value).__name__}, expected "
                             f"{'a string' if types == (str,) else 'a mapping'}")
    for name in ("state_dict", "masks"):
        for key, value in (body.get(name) or {}).items():
            if not isinstance(key, str) or not isinstance(value, Tensor):
                raise StateError(f"{where}: {name} entry {key!r} is a {type(value).__name__}, expected a tensor "
                                 "under a parameter name")


def _convert(payload: Mapping[str, Any], where: str) -> Artifact:
    """A slr_prune 0.1 file or a plain state dict as an Artifact."""
    if isinstance(payload.get("format"), str) and payload["format"] != STRUCTURE_FORMAT:
        raise StateError(f"{where} has format {payload['format']!r}, which this slr_prune ({FORMAT}) cannot "
                         "read; use the slr_prune release that wrote it")
    if payload.get("format") == STRUCTURE_FORMAT:  # structured.save_pruned of 0.1
        extra = dict(payload.get("extra") or {})
        return Artifact(state_dict=dict(payload["state_dict"]), task_name=extra.pop("task_name", None),
                        task=extra.pop("task", None), structure=payload.get("record"),
                        result=extra or None, legacy=STRUCTURE_FORMAT)
    if isinstance(payload.get("model"), Mapping) and _tensors(payload["model"]):  # every other 0.1 file
        resumable = "epoch" in payload or "records" in payload
        phase = {k: payload[k] for k in _PHASE_KEYS if k in payload} if resumable else {}
        result = payload.get("result") or ({k: payload[k] for k in ("metrics", "history") if k in payload}
                                           if not phase else None)
        settings = payload.get("settings")
        check_field_types({k: payload.get(k) for k in ("task_name", "task", "masks")}, where)
        return Artifact(state_dict=dict(payload["model"]), task_name=payload.get("task_name"),
                        task=payload.get("task"), masks=payload.get("masks"), phase=phase or None,
                        provenance={"settings": settings} if settings is not None else {},
                        result=result or None, legacy="slr_prune 0.1")
    for key in ("state_dict", "model"):
        if isinstance(payload.get(key), Mapping) and _tensors(payload[key]):
            return _plain(payload[key], f"a state dict under {key!r}")
    if _tensors(payload):
        return _plain(payload, "a state dict")
    keys = ", ".join(map(str, list(payload)[:6]))
    raise StateError(f"{where} is neither a slr_prune file nor a state dict of tensors (keys: {keys})")


def _tensors(d: Mapping[str, Any]) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in d.items())


def _plain(state: Mapping[str, Tensor], what: str) -> Artifact:
    """A plain state dict; the `module.` prefix of a DistributedDataParallel save is dropped."""
    state = dict(state)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return Artifact(state_dict=state, legacy=what)
