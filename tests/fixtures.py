"""Tiny datasets written in the real on-disk formats (CIFAR-10 python batches, image folders)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> Path:
    """root/cifar-10-batches-py with data_batch_1..5, test_batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [int(x) for x in rng.integers(0, 10, per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    return root


def write_image_folders(root: Path, classes: int = 3, per_class: int = 2, size: int = 40,
                        mode: str = "RGB") -> Path:
    """root/{train,val}/class<c>/<i>.png of random pixels, colour ("RGB") or grey ("L")."""
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(d / f"{i}.png")
    return root


def assert_flips_are_caught(path: Path, offsets, match: str) -> None:
    """Flip one byte at each offset of `path` in turn: loading it must raise StateError matching
    `match`; the file is restored afterwards."""
    import pytest

    from slr_prune.artifact import load_artifact
    from slr_prune.errors import StateError

    clean = path.read_bytes()
    try:
        for at in offsets:
            damaged = bytearray(clean)
            damaged[at] ^= 0x40
            path.write_bytes(bytes(damaged))
            with pytest.raises(StateError, match=match):
                load_artifact(path)
    finally:
        path.write_bytes(clean)
