"""Image classification: torchvision / CIFAR ResNets / the digits CNN on digits, CIFAR-10 or
ImageNet-style folders, with cross-entropy and top-1 accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import classification_datasets
from ..data.imagefolder import Augment
from ..models import MODELS, create_model, list_models
from ..registry import UnknownNameError
from ..task import register_task
from ..utils import model_mode
from .base import DatasetTask

__all__ = ["ClassificationTask"]


@register_task("classification")
class ClassificationTask(DatasetTask):
    """`model` by registry name (see slr_prune.models.list_models), `dataset` digits|cifar10|imagefolder.

    `augment` (imagefolder only; slr_prune.data.AUGMENTS) picks the training augmentation, by
    default "imagenet" from 128 px up and "light" below; the model's input channels are the data's.
    `probe_holdout` > 0 holds that many training examples out of the training batches as SLR's
    probe set (see `DatasetTask.hold_out_probe`).  `num_classes` widens the head beyond the data's
    classes (pretrained weights with 1000 outputs on a folder of 3 classes); default: the data's.
    """

    metric = "accuracy"

    def __init__(self, model: str = "digits_cnn", dataset: str = "digits", data: str | Path | None = None,
                 batch_size: int = 64, eval_batch_size: int = 256, image_size: int | None = None,
                 workers: int = 0, seed: int = 0, augment: Augment | None = None, probe_holdout: int = 0,
                 num_classes: int | None = None):
        for name, value, low in (("batch_size", batch_size, 1), ("eval_batch_size", eval_batch_size, 1),
                                 ("workers", workers, 0), ("image_size", 1 if image_size is None else image_size, 1)):
            if not (isinstance(value, int) and value >= low):
                raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
        self.model_name = model
        self.dataset_name = dataset
        self.train_set, self.val_set, self.info = classification_datasets(dataset, data, image_size, augment)
        if num_classes is not None:  # a head wider than the data's classes, e.g. pretrained ImageNet weights
            if not (isinstance(num_classes, int) and num_classes >= self.info["num_classes"]):
                raise ValueError(f"num_classes must be an integer ≥ the {self.info['num_classes']} classes of the "
                                 f"data, got {num_classes!r}")
            self.info = {**self.info, "num_classes": num_classes}
        self.num_classes = num_classes
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.workers, self.seed = workers, seed
        self.name = f"{model}-{dataset}"
        entry = MODELS.get(model)  # an unknown name: UnknownNameError lists every model
        if entry.traits["task"] != "classification":
            raise UnknownNameError(f"{model!r} is a {entry.traits['task']} model; the classification task builds "
                                   f"{', '.join(list_models(task='classification'))}")
        # Built once and dropped, as every release so far did: it draws from the global random stream, so
        # keeping it keeps seeded runs (the published studies, the demo) reproducible bit for bit.
        create_model(model, 2, 8)
        self.probe_holdout = probe_holdout
        if probe_holdout:
            self.hold_out_probe(probe_holdout, seed)

    def record(self) -> dict[str, Any]:
        wider = {"num_classes": self.num_classes} if self.num_classes is not None else {}
        return {"model": self.model_name, "dataset": self.dataset_name, "image_size": self.info["image_size"],
                "augment": self.info.get("augment"), "probe_holdout": self.probe_holdout, **wider}

    def build_model(self) -> nn.Module:
        return create_model(self.model_name, self.info["num_classes"], self.info["image_size"],
                            self.info["in_channels"])

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))

    def forward(self, model: nn.Module, batch: Any, device: torch.device) -> Tensor:
        return model(batch[0].to(device, non_blocking=True))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        correct = total = 0
        loss = 0.0
        with model_mode(model, train=False):
            for x, y in self.val_loader():
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = model(x)
                loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
                total += len(y)
        return {"accuracy": correct / total, "val_loss": loss / total}

    def example_input(self, batch_size: int = 1) -> Tensor:
        s, c = self.info["image_size"], self.info["in_channels"]
        return torch.randn(batch_size, c, s, s)
