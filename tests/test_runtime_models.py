"""The fused runtime inside Hugging Face models (sparsekit.runtime.models): uncompacted BERT-family, DistilBERT,
DeBERTa and ModernBERT models, their three task heads, structure-keeping artifacts and the configurations it does
not run, against the masked dense model on every ISA path this CPU has."""
from __future__ import annotations

import copy

import pytest
import torch

from sparsekit import kernels
from sparsekit.compiler import compile as sk_compile
from sparsekit.export.heads import QA, SEQUENCE, TOKEN, auto_class, head_output
from sparsekit.kernels import cpu
from sparsekit.runtime import FusedLayers, runtime_of
from sparsekit.runtime.models import padding_mask, unsupported_reason

pytestmark = pytest.mark.skipif(not kernels.available(),
                                reason=f"C++ kernels not built: {kernels.unavailable_reason()}")
ISAS = [pytest.param(i, marks=pytest.mark.skipif(i not in kernels.supported_isas(), reason=f"CPU lacks {i}"))
        for i in ("avx512", "avx2", "scalar")]
PADDINGS = {
    "none": None,
    "right padded": torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] + [0] * 8]),
    "holes": torch.tensor([[1, 0, 1, 1, 0, 1, 1, 1, 1], [1] * 9, [1, 1, 0, 0, 0, 0, 0, 0, 1]]),
}
FUSED_FAMILIES = ("bert", "roberta", "electra", "distilbert", "deberta-v2", "modernbert")


def _tiny(model_type: str, task_type: str = SEQUENCE, act: str | None = None, seed: int = 0, **extra):
    """A random tiny ``model_type`` model with a ``task_type`` head, randomly pruned (rows, a whole head), eval.
    ModernBERT's: 3 layers (global, sliding, sliding attention) with a window of +-2 tokens, so the 9-token inputs
    cross it."""
    from transformers import AutoConfig

    from task_models import prune_randomly

    if model_type == "deberta-v2":  # DeBERTa-v3's attention; 8 buckets: distances >= 4 are log-bucketed
        dims = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"],
                    position_buckets=8, max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm",
                    position_biased_input=False, type_vocab_size=0)
        dims.update({"hidden_act": act} if act else {})
    elif model_type == "modernbert":
        dims = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                    max_position_embeddings=64, local_attention=4, global_attn_every_n_layers=3, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
        dims.update({"hidden_activation": act} if act else {})
    elif model_type == "distilbert":
        dims = dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)
        dims.update({"activation": act} if act else {})
    else:
        dims = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64)
        dims.update({"hidden_act": act} if act else {})
    if model_type in ("roberta", "electra"):
        dims["type_vocab_size"] = 1
    config = AutoConfig.for_model(model_type, vocab_size=60, num_labels=2 if task_type == QA else 3,
                                  **{**dims, **extra})
    torch.manual_seed(seed)
    return prune_randomly(auto_class(task_type).from_config(config), seed=seed)


def _compiled(model, tokens: int = 8, **kwargs):
    """``sparsekit.compile`` of ``model`` in place with a short timing; returns the report and a copy of the model
    taken before (the masked dense reference)."""
    reference = copy.deepcopy(model)
    return sk_compile(model, tokens=tokens, repeats=2, warmup=1, verbose=False, **kwargs), reference


def _inputs(padding: str):
    mask = PADDINGS[padding]
    ids = torch.randint(5, 55, (3, 9), generator=torch.Generator().manual_seed(4))
    return {"input_ids": ids} if mask is None else {"input_ids": ids, "attention_mask": mask}


def _check(model, reference, padding: str, task_type: str = SEQUENCE) -> None:
    """``model`` and ``reference`` agree (``_compare``) on the inputs of ``padding``."""
    inputs = _inputs(padding)
    with torch.no_grad():
        _compare(model(**inputs), reference(**inputs), task_type, inputs.get("attention_mask"))


def _compare(got, want, task_type: str, mask) -> None:
    got, want = head_output(got, task_type), head_output(want, task_type)
    if task_type != SEQUENCE and mask is not None:  # per-token heads: padding positions are never computed
        got, want = got[mask.bool()], want[mask.bool()]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("model_type", FUSED_FAMILIES)
