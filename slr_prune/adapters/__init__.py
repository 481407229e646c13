"""Adapters: one Task per model family, created by name through a lazy registry.

Every task class takes the same keyword arguments (model, dataset, data, batch_size, image_size,
workers, seed; each may ignore what does not apply), so the CLI builds any task the same way.
Heavy dependencies (ultralytics, ...) load only when their task is created.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import DatasetTask, Task
from .classification import ClassificationTask

__all__ = ["Task", "DatasetTask", "ClassificationTask", "TASKS", "create_task"]

# task name → "module:Class", imported on first use
TASKS: dict[str, str] = {
    "classification": "slr_prune.adapters.classification:ClassificationTask",
    "yolo": "slr_prune.adapters.yolo:YoloTask",
    "lane": "slr_prune.adapters.lane:LaneTask",
}


def create_task(name: str, **options: Any) -> Task:
    """Build the task registered as `name` with the common keyword arguments."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
