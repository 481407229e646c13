"""Adapters: one Task per model family."""

from .base import Task
from .classification import ClassificationTask

__all__ = ["Task", "ClassificationTask"]