@pytest.mark.parametrize("padding", list(PADDINGS))
def test_hugging_face_model_fused_matches_masked_dense(model_type, padding, isa):
    model = _tiny(model_type)
    keys = list(model.state_dict())
    report, reference = _compiled(model, tokens=16)
    assert report.runtime == "fused", report.runtime_why
    assert len(report.layers) == model.config.num_hidden_layers * 4  # qkv, attn_out, ffn_in, ffn_out per layer
    assert list(model.state_dict()) == keys  # the layers are still there, under the same names
    inputs = _inputs(padding)
    if model_type in ("modernbert", "deberta-v2") and padding == "holes":  # windows / relative distances count
        # positions, packing counts real tokens
        with torch.no_grad(), pytest.raises(ValueError, match="holes"):
            model(**inputs)
        return
    with torch.no_grad(), cpu.force_isa(isa):
        _compare(model(**inputs), reference(**inputs), SEQUENCE, inputs.get("attention_mask"))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "deberta-v2", "modernbert"])
@pytest.mark.parametrize("task_type", [TOKEN, QA])
def test_per_token_heads_fused(model_type, task_type):
    model = _tiny(model_type, task_type)
    report, reference = _compiled(model, tokens=16)
    assert report.runtime == "fused"
    _check(model, reference, "right padded", task_type)


@pytest.mark.parametrize("backend", ["dense", "csr-cpu", "bsr-cpu"])
@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_forced_backends_and_activations(backend, act):
    model = _tiny("distilbert" if act == "relu" else "bert", act=act)
    report, reference = _compiled(model, force=backend)
    assert report.runtime == "fused" and {c.backend for c in report.layers} == {backend}
    _check(model, reference, "holes")


def test_one_token_and_inputs_embeds():
    model = _tiny("bert")
    _, reference = _compiled(model)
    ids = torch.tensor([[7]])
    embeds = reference.bert.embeddings.word_embeddings(torch.randint(5, 55, (2, 5)))
    with torch.no_grad():
        _compare(model(input_ids=ids), reference(input_ids=ids), SEQUENCE, None)
        _compare(model(inputs_embeds=embeds), reference(inputs_embeds=embeds), SEQUENCE, None)


def test_save_pretrained_of_a_fused_model_round_trips(tmp_path):
    model = _tiny("bert")
    _, reference = _compiled(model)
    model.save_pretrained(tmp_path / "saved")
    reloaded = auto_class(SEQUENCE).from_pretrained(str(tmp_path / "saved")).eval()
    inputs = _inputs("right padded")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, reference(**inputs).logits, rtol=0, atol=1e-6)


def test_recompile_and_unfused_restore_the_modules():
    model = _tiny("bert")
    _, reference = _compiled(model)
    first = runtime_of(model)
    sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False, force="csr-cpu")
    assert runtime_of(model) is not first and isinstance(model.bert.encoder, FusedLayers)
    report = sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False, fused=False, force="csr-cpu")
    assert report.runtime == "modules" and runtime_of(model) is None
    assert type(model.bert.encoder).__name__ == "BertEncoder"
    _check(model, reference, "right padded")
    # Its Linears are now backend modules: the fused runtime says why it cannot take the model.
    assert "already compiled per module" in unsupported_reason(model)


@pytest.mark.parametrize("model_type", ["distilbert", "modernbert"])
def test_fused_model_is_inference_only(model_type):
    model = _tiny(model_type)
    sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False)
    model.train()
    with pytest.raises(RuntimeError, match="inference-only"):
        model(**_inputs("none"))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "deberta-v2", "modernbert"])
def test_per_layer_outputs_are_refused_not_left_empty(model_type):
    model = _tiny(model_type)
    sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False)
    inputs = _inputs("none")
    with torch.no_grad():
        for asked in ("output_hidden_states", "output_attentions"):
            with pytest.raises(RuntimeError, match=f"{asked}.*fused=False"):
                model(**inputs, **{asked: True})
        model.config.output_hidden_states = True
        with pytest.raises(RuntimeError, match="output_hidden_states"):
            model(**inputs)


def test_left_padding_warns_for_a_sequence_classifier():
    model = _tiny("bert")
    sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False)
    with pytest.warns(RuntimeWarning, match="left-padded"), torch.no_grad():
        model(input_ids=torch.randint(5, 55, (2, 4)), attention_mask=torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]))


