"""Lane detection: Ultra-Fast-Lane-Detection on TuSimple, with the official accuracy, FP and FN.

Training uses UFLD's losses (focal classification, similarity, auxiliary segmentation; shape
loss weight 0 as in the TuSimple configuration); the metric decodes the head to TuSimple
prediction records and scores them with the benchmark's rules.  With `data=None` a small
synthetic TuSimple-format dataset is generated into the cache folder (and the task says so),
so the whole path runs offline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import create_model, resolve_model
from ..task import register_task
from ..utils import model_mode
from .base import DatasetTask

__all__ = ["LaneTask", "parse_image_size"]

REFERENCE_SIZE = (288, 800)  # UFLD's TuSimple input (h, w)
SYNTHETIC_SIZE = (96, 256)  # the smaller default for the generated data
SYNTHETIC_COUNTS = (96, 32)  # train / test images generated when no data is given


def parse_image_size(value: int | str | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    """(h, w) from an int width (h follows UFLD's 288:800, rounded up to a multiple of 32), "HxW" or (h, w)."""
    if value is None:
        return default
    if isinstance(value, str):
        parts = value.lower().replace("×", "x").split("x")
        if len(parts) == 1 and parts[0].strip().isdigit():
            value = int(parts[0])
        elif len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
        else:
            raise ValueError(f"image_size {value!r} is not a width like 800 or 'HxW' like '288x800'")
    if isinstance(value, int):
        if value < 32:
            raise ValueError(f"image_size (width) must be at least 32, got {value}")
        return max(32, 32 * math.ceil(value * REFERENCE_SIZE[0] / REFERENCE_SIZE[1] / 32)), value
    size = tuple(int(v) for v in value)
    if len(size) != 2:
        raise ValueError(f"image_size {value!r} must be (h, w)")
    return size[0], size[1]


def _check_head(image_size: tuple[int, int], griding_num: int, num_row_anchors: int, num_lanes: int,
                hidden: int) -> None:
    """Fail before any data is read on options the model would reject (without building it)."""
    from ..models.ufld import STRIDE

    h, w = image_size
    if h < STRIDE or w < STRIDE or h % STRIDE or w % STRIDE:
        raise ValueError(f"image_size {h}x{w}: UFLD needs both sides to be multiples of {STRIDE}, e.g. 288x800")
    for name, value, low in (("griding_num", griding_num, 2), ("num_row_anchors", num_row_anchors, 2),
                             ("num_lanes", num_lanes, 2), ("hidden", hidden, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    if num_lanes % 2:
        raise ValueError(f"num_lanes must be even (half on each side of the car), got {num_lanes}")


@register_task("lane")
class LaneTask(DatasetTask):
    """UFLD (ResNet-18/34) on a TuSimple root; metric "accuracy" (TuSimple), also "fp" and "fn".

    `data` is the TuSimple root (clips/, label_data_*.json for training, test_label.json for the
    metric); `image_size` an int width, "HxW" or (h, w), multiples of 32 (default 288×800, or
    96×256 on the generated data).  Head options follow UFLD: `griding_num` column cells,
    `num_row_anchors` anchor rows from 160 to 710 (label pixels), `num_lanes` slots, `hidden`
    units.  `limit_train` / `limit_val` cut the label lists for quick runs.
    """

    metric = "accuracy"
    side_metrics = ("fp", "fn")  # TuSimple's false positive and negative rates (lower is better)
    default_exclude = ("aux_*",)  # the auxiliary branch is dropped at inference

    def __init__(self, model: str = "ufld_resnet18", dataset: str | None = "tusimple",
                 data: str | Path | None = None, image_size: int | str | Sequence[int] | None = None,
                 batch_size: int = 16, eval_batch_size: int | None = None, workers: int = 0, seed: int = 0,
                 griding_num: int = 100, num_row_anchors: int = 56, num_lanes: int = 4, hidden: int = 2048,
                 use_aux: bool = True, loss_weights: Mapping[str, float] | None = None,
                 limit_train: int | None = None, limit_val: int | None = None, drop_empty: bool = False,
                 synthetic: Sequence[int] = SYNTHETIC_COUNTS, verbose: bool = True):
        from ..data.synthetic_lanes import synthetic_tusimple_cache
        from ..data.tusimple import TuSimpleDataset, default_row_anchors, split_label_files
        from ..models.ufld import LossWeights

        model = resolve_model(str(model), "lane")  # the models registered for this task, or their aliases
        if dataset not in (None, "tusimple"):
            raise ValueError(f"the lane task reads TuSimple only; got dataset {dataset!r} (use 'tusimple')")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.model_name, self.dataset_name = model, "tusimple"
        self.synthetic = data is None
        default_size = SYNTHETIC_SIZE if self.synthetic else REFERENCE_SIZE
        self.image_size = parse_image_size(image_size, default_size)
        _check_head(self.image_size, griding_num, num_row_anchors, num_lanes, hidden)
        if data is None:
            data = synthetic_tusimple_cache(int(synthetic[0]), int(synthetic[1]), seed=seed, verbose=verbose)
        self.root = Path(data).expanduser()
        self.griding_num, self.num_lanes, self.hidden, self.use_aux = griding_num, num_lanes, hidden, use_aux
        self.row_anchors = default_row_anchors(num_row_anchors)
        self.loss_weights = LossWeights.from_any(loss_weights)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.workers, self.seed, self.drop_empty = workers, seed, drop_empty
        self.name = f"{model}-tusimple" + ("-synthetic" if self.synthetic else "")
        files = {split: split_label_files(self.root, split) for split in ("train", "test")}
        options = {"input_size": self.image_size, "row_anchors": self.row_anchors,
                   "griding_num": griding_num, "num_lanes": num_lanes}
        self.train_set = TuSimpleDataset(self.root, files["train"], limit=limit_train, **options)
        self.val_set = TuSimpleDataset(self.root, files["test"], limit=limit_val, **options)

    def record(self) -> dict[str, Any]:
        return {"model": self.model_name, "dataset": self.dataset_name, "image_size": list(self.image_size),
                "griding_num": self.griding_num, "num_row_anchors": len(self.row_anchors),
                "num_lanes": self.num_lanes, "hidden": self.hidden, "use_aux": self.use_aux}

    def build_model(self) -> nn.Module:
        return create_model(self.model_name, griding_num=self.griding_num, num_row_anchors=len(self.row_anchors),
                            num_lanes=self.num_lanes, input_size=self.image_size, use_aux=self.use_aux,
                            hidden=self.hidden)

    # ---- data ---------------------------------------------------------------------------------
    def example_input(self, batch_size: int = 1) -> Tensor:
        return torch.randn(batch_size, 3, *self.image_size)

    # ---- loss and metric ----------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        from ..models.ufld import ufld_loss

        x, cls_target, seg_target, _ = batch
        out = model(x.to(device, non_blocking=True))
        return ufld_loss(out, cls_target.to(device, non_blocking=True), seg_target.to(device, non_blocking=True),
                         self.loss_weights)["loss"]

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        return model(batch[0].to(device, non_blocking=True))

    @torch.no_grad()
    def predict(self, model: nn.Module, device: torch.device) -> list[dict[str, Any]]:
        """TuSimple prediction records for every validation image (the submission format)."""
        from ..data.tusimple import prediction_records

        records: list[dict[str, Any]] = []
        with model_mode(model, train=False):
            for x, _, _, index in self.val_loader():
                logits = model(x.to(device, non_blocking=True))
                labels = [self.val_set.labels[int(i)] for i in index]
                records += prediction_records(logits, self.row_anchors, labels, drop_empty=self.drop_empty)
        return records

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """TuSimple accuracy, FP and FN on the validation (test) labels."""
        from ..metrics.tusimple import evaluate_lanes

        scores = evaluate_lanes(self.predict(model, device), [g.to_dict() for g in self.val_set.labels])
        return {"accuracy": scores["accuracy"], "fp": scores["fp"], "fn": scores["fn"]}
