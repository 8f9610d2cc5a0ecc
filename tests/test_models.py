"""Model sources: the environment is the caller's, hub ids go through the Hugging Face cache, random names."""
import os
import subprocess
import sys

import pytest

from sparsekit.errors import ModelError
from sparsekit.models import RANDOM_ALIASES, random_config, random_model_names, resolve_model_source


def _python(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    return subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True, timeout=300)


def test_import_leaves_the_environment_unchanged():
    code = ("import os; before = dict(os.environ)\n"
            "import sparsekit, sparsekit.models, sparsekit.cli, sparsekit.sources, sparsekit.export.artifact\n"
            "changed = {k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)}\n"
            "assert not changed, changed\n"
            "print('unchanged')")
    result = _python(code)
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr


def test_hub_id_offline_with_an_empty_cache_gives_the_clear_error(tmp_path):
    code = ("from sparsekit.models import resolve_model_source\n"
            "resolve_model_source('bert-base-uncased')")
    result = _python(code, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"))
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "ModelError" in message and "HF_HUB_OFFLINE" in message and str(tmp_path / "empty-cache") in message
    assert "not in the Hugging Face cache" in message


def test_hub_id_in_the_cache_resolves_offline(tmp_path, tiny_model_dir):
    """A hub id whose files are in the cache (laid out as the hub client writes them) resolves offline."""
    snapshot = tmp_path / "cache" / "models--someone--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in tiny_model_dir.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "cache" / "models--someone--tiny-bert" / "refs").mkdir()
    (tmp_path / "cache" / "models--someone--tiny-bert" / "refs" / "main").write_text("0" * 40)
    code = ("from sparsekit.models import resolve_model_source, load_classifier, load_tokenizer\n"
            "src = resolve_model_source('someone/tiny-bert')\n"
            "model = load_classifier(src, 3); load_tokenizer(src)\n"
            "print(src, model.config.model_type, model.num_labels)")
    result = _python(code, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["someone/tiny-bert", "bert", "3"]


def test_random_names():
    assert random_config("tiny").model_type == "bert" and random_config("tiny").hidden_size == 64
    assert random_config("bert-base").num_hidden_layers == 12
    assert random_config("minilm-shape").hidden_size == 384
    assert random_config("distilbert-tiny").model_type == "distilbert"
    assert random_config("modernbert").num_hidden_layers == 22
    assert random_config("deberta-v2-tiny").relative_attention
    assert set(RANDOM_ALIASES) <= set(random_model_names())
    for name in random_model_names():
        assert resolve_model_source(f"random:{name}") == f"random:{name}"
    with pytest.raises(ModelError, match="unknown random model shape"):
        random_config("distilbert-huge")


def test_head_parameters_are_everything_outside_the_encoder():
    from sparsekit.models import head_parameter_names, load_classifier

    heads = {name: {n.rsplit(".", 1)[0] for n in head_parameter_names(load_classifier(f"random:{name}", 2))}
             for name in ("tiny", "distilbert-tiny", "deberta-v2-tiny", "modernbert-tiny")}
    assert heads == {"tiny": {"classifier"}, "distilbert-tiny": {"pre_classifier", "classifier"},
                     "deberta-v2-tiny": {"pooler.dense", "classifier"},
                     "modernbert-tiny": {"head.dense", "head.norm", "classifier"}}
