"""Adapters: one Task per model family, registered by name in `slr_prune.task.TASKS`.

Every task class takes the same keyword arguments (model, dataset, data, batch_size, image_size,
workers, seed; each may ignore what does not apply), so the CLI builds any task the same way.
Importing a task module is cheap: heavy dependencies (ultralytics, ...) load only when its task
is created.
"""

from __future__ import annotations

from ..task import TASKS, Task, create_task, register_task
from . import lane, yolo  # noqa: F401  (register their tasks)
from .base import DatasetTask
from .classification import ClassificationTask
from .loaders import LoaderTask

__all__ = ["Task", "DatasetTask", "ClassificationTask", "LoaderTask", "TASKS", "create_task", "register_task"]
