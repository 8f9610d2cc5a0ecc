"""Token classification (NER): CoNLL / table data, word-aligned encoding, strict IOB2 entity metric, losses and
entity prediction. See each module's docstring; the names below are the package's public API."""
from sparsekit.tasks.ner.data import DataWarning, TokenData, TokenExample, load_token_data, read_conll
from sparsekit.tasks.ner.encode import TokenCollator, TokenDataset, make_token_collate, word_predictions
from sparsekit.tasks.ner.evaluate import dataset_logits, evaluate_entities
from sparsekit.tasks.ner.loss import token_kd_loss, token_loss
from sparsekit.tasks.ner.metric import entity_metrics
from sparsekit.tasks.ner.predict import predict_entities
from sparsekit.tasks.ner.tags import iob1_to_iob2, strict_entities

__all__ = ["DataWarning", "TokenCollator", "TokenData", "TokenDataset", "TokenExample", "dataset_logits",
           "entity_metrics", "evaluate_entities", "iob1_to_iob2", "load_token_data", "make_token_collate",
           "predict_entities", "read_conll", "strict_entities", "token_kd_loss", "token_loss", "word_predictions"]
