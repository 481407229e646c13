"""The `yolo` task: YOLOv3 / YOLOv3-tiny detection on ultralytics, scored by pycocotools.

The model (slr_prune.models.yolo), its loss (the model's own v8DetectionLoss), the data
(slr_prune.data.yolo: ultralytics' YOLODataset, augmented for training, letterboxed for
evaluation) and NMS are ultralytics'; the metric is COCO mAP on the predictions mapped back to
original image pixels.  Without a data yaml a small synthetic set is written to the cache.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.synthetic_detection import SyntheticDetectionConfig
from ..data.yolo import build_dataset, ground_truth, load_data_yaml, synthetic_data
from ..models import create_model
from ..models.yolo import (
    build_detection_model,
    bundled_names,
    head_exclusions,
    import_ultralytics,
    load_detection_model,
)
from ..registry import UnknownNameError
from ..task import Task, register_task
from ..utils import model_mode

__all__ = ["YoloTask"]


@register_task("yolo")
class YoloTask(Task):
    """YOLOv3 / YOLOv3-tiny detection: ultralytics model, loss and data; pycocotools mAP.

    model: "yolov3" | "yolov3-tiny" (bundled yaml, fresh weights), a model .yaml, or an ultralytics
    .pt (its weights: prune a trained model this way).  data: a data yaml; None writes a synthetic
    set (see `synthetic`).  metric "map50" (COCO mAP@0.5); evaluate() also returns "map"
    (mAP@0.5:0.95).  exclude_head picks `default_exclude`: "last" (default), "head" or "none".
    hyp overrides ultralytics hyper-parameters: augmentations (mosaic, fliplr, hsv_*, scale, ...) and
    the loss gains (box, cls, dfl).  val_images evaluates only the first N val images.
    trust_checkpoint allows a user .pt that ultralytics' weights-only allow-list refuses (a full
    unpickle can run code; never needed for files written by ultralytics or slr_prune).
    """

    metric = "map50"

    def __init__(self, model: str = "yolov3-tiny", dataset: str | None = None, data: str | Path | None = None,
                 batch_size: int = 16, eval_batch_size: int | None = None, image_size: int | None = None,
                 workers: int = 0, seed: int = 0, exclude_head: str = "last",
                 hyp: Mapping[str, Any] | None = None, conf: float = 0.001, iou: float = 0.7,
                 max_det: int = 300, val_images: int | None = None,
                 synthetic: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
                 trust_checkpoint: bool = False):
        import_ultralytics()
        if dataset not in (None, "synthetic", "yolo", "coco"):
            raise ValueError(f"dataset {dataset!r}: the yolo task reads a data yaml (--data); dataset may be "
                             "'yolo' or 'coco' (the same), or 'synthetic' for the generated shapes")
        if dataset == "synthetic" and data is not None:
            raise ValueError("dataset 'synthetic' is generated; do not also give a data yaml")
        if dataset in ("yolo", "coco") and data is None:
            raise ValueError(f"dataset {dataset!r} is read from disk: give its data yaml (--data PATH)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if not (0 <= conf < 1 and 0 < iou <= 1):
            raise ValueError(f"need 0 ≤ conf < 1 and 0 < iou ≤ 1, got conf={conf}, iou={iou}")
        self.model_name = str(model)
        self.trust_checkpoint = bool(trust_checkpoint)
        self.data_arg = None if data is None else str(data)
        self.synthetic_options = dict(synthetic or {})
        if data is None:
            self.data = synthetic_data(cache_dir, **self.synthetic_options)
        else:
            self.data = load_data_yaml(data)
        default_size = int(self.synthetic_options.get("image_size", SyntheticDetectionConfig.image_size)) \
            if self.data.synthetic else 640
        self.image_size = int(image_size or default_size)
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32 (the model's largest stride), "
                             f"got {self.image_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.workers, self.seed = workers, seed
        self.exclude_head = exclude_head
        # Mosaic shrinks objects to a few pixels at the synthetic set's 64-128 px: off there unless asked for.
        self.hyp = {**({"mosaic": 0.0} if self.data.synthetic else {}), **dict(hyp or {})}
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.val_images = val_images
        data_name = "synthetic" if self.data.synthetic else Path(str(self.data.yaml)).stem
        self.name = f"{Path(self.model_name).stem}-{data_name}"
        self._criteria: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

        self._template: nn.Module | None = None
        template = self.build_model()  # fail now on a bad model, and learn the head's layer names
        self.default_exclude = head_exclusions(template, exclude_head)
        self.stride = int(max(32, int(template.stride.max())))
        self._cfg = self._hyp()
        self.train_set = self._dataset(self.data.train, "train")
        self.val_set = self._dataset(self.data.val, "val", rect=True, fraction=val_images)
        self.ground_truth = ground_truth(self.data, self.val_set.im_files)

    # ---- set-up -------------------------------------------------------------------------------
    def _hyp(self) -> Any:
        from ultralytics.cfg import get_cfg

        unknown = [k for k in self.hyp if k not in get_cfg().__dict__]
        if unknown:
            raise ValueError(f"hyp: unknown ultralytics hyper-parameters {unknown}; valid ones include the "
                             "augmentations mosaic, mixup, fliplr, flipud, hsv_h, hsv_s, hsv_v, degrees, translate, "
                             "scale, shear and the loss gains box, cls, dfl")
        return get_cfg(overrides={**self.hyp, "imgsz": self.image_size, "task": "detect", "plots": False,
                                  "workers": self.workers, "batch": self.batch_size})

    def _dataset(self, sources: list[str], mode: str, rect: bool = False, fraction: int | None = None) -> Any:
        batch = self.batch_size if mode == "train" else self.eval_batch_size
        return build_dataset(self.data, sources, mode, self._cfg, batch, self.stride, rect=rect, fraction=fraction)

    def record(self) -> dict[str, Any]:
        return {"model": self.model_name, "data": self.data_arg, "image_size": self.image_size}

    # ---- Task interface -----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """A fresh copy of the task's model: the same initial (or loaded) weights on every call.

        The model is built once (ultralytics probes its strides with a forward pass at 256 px)
        and copied afterwards, so the task holds one CPU copy of the weights.
        """
        if self._template is None:
            self._template = self._load_model()
        return copy.deepcopy(self._template)

    def _load_model(self) -> nn.Module:
        name = self.model_name
        if name in bundled_names():
            return create_model(name, self.data.nc, self.data.names, seed=self.seed, task="yolo")
        if name.endswith((".yaml", ".yml")):
            return build_detection_model(name, self.data.nc, self.data.names, seed=self.seed)
        if not name.endswith(".pt"):
            raise UnknownNameError(f"unknown model {name!r}; choose one of {', '.join(bundled_names())}, a model "
                                   ".yaml or an ultralytics .pt file")
        model = load_detection_model(name, trust=self.trust_checkpoint)
        nc = int(model.model[-1].nc)
        if nc != self.data.nc:
            raise ValueError(f"model file {name!r} predicts {nc} classes but the data has {self.data.nc} "
                             f"({', '.join(self.data.names[:5])}{', ...' if self.data.nc > 5 else ''}); "
                             "train or pick a model for this data")
        return model

    def train_dataset(self) -> Any:
        return self.train_set

    def train_loader(self, sampler: Any = None) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=sampler is None, sampler=sampler,
                          num_workers=self.workers, collate_fn=self.train_set.collate_fn,
                          drop_last=len(self.train_set) > self.batch_size)

    def val_loader(self) -> DataLoader:
        return DataLoader(self.val_set, self.eval_batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=self.val_set.collate_fn)

    def probe_loader(self) -> DataLoader:
        # Training images without augmentation, in a fixed order: a fixed sample of the objective.
        if not hasattr(self, "_probe_set"):
            self._probe_set = self._dataset(self.data.train, "probe")
        return DataLoader(self._probe_set, self.batch_size, shuffle=False, num_workers=self.workers,
                          collate_fn=self._probe_set.collate_fn)

    def _criterion(self, model: nn.Module, device: torch.device) -> Any:
        """The model's own loss (v8DetectionLoss), built once per model and device."""
        from ultralytics.cfg import get_cfg

        per_model = self._criteria.setdefault(model, {})
        if device not in per_model:
            saved = getattr(model, "args", None)
            base = saved if isinstance(saved, dict) else dict(vars(saved)) if saved is not None else {}
            gains = {k: base[k] for k in ("box", "cls", "dfl") if k in base}
            gains.update({k: v for k, v in self.hyp.items() if k in ("box", "cls", "dfl")})
            model.args = get_cfg(overrides=gains)  # the criterion reads its gains from model.args
            try:
                per_model[device] = model.init_criterion()
            finally:
                model.args = saved
        return per_model[device]

    def _to_device(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        out = dict(batch)
        out["img"] = batch["img"].to(device, non_blocking=True).float().div_(255)
        for k in ("cls", "bboxes", "batch_idx"):
            out[k] = batch[k].to(device, non_blocking=True)
        return out

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        """Box + class + DFL loss of ultralytics' criterion, per image (not scaled by the batch size)."""
        core = getattr(model, "module", model)  # DDP forwards through the wrapper, the loss reads the core
        b = self._to_device(batch, device)
        preds = model(b["img"])
        total, _ = self._criterion(core, device)(preds, b)
        return total.sum() / b["img"].shape[0]

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Any:
        return model(batch["img"].to(device, non_blocking=True).float().div_(255))

    @torch.no_grad()
    def val_predictions(self, model: nn.Module, device: torch.device) -> Iterator[tuple[dict[str, Any], list[dict]]]:
        """Val batches with their NMS-ed predictions, boxes in the letterboxed image (as ultralytics' validator)."""
        from ultralytics.utils import nms

        with model_mode(model, train=False):
            for batch in self.val_loader():
                img = batch["img"].to(device, non_blocking=True).float().div_(255)
                out = model(img)
                raw = out[0] if isinstance(out, (tuple, list)) else out
                dets = nms.non_max_suppression(raw.float(), self.conf, self.iou, multi_label=True,
                                               max_det=self.max_det)
                yield batch, [{"bboxes": d[:, :4], "conf": d[:, 4], "cls": d[:, 5]} for d in dets]

    def evaluator(self) -> Any:
        from ..metrics.coco import CocoEvaluator

        return CocoEvaluator(self.ground_truth, self.data.names, max_dets=min(100, self.max_det))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """COCO mAP@0.5 ("map50") and mAP@0.5:0.95 ("map") by pycocotools, plus map75 and size breakdowns."""
        from ultralytics.utils import ops

        ev = self.evaluator()
        for batch, preds in self.val_predictions(model, device):
            shape = batch["img"].shape[2:]
            for i, p in enumerate(preds):
                boxes = ops.scale_boxes(shape, p["bboxes"].clone().cpu(), batch["ori_shape"][i],
                                        ratio_pad=batch["ratio_pad"][i])
                ev.add(batch["im_file"][i], boxes.numpy(), p["conf"].cpu().numpy(), p["cls"].cpu().numpy())
        return ev.compute()

    def example_input(self, batch_size: int = 1) -> Tensor:
        return torch.zeros(batch_size, 3, self.image_size, self.image_size)
