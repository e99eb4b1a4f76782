"""Sequence packing: documents joined with separators, cut into full windows, optionally kept
apart by document-masked attention."""

from __future__ import annotations

import re

import pytest
import torch

from strata_workloads.data.synthetic import write_text_dataset
from strata_workloads.train.config import ConfigError, parse_config
from strata_workloads.train.data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    DataInfo,
    document_positions,
    encode,
    load_training_data,
    packed_examples,
    text_examples,
)
from strata_workloads.train.models import make_family
from strata_workloads.train.models.transformer import document_causal_mask


def test_documents_are_joined_with_separators_and_cut_into_full_windows():
    packed = packed_examples(["ab", "cde", "f"], context_length=3)  # 4 + 5 + 3 = 12 tokens: 3 windows of 4
    a, b, c, d, e, f = encode("abcdef")
    assert packed["tokens"].tolist() == [[BOS_ID, a, b, EOS_ID], [BOS_ID, c, d, e], [EOS_ID, BOS_ID, f, EOS_ID]]
    assert packed["mask"].all()
    # The third window starts with the end of "cde", then "f" is a new document.
    assert packed["segments"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]]


def test_the_tail_that_does_not_fill_a_window_is_dropped():
    packed = packed_examples(["abcdef"], context_length=2)  # 8 tokens: 2 windows of 3, 2 left over
    assert packed["tokens"].shape == (2, 3)
    with pytest.raises(ConfigError, match="data.packing: the documents hold 3 tokens, fewer than one window of 9"):
        packed_examples(["a"], context_length=8)


def test_positions_restart_at_every_document():
    segments = torch.tensor([[0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0]])
    assert document_positions(segments).tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]]


def test_document_mask_is_causal_and_block_diagonal():
    mask = document_causal_mask(torch.tensor([[0, 0, 1, 1]]))[0, 0]
    assert mask.tolist() == [[True, False, False, False],
                             [True, True, False, False],
                             [False, False, True, False],
                             [False, False, True, True]]


def _transformer(**data):
    config = parse_config({"model": {"family": "transformer", "numClasses": 0,
                                     "size": {"layers": 2, "hidden": 32, "heads": 2, "contextLength": 24}},
                           "data": {"path": "/unused", **data}})
    family = make_family(config, DataInfo(modality="text", num_classes=0, dataset_name="t", dataset_version="v"))
    torch.manual_seed(0)
    return family, family.build()["model"].eval()


def test_document_attention_makes_a_packed_window_compute_what_each_document_alone_would():
    _, model = _transformer(packing=True, documentAttention=True)
    packed = packed_examples(["a cat sat", "dogs ran far"], context_length=24)  # 11 + 14 tokens
    tokens, segments = packed["tokens"][:, :-1], packed["segments"][:, :-1]
    first = [BOS_ID, *encode("a cat sat"), EOS_ID]
    second = [BOS_ID, *encode("dogs ran far")][: 24 - len(first)]
    with torch.no_grad():
        together = model(tokens, None, segments)[0]
        alone = [model(torch.tensor([ids]))[0] for ids in (first, second)]
    assert torch.allclose(together[: len(first)], alone[0], atol=1e-5)
    assert torch.allclose(together[len(first):], alone[1], atol=1e-5)
    # Without document attention the second document sees the first: different outputs.
    with torch.no_grad():
        crossing = model(tokens)[0]
    assert not torch.allclose(crossing[len(first):], alone[1], atol=1e-3)


def test_packing_removes_padding_from_a_dataset_of_short_documents(tmp_path):
    write_text_dataset(tmp_path / "text", train_rows=64, validation_rows=16)

    def load(**data):
        return load_training_data(parse_config({
            "model": {"family": "transformer", "numClasses": 0, "size": {"contextLength": 63}},
            "data": {"path": str(tmp_path / "text"), **data}}))

    padded, packed = load(), load(packing=True, documentAttention=True)
    real_tokens = int(padded.train.tensors["mask"].sum())
    assert (padded.train.tensors["tokens"] == PAD_ID).float().mean() > 0.4  # ~30-byte sentences in 64 slots
    assert not (packed.train.tensors["tokens"] == PAD_ID).any()
    # Same real tokens, in fewer windows (only the last partial window is dropped).
    assert real_tokens - 64 < packed.train.tensors["tokens"].numel() <= real_tokens
    assert set(packed.train.tensors) == {"tokens", "mask", "segments"}
    assert len(packed.validation) > 0


def test_packing_holds_out_whole_documents_when_the_dataset_has_no_validation_split(tmp_path):
    from strata_workloads.data.layout import write_dataset

    texts = [f"[{i:03d}]" * 3 for i in range(40)]
    write_dataset(tmp_path / "d", name="docs", version="v1", modality="text", num_classes=0, rows_per_shard=100,
                  splits={"train": {"text": texts}})
    data = load_training_data(parse_config({
        "model": {"family": "transformer", "size": {"contextLength": 31}},
        "data": {"path": str(tmp_path / "d"), "packing": True, "validationFraction": 0.25}}))

    def documents(split):
        # Windows are in stream order, so joining them gives back the split's documents.
        stream = bytes(t for t in split.tensors["tokens"].flatten().tolist() if t < 256).decode()
        return {int(n) for n in re.findall(r"\[(\d{3})\]", stream)}

    train, validation = documents(data.train), documents(data.validation)
    assert len(validation) >= 8 and len(train) >= 25
    assert not train & validation  # documents were held out before packing, not windows after


def test_unpacked_examples_are_unchanged():
    # Packing is opt-in: one padded example per document, as before.
    assert text_examples(["ab"], context_length=4)["tokens"].tolist() == [[BOS_ID, 97, 98, EOS_ID, PAD_ID]]
