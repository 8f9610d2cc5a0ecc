"""The task-type settings of a run (``--task-type`` and the options of token classification and question
answering); PruneConfig inherits them as flat fields. ``None`` means the task type's default.

Imported by prune/config.py only (it imports sparsekit.prune, so task-type modules must not import it).
"""
from __future__ import annotations

from dataclasses import dataclass

from sparsekit.models import TASK_MODEL_CLASSES
from sparsekit.prune.options import DATA, option
from sparsekit.prune.options import TASK_TYPES as TASKS_PANEL

#: The task type names (their home: models.TASK_MODEL_CLASSES, each type's Hugging Face head).
TASK_TYPE_CHOICES = tuple(TASK_MODEL_CLASSES)
TAG_SCHEMES = ("auto", "iob1", "iob2")


@dataclass
class TaskOptions:
    """Which task type a run trains and the options of the token-classification and question-answering types."""

    task_type: str | None = option(None, "sequence-classification (one label per text), token-classification "
                                         "(NER: one tag per word) or question-answering (extractive, SQuAD) "
                                         "[the --task's type; sequence-classification for your own data].",
                                   panel=DATA, choices=TASK_TYPE_CHOICES)
    tokens_column: str | None = option(None, "token-classification: the column of word lists [tokens].",
                                       panel=TASKS_PANEL)
    tags_column: str | None = option(None, "token-classification: the column of tag lists, names or ids "
                                           "[ner_tags].", panel=TASKS_PANEL)
    tag_scheme: str | None = option(None, "token-classification: the tags' scheme; IOB1 is converted to IOB2 "
                                          "[auto: detected].", panel=TASKS_PANEL, choices=TAG_SCHEMES)
    tag_column: int | None = option(None, "token-classification, CoNLL files: the tag's column, from 0; negative "
                                          "counts from the end [-1: the last].", panel=TASKS_PANEL)
    label_names: str | None = option(None, "token-classification: the tag names in id order, comma-separated, for "
                                           "tags written as integer ids without names (O,B-PER,I-PER,...).",
                                     panel=TASKS_PANEL)
    question_column: str | None = option(None, "question-answering: the question column [question].",
                                         panel=TASKS_PANEL)
    context_column: str | None = option(None, "question-answering: the context column [context].",
                                        panel=TASKS_PANEL)
    answers_column: str | None = option(None, "question-answering: the answers column ({text: [...], "
                                              "answer_start: [...]}) [answers].", panel=TASKS_PANEL)
    doc_stride: int | None = option(None, "question-answering: tokens shared by consecutive windows of a long "
                                          "context [128 at --max-length 384, the standard SQuAD setting; less "
                                          "in shorter windows].", panel=TASKS_PANEL)
    max_answer_length: int | None = option(None, "question-answering: longest answer predicted, in tokens [30].",
                                           panel=TASKS_PANEL)
    n_best: int | None = option(None, "question-answering: start / end candidates per window in "
                                      "post-processing [20].", panel=TASKS_PANEL)
    version_2_with_negative: bool | None = option(None, "question-answering: SQuAD v2.0 (questions may have no "
                                                        "answer) [detected from the data].",
                                                  panel=TASKS_PANEL, flags=("--version-2-with-negative",))
    null_threshold: float | None = option(None, "question-answering v2: predict no answer when its score beats "
                                                "the best span's by more than this [0.0].", panel=TASKS_PANEL)

    def check_task_options(self) -> None:
        """Raise ValueError for task-type settings that cannot work."""
        for name in ("doc_stride", "max_answer_length", "n_best"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 when given, got {value}")
