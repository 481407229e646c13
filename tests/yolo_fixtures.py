"""Small detection fixtures for the yolo tests: a tiny synthetic set and a detector that outputs
given boxes (to check the evaluation path without training a network)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slr_prune.data.synthetic_detection import write_synthetic_detection

SMALL = {"train_images": 16, "val_images": 8, "image_size": 64, "num_classes": 3, "max_objects": 3, "seed": 5}


def small_dataset(root: Path, **options) -> Path:
    """16 train / 8 val images of at most 64 px with 3 classes; returns the data yaml."""
    return write_synthetic_detection(root, **{**SMALL, **options})


class ReplayDetector(nn.Module):
    """Returns, batch after batch, the given raw predictions (B, 4 + nc, A) as a model in eval mode would."""

    def __init__(self, outputs: list[torch.Tensor]):
        super().__init__()
        self.outputs = list(outputs)
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor):
        out = self.outputs.pop(0)
        assert out.shape[0] == x.shape[0]
        return out, {}


def perfect_outputs(loader, nc: int) -> list[torch.Tensor]:
    """Raw predictions that put every ground-truth box of every val batch at score 0.9."""
    outs = []
    for batch in loader:
        b, _, h, w = batch["img"].shape
        count = max(1, int(torch.bincount(batch["batch_idx"].long(), minlength=b).max()))
        raw = torch.zeros(b, 4 + nc, count)
        for i in range(b):
            sel = batch["batch_idx"] == i
            boxes = batch["bboxes"][sel] * torch.tensor([w, h, w, h])
            cls = batch["cls"][sel].long().view(-1)
            raw[i, :4, : len(cls)] = boxes.T
            raw[i, 4 + cls, torch.arange(len(cls))] = 0.9
        outs.append(raw)
    return outs