def test_modernbert_left_padding_positions_and_biases():
    """Left padding (Hugging Face's positions count from the padded start: the packed tokens get the same), given
    position_ids, biases in every Linear and LayerNorm, every layer global (holes are then fine)."""
    model = _tiny("modernbert", TOKEN, attention_bias=True, mlp_bias=True, norm_bias=True)
    _, reference = _compiled(model)
    ids = _inputs("none")["input_ids"]
    left = torch.tensor([[1] * 9, [0] * 3 + [1] * 6, [0] * 8 + [1]])
    with torch.no_grad():
        _compare(model(input_ids=ids, attention_mask=left), reference(input_ids=ids, attention_mask=left), TOKEN,
                 left)
        shifted = {"input_ids": ids, "position_ids": torch.arange(9)[None] + 5}
        _compare(model(**shifted), reference(**shifted), TOKEN, None)
    every_layer_global = _tiny("modernbert", global_attn_every_n_layers=1)
    _, reference = _compiled(every_layer_global)
    _check(every_layer_global, reference, "holes")


def test_modernbert_unfused_restores_its_forward():
    model = _tiny("modernbert")
    _, reference = _compiled(model)
    assert runtime_of(model) is not None and "forward" in model.model.__dict__
    report = sk_compile(model, tokens=8, repeats=2, warmup=1, verbose=False, fused=False, force="csr-cpu")
    assert report.runtime == "modules" and runtime_of(model) is None and "forward" not in model.model.__dict__
    _check(model, reference, "right padded")


@pytest.mark.parametrize("variant", [dict(share_att_key=False), dict(pos_att_type=["c2p"]),
                                     dict(pos_att_type=["p2c"], position_buckets=-1),
                                     dict(relative_attention=False, position_biased_input=True)])
def test_deberta_attention_variants(variant):
    """Separate position projections, one relative term only, no buckets, no relative attention at all; left
    padding (distances are the same once packed)."""
    model = _tiny("deberta-v2", TOKEN, **variant)
    report, reference = _compiled(model)
    assert report.runtime == "fused"
    ids = _inputs("none")["input_ids"]
    for mask in (None, torch.tensor([[1] * 9, [0] * 3 + [1] * 6, [1] * 2 + [0] * 7])):
        with torch.no_grad():
            _compare(model(input_ids=ids, attention_mask=mask), reference(input_ids=ids, attention_mask=mask), TOKEN,
                     mask)


@pytest.mark.parametrize("variant,why", [(dict(conv_kernel_size=3), "convolution")])
def test_configurations_the_runtime_does_not_run_keep_their_modules_and_say_why(variant, why):
    model = _tiny("deberta-v2", **variant)
    report, reference = _compiled(model)
    assert report.runtime == "modules" and why in report.runtime_why
    _check(model, reference, "right padded")


def test_models_the_runtime_cannot_take_say_why():
    model = _tiny("bert")
    assert "float32" in unsupported_reason(copy.deepcopy(model).double())
    decoder = copy.deepcopy(model)
    decoder.config.is_decoder = True
    assert "decoder" in unsupported_reason(decoder)
    assert "neither" in unsupported_reason(torch.nn.Linear(2, 2))


def test_padding_mask_of_the_masks_hugging_face_builds():
    key = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    four_d = key[:, None, None, :].expand(2, 1, 3, 3)
    assert torch.equal(padding_mask(four_d, (2, 3)), key)
    additive = torch.zeros(2, 1, 3, 3).masked_fill(~four_d, torch.finfo(torch.float32).min)
    assert torch.equal(padding_mask(additive, (2, 3)), key)
    assert padding_mask(None, (2, 3)) is None
    causal = torch.ones(3, 3).tril().bool()[None, None].expand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="padding masks only"):
        padding_mask(causal, (2, 3))
    with pytest.raises(ValueError, match="padding masks only"):
        padding_mask(torch.randn(2, 1, 3, 3), (2, 3))
    with pytest.raises(ValueError, match="expected"):
        padding_mask(key, (2, 4))


