"""The model-structure table, sources, the input builder and the error formatter."""
import json

import pytest
import torch

from sparsekit.architectures import BERT, COMPACT, MATRIX_TYPES, architecture_for, encoder_linears, match_name
from sparsekit.data.inputs import build_inputs, random_inputs
from sparsekit.errors import ModelError, SparsekitError, format_error
from sparsekit.export.compact import compact
from sparsekit.models import load_classifier, load_tokenizer
from sparsekit.sources import ARTIFACT, CHECKPOINT, RANDOM, RUN, directory_kind, kind_of


def test_encoder_linears_of_hugging_face_and_compacted_models():
    model = load_classifier("random:tiny", 2).eval()
    found = encoder_linears(model)
    assert [(layer, kind) for _, layer, kind, _ in found] == [(i, t) for i in range(2) for t in MATRIX_TYPES]
    assert all(model.get_submodule(name) is module for name, _, _, module in found)
    compacted, _ = compact(model)
    assert [(name, layer, kind) for name, layer, kind, _ in encoder_linears(compacted)][:2] == [
        ("layers.0.attention.query", 0, "query"), ("layers.0.attention.key", 0, "key")]
    assert len(encoder_linears(compacted)) == 12
    assert encoder_linears(model, (COMPACT,)) == []


def test_match_name_and_geometry():
    assert match_name("bert.encoder.layer.3.attention.output.dense") == (3, "attn_out")
    assert match_name("bert.encoder.layer.3.output.dense") == (3, "ffn_out")
    assert match_name("bert.encoder.layer.3.output.LayerNorm") is None
    assert match_name("layers.1.ffn_in") is None and match_name("layers.1.ffn_in", (COMPACT,)) == (1, "ffn_in")
    config = load_classifier("random:tiny", 2).config
    assert architecture_for(config) is BERT and BERT.heads(config) == 4 and BERT.head_dim(config) == 16
    config.model_type = "gpt2"
    with pytest.raises(ModelError, match="not supported"):
        architecture_for(config)


def test_kind_of_every_source(tmp_path):
    assert kind_of("random:tiny") == RANDOM and kind_of("minilm") == CHECKPOINT
    for kind, marker in ((ARTIFACT, "manifest.json"), (RUN, "recipe.json"), (CHECKPOINT, "config.json")):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / marker).write_text(json.dumps({}))
        assert kind_of(tmp_path / kind) == kind == directory_kind(tmp_path / kind)
    (tmp_path / "empty").mkdir()
    assert directory_kind(tmp_path / "empty") is None
    with pytest.raises(ModelError, match="neither"):
        kind_of(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kind_of(tmp_path / "missing")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        kind_of("sparsekit-tests/no-such-model")


def test_build_inputs_singles_pairs_and_errors():
    tokenizer = load_tokenizer("random:tiny")
    single = build_inputs(tokenizer, ["a film", "a very long film indeed"], max_length=4)
    assert single["input_ids"].shape == (2, 4) and single["attention_mask"][0].tolist() == [1, 1, 1, 1]
    pair = build_inputs(tokenizer, [("a film", "good")])
    assert pair["token_type_ids"][0].tolist().count(1) == 2  # "good [SEP]"
    with pytest.raises(ValueError, match="mix"):
        build_inputs(tokenizer, ["a", ("b", "c")])
    with pytest.raises(TypeError, match="string"):
        build_inputs(tokenizer, [3])
    x = random_inputs(2, 8, 20000, seed=1)
    assert torch.equal(x["input_ids"], torch.randint(1000, 20000, (2, 8), generator=torch.Generator().manual_seed(1)))


def test_format_error():
    assert issubclass(ModelError, SparsekitError) and issubclass(ModelError, ValueError)
    assert format_error(ValueError("bad\nsecond line")) == "bad\nsecond line"
    assert format_error(RuntimeError("boom"), with_type=True) == "RuntimeError: boom"
    assert format_error(RuntimeError(""), with_type=True) == "RuntimeError"
    assert format_error(KeyError("x" * 500), with_type=True, first_line=True, max_chars=20) == "KeyError: 'xxxxxx..."


def test_inputs_never_exceed_the_position_embeddings(tmp_path):
    """RoBERTa's positions start after the padding id: 128 positions hold 126 tokens, and Predictor truncates
    to that instead of failing in the forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sparsekit.architectures import max_input_tokens
    from sparsekit.export.predict import Predictor
    from tests.conftest import make_tiny_model_dir

    path = make_tiny_model_dir(tmp_path / "roberta", model_type="roberta")
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    assert max_input_tokens(model.config) == model.config.max_position_embeddings - model.config.pad_token_id - 1
    predictor = Predictor(model, AutoTokenizer.from_pretrained(str(path)), max_length=512)
    assert predictor.max_length == max_input_tokens(model.config)
    [prediction] = predictor.predict(["the film " * 300])
    assert prediction.label in (model.config.id2label[0], model.config.id2label[1])
