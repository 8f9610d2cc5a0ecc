"""Task types: what differs between sentence classification, token classification (NER) and extractive question
answering in training, evaluation and the run record (base.py: the TaskType hooks).

``TASK_TYPES`` maps each type's name to its TaskType object; ``get_task_type(name)`` looks one up. The NER and QA
building blocks (reading data, datasets, losses, metrics, post-processing, prediction) live in ``tasks/ner/`` and
``tasks/qa/``; ``token.py`` and ``question_answering.py`` plug them into the hooks.
"""
from __future__ import annotations

from sparsekit.tasks.base import TaskData, TaskType
from sparsekit.tasks.sequence import SequenceClassification

DEFAULT_TASK_TYPE = SequenceClassification.name


def _task_types() -> dict[str, TaskType]:
    from sparsekit.tasks.question_answering import QuestionAnswering
    from sparsekit.tasks.token import TokenClassification

    return {t.name: t for t in (SequenceClassification(), TokenClassification(), QuestionAnswering())}


#: Every task type by name: "sequence-classification", "token-classification", "question-answering".
TASK_TYPES: dict[str, TaskType] = _task_types()
TASK_TYPE_NAMES = tuple(TASK_TYPES)


def get_task_type(name: str | None) -> TaskType:
    """The TaskType called ``name`` (None: sequence classification); ValueError naming the known ones."""
    if name is None:
        return TASK_TYPES[DEFAULT_TASK_TYPE]
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task type {name!r}; choose one of {', '.join(TASK_TYPES)}")
    return TASK_TYPES[name]


__all__ = ["DEFAULT_TASK_TYPE", "TASK_TYPES", "TASK_TYPE_NAMES", "TaskData", "TaskType", "get_task_type"]
