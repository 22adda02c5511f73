"""The task registry: one line per task family. Importing it does not import torch."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

from taskhead.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from taskhead.tasks.base import TaskBase

# name -> "module:class"; the class subclasses tasks.base.TaskBase (the Task protocol, its traits, hooks).
REGISTRY: dict[str, str] = {
    "classification": "taskhead.tasks.classification:ClassificationTask",
    "token-classification": "taskhead.tasks.token_classification:TokenClassificationTask",
    "question-answering": "taskhead.tasks.question_answering:QuestionAnsweringTask",
    "generation": "taskhead.tasks.generation:GenerationTask",
    "embedding": "taskhead.tasks.embedding:EmbeddingTask",
    "language-modeling": "taskhead.tasks.language_modeling:LanguageModelingTask",
}


def registered() -> list[str]:
    return sorted(REGISTRY)


def task_class(name: str) -> type[TaskBase]:
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), REGISTRY, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown task {name!r} (registered: {', '.join(registered())}{hint})")
    module_name, _, class_name = REGISTRY[name].partition(":")
    cls: type[TaskBase] = getattr(importlib.import_module(module_name), class_name)
    return cls


def task_options_model(name: str) -> type[BaseModel]:
    return task_class(name).Options


def build_task(options: Any, **state: Any) -> TaskBase:
    """Instantiate the task for validated options (``RunConfig.task``) and optional saved state."""
    return task_class(options.name)(options, **state)
