"""Mask bit-packing (spec §3.6 layout, §6.1 item 7)."""
import pytest
import torch

from sparsekit.prune.masks import pack_masks, unpack_masks

BERT_BASE_SHAPES = {"attention.output.dense": (768, 768), "attention.self.key": (768, 768),
                    "attention.self.query": (768, 768), "attention.self.value": (768, 768),
                    "intermediate.dense": (3072, 768), "output.dense": (768, 3072)}


def test_round_trip_random_masks():
    torch.manual_seed(0)
    masks = {f"m{i}": torch.rand(shape) < 0.3 for i, shape in enumerate([(5, 7), (1, 1), (13, 3), (0, 4)])}
    data, index = pack_masks(masks)
    back = unpack_masks(data, index)
    assert set(back) == set(masks)
    for name in masks:
        assert torch.equal(back[name], masks[name])


def test_bert_base_size_and_sorted_order():
    masks = {f"bert.encoder.layer.{layer}.{suffix}": torch.ones(shape, dtype=torch.bool)
             for layer in range(12) for suffix, shape in BERT_BASE_SHAPES.items()}
    data, index = pack_masks(masks)
    assert index["total_bits"] == 84_934_656
    assert len(data) == 10_616_832
    names = [e["name"] for e in index["order"]]
    assert names[0] == "bert.encoder.layer.0.attention.output.dense"
    assert names.index("bert.encoder.layer.10.attention.output.dense") < names.index(
        "bert.encoder.layer.2.attention.output.dense")


def test_corrupt_data_is_refused():
    data, index = pack_masks({"a": torch.rand(9, 9) < 0.5})
    with pytest.raises(ValueError, match="checksum"):
        unpack_masks(bytes([data[0] ^ 1]) + data[1:], index)
    with pytest.raises(ValueError, match="bytes"):
        unpack_masks(data[:-1], index)
    with pytest.raises(TypeError, match="bool"):
        pack_masks({"a": torch.ones(2, 2)})