@pytest.mark.parametrize("model_type", ["distilbert", "deberta-v2", "modernbert"])
def test_structure_keeping_artifact_runs_fused_with_its_plan(tmp_path, model_type):
    """DistilBERT, DeBERTa and ModernBERT artifacts keep their module tree (FormatLinear matrices): compile fuses
    it, the plan is saved into the artifact and reused by load + compile without timing."""
    from sparsekit.export.artifact import export, load
    from sparsekit.models import load_tokenizer
    from sparsekit.runtime.plan import save_plan

    from conftest import make_tiny_model_dir

    tokenizer = load_tokenizer(make_tiny_model_dir(tmp_path / "tok"))
    model = _tiny(model_type)
    model.resize_token_embeddings(len(tokenizer))
    export((model, tokenizer), tmp_path / "art")
    loaded = load(tmp_path / "art")
    report = sk_compile(loaded, tokens=8, repeats=2, warmup=1, verbose=False)
    assert report.runtime == "fused"
    save_plan(report, tmp_path / "art")
    again = load(tmp_path / "art")
    assert again.compile_plan is not None
    reused = sk_compile(again, tokens=8, verbose=False)
    assert "saved plan" in reused.runtime_why
    _check(again, model, "right padded")


@pytest.mark.parametrize("model_type", ["bert", "deberta-v2", "modernbert"])
def test_int8_precision_on_a_hugging_face_model(model_type):
    from sparsekit.architectures import architecture_for

    model = _tiny(model_type)
    arch = architecture_for(model.config)
    with torch.no_grad():  # 1x4-block sparsity, the int8 kernel's layout
        gen = torch.Generator().manual_seed(2)
        for module in (m for layer in arch.layer_modules(model.base_model) for m in layer.modules()):
            if isinstance(module, torch.nn.Linear):
                out, inp = module.weight.shape
                keep = (torch.rand(out, inp // 4, generator=gen) < 0.3).repeat_interleave(4, dim=1)
                module.weight.mul_(keep)
    report, reference = _compiled(model, precision="int8", force="int8-b4-cpu")
    assert report.runtime == "fused" and {c.backend for c in report.layers} == {"int8-b4-cpu"}
    inputs = _inputs("right padded")
    with torch.no_grad():
        got, want = model(**inputs).logits, reference(**inputs).logits
    assert (got - want).abs().max() < 0.1 * want.abs().max() + 1e-3  # quantised: close, not exact


@pytest.mark.parametrize("model_type", ["bert", "deberta-v2", "modernbert"])
def test_torch_compile_over_a_fused_hugging_face_model(model_type):
    model = _tiny(model_type)
    _, reference = _compiled(model)
    inputs = _inputs("right padded")
    with torch.no_grad():
        _compare(torch.compile(model)(**inputs), reference(**inputs), SEQUENCE, None)


@pytest.mark.parametrize("model_type", ["modernbert", "deberta-v2"])
@pytest.mark.parametrize("sparse_slower", [True, False])
def test_whole_encoder_check_runs_rotary_and_relative_encoders(model_type, sparse_slower, monkeypatch):
    """The whole-encoder check times ModernBERT's and DeBERTa's fused encoders for real, on stand-in rotary tables /
    relative indices; whichever plan it keeps, the model still equals its masked dense reference."""
    import sparsekit.compiler as compiler

    model = _tiny(model_type)
    monkeypatch.setattr(compiler, "_time", lambda built, *a: {n: 1.0 if n == "csr-cpu" else 10.0 for n in built})
    timed = compiler._time_encoders
    seen = []

    def spy(encoders, x, cu, rope, rel_index, warmup, repeats):
        ms = timed(encoders, x, cu, rope, rel_index, warmup, repeats)  # really runs both encoders
        assert set(ms) == {"plan", "dense"} and min(ms.values()) > 0
        seen.append((len(rope) > 0, rel_index is not None))
        return {"plan": 2.0, "dense": 1.0} if sparse_slower else {"plan": 1.0, "dense": 2.0}

    monkeypatch.setattr(compiler, "_time_encoders", spy)
    report, reference = _compiled(model, tokens=12)
    assert seen == [(model_type == "modernbert", model_type != "modernbert")]
    assert {c.backend for c in report.layers} == ({"dense"} if sparse_slower else {"csr-cpu"})
    _check(model, reference, "right padded")
