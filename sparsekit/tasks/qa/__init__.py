"""Extractive question answering (SQuAD v1.1 / v2.0): data, windows, post-processing, metric, losses, predict.

Task type name: "question-answering". See each module's docstring; figures on ``squad_resplit`` (the seeded
article split of the SQuAD dev file used for training offline) are not comparable to the official dev set.
"""
from sparsekit.tasks.qa.data import (OFFSET_SLACK, RESPLIT_NOTE, RESPLIT_TRAIN_ARTICLES, Answer, QAData, QAExample,
                                     is_squad_file, load_qa_data, read_squad, squad_resplit)
from sparsekit.tasks.qa.loss import qa_kd_loss, qa_loss
from sparsekit.tasks.qa.metric import exact_match, normalize_answer, squad_metrics, token_f1
from sparsekit.tasks.qa.postprocess import best_answers
from sparsekit.tasks.qa.predict import answer_questions, predict_answers, window_logits
from sparsekit.tasks.qa.windows import QADataset, make_qa_collate

TASK_TYPE = "question-answering"

__all__ = ["TASK_TYPE", "Answer", "QAExample", "QAData", "read_squad", "is_squad_file", "load_qa_data",
           "squad_resplit", "QADataset", "make_qa_collate", "best_answers", "squad_metrics", "normalize_answer",
           "exact_match", "token_f1", "qa_loss", "qa_kd_loss", "answer_questions",
           "predict_answers", "window_logits", "OFFSET_SLACK", "RESPLIT_NOTE",
           "RESPLIT_TRAIN_ARTICLES"]
